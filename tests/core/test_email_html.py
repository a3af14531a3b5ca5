"""Compile-time HTML passes: CSS inlining, the open pixel, image and link lists."""

from __future__ import annotations

from engine.core.email_html import add_open_pixel, external_images, html_links, inline_css

PAGE = """<html><head><style>
p { color: red }
@media (max-width: 600px) { td { width: 100% } }
</style></head><body><table>{for item in items}<tr><td>
<p>Hi {name} &amp; co</p>
<a href="https://shop.example.com/?a=1&amp;b={item.id}">Buy</a>
<a href="{unsubscribe}">Unsubscribe</a> <a href="mailto:help@example.com">Help</a>
<a href="#top">Top</a> <a href="https://shop.example.com/?a=1&amp;b={item.id}">Again</a>
<img src="https://cdn.other.com/a.png"><img src="https://t.example.com/g/logo.png">
<img src="cid:logo"><img src="data:image/gif;base64,R0lGOD"><img src="//cdn.other.com/b.png">
<img src="images/rel.png"><img src="{gallery}/x.png">
</td></tr>{end}</table></body></html>"""


def test_inline_css_keeps_media_queries_and_template_tags() -> None:
    out = inline_css(PAGE)
    assert '<p style="color: red;">Hi {name} &amp; co</p>' in out
    assert "@media (max-width: 600px)" in out and "p { color: red }" not in out
    # a tag between table rows stays between them (an HTML parser would hoist it out)
    assert out.index("<table>") < out.index("{for item in items}") < out.index("<tr>")
    assert out.index("</tr>") < out.index("{end}") < out.index("</table>")
    assert 'href="{unsubscribe}"' in out and "{item.id}" in out
    assert "herald-tag" not in out


def test_inline_css_on_a_fragment() -> None:
    out = inline_css("<style>b { color: blue }</style><b>x</b>")
    assert '<b style="color: blue;">x</b>' in out


def test_open_pixel() -> None:
    pixel = '<img src="{open_pixel}" width="1" height="1" alt="" style="display:none">'
    assert add_open_pixel("<html><body>x</BODY ></html>", "{open_pixel}") == (
        f"<html><body>x{pixel}</BODY ></html>"
    )
    assert add_open_pixel("<p>x</p>", "{open_pixel}") == f"<p>x</p>{pixel}"
    assert 'src="https://t.ex/o?a=1&amp;b=2"' in add_open_pixel("x", "https://t.ex/o?a=1&b=2")


def test_external_images() -> None:
    assert external_images(PAGE, ["t.example.com"]) == [
        "https://cdn.other.com/a.png",
        "//cdn.other.com/b.png",
    ]
    assert external_images(PAGE, ["T.example.com", "cdn.other.com"]) == []


def test_html_links() -> None:
    assert html_links(PAGE) == ["https://shop.example.com/?a=1&b={item.id}"]
    assert html_links('<a href=" HTTP://X.COM/a ">x</a><area href="https://y.com">') == [
        "HTTP://X.COM/a",
        "https://y.com",
    ]

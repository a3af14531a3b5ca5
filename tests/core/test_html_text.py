"""html_to_text: the text version a reader of the HTML would expect."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.core.html_text import html_to_text


@pytest.mark.parametrize(
    ("html", "text"),
    [
        ("<p>One</p><p>Two</p>", "One\n\nTwo"),
        ("<div>One</div><div>Two</div>", "One\nTwo"),
        ("<h1>Title</h1>Body", "Title\n\nBody"),
        ("a<br>b<br/><br>c", "a\nb\n\nc"),
        ('<a href="https://e.com/x?a=1&amp;b=2">Shop</a>', "Shop (https://e.com/x?a=1&b=2)"),
        ('<a href="https://e.com">https://e.com</a>', "https://e.com"),
        ('<a href="https://e.com"><img src="x.png"></a>', "https://e.com"),
        ('<a href="{unsubscribe}">Unsubscribe</a>', "Unsubscribe ({unsubscribe})"),
        ('<a href="#top">Top</a> <a href="javascript:x()">Run</a>', "Top Run"),
        ('<a href="mailto:a@b.com">a@b.com</a>', "a@b.com"),
        ("<ul><li>One</li><li>Two</li></ul>", "- One\n- Two"),
        ("<ol><li>One<li>Two</ol>", "1. One\n2. Two"),
        ("<ul><li>A<ul><li>B</li></ul></li></ul>", "- A\n  - B"),
        ("<head><title>T</title><style>p{}</style></head><body>Hi</body>", "Hi"),
        ("<script>alert(1)</script>Hi<style>.x{}</style>", "Hi"),
        ("  lots   of \n\n  space  ", "lots of space"),
        ("Fish&nbsp;&amp;&nbsp;chips &lt;3 &#x1F389;", "Fish & chips <3 🎉"),
        ("Preview&zwnj;&nbsp;&zwnj;&nbsp;text", "Preview text"),
        ("<p>x</p><pre>  a  b\n   c</pre>", "x\n\n  a  b\n   c"),
        ("<table><tr><td>A</td><td>B</td></tr><tr><td>C</td></tr></table>", "A B\nC"),
        ('x<img src="logo.png" alt="Logo">y<img src="p.gif" alt="">', "xLogoy"),
        ("<p>a</p><hr><p>b</p>", "a\n\n--------------------\n\nb"),
        ("<p>Hello, {name}!</p>", "Hello, {name}!"),
        ("", ""),
    ],
)
def test_html_to_text(html: str, text: str) -> None:
    assert html_to_text(html) == text


def test_newsletter() -> None:
    html = """<!doctype html><html><head><meta charset="utf-8"><title>News</title>
    <style>@media (max-width:600px) { td { width:100% } }</style></head>
    <body><table><tr><td><h2>Spring sale</h2>
    <p>Dear {name},<br>everything is <b>50%</b> off.</p>
    <p><a href="https://shop.example.com/sale">See the sale</a></p>
    </td></tr></table>
    <p style="font-size:11px">You got this because you subscribed.
    <a href="{unsubscribe}">Unsubscribe</a></p></body></html>"""
    assert html_to_text(html) == (
        "Spring sale\n\nDear {name},\neverything is 50% off.\n\n"
        "See the sale (https://shop.example.com/sale)\n\n"
        "You got this because you subscribed. Unsubscribe ({unsubscribe})"
    )


_HTML_BITS = [*"<>/ab p li ul a pre href=\"'&;#\n", "é", "🎉"]


@given(st.text(alphabet=st.sampled_from(_HTML_BITS)))
def test_never_raises(html: str) -> None:
    text = html_to_text(html)
    assert "\n\n\n" not in text and text == text.strip("\n")
    assert not any(c in text for c in "\x01\x02\x03\x05")

"""An email's templates and messages on the per-message path: what the prepare stage makes
of one audience row, and what a sender's Composer writes from it."""

from __future__ import annotations

import email
import email.policy
import re
from typing import Any

import pytest

from engine.core.codes import Codec
from engine.core.dedupe import Dedupe
from engine.core.email_message import (
    Composer,
    EmailNormaliser,
    EmailPreparer,
    OpenPixel,
    compile_email,
    prepare_html,
    unpack,
)
from engine.core.links import Shortener
from engine.core.prepare import AudienceRow, Message
from engine.core.states import Skip
from engine.core.submission import Submission
from engine.core.templates import compile_template
from engine.errors import InputError, TemplateError

SECRET = b"s" * 32
BASE = "http://t.example.com"
LINKS, OPENS, UNSUBSCRIBE = (Codec(SECRET, p) for p in (b"link", b"open", b"unsubscribe"))

HTML = """<html><head><style>h1 { color: red }</style></head><body>
<h1>Hi {lead._fname}</h1>
<p><a href="https://shop.example.com/?a=1&amp;b=2">Sale</a> and <a href="{lead.site}">yours</a></p>
<img src="https://cdn.example.com/x.png"
 srcset="https://cdn.example.com/x1.png 1x, https://cdn.example.com/x2.png 2x">
<p style="background: url('https://cdn.example.com/bg.png')"><a href="{unsubscribe}">Leave</a></p>
</body></html>"""


def compile_(html: str = HTML, *, subject: str = "Hi {lead._fname} 🎉", text: str | None = None,
             **kw: Any) -> Any:
    return compile_email(lambda source, name, escape: compile_template(
                             source, name=name, escape_html=escape),
                         subject=subject, html=html, text=text, **kw)


def preparer(template: Any, *, tracked: bool = True) -> EmailPreparer:
    prep = EmailPreparer(
        run_uid="r", run_id=1, normaliser=EmailNormaliser(), dedupe=Dedupe(10),
        template=template, measure=len, route=lambda addr, now: "news",
        max_segments={"news": 0},
        context={"resource": {"id": 1, "unsubscribe_url": "https://static.example/u"}},
        static_unsubscribe="https://static.example/u",
    )
    if tracked:
        links = [_Link(100, "https://shop.example.com/?a=1&b=2"), _Link(101, None),
                 _Link(102, None)]
        prep.track(Shortener.of(template, base=BASE, secret=SECRET, links=links,
                                static_unsubscribe="https://static.example/u"))
        prep.pixel = OpenPixel(BASE, SECRET, 100)
    return prep


class _Link:
    def __init__(self, id: int, url: str | None) -> None:
        self.id, self.url = id, url


ROWS = [AudienceRow(1, b'{"_fname": "Ann", "site": "https://ann.example.net/"}',
                    "Ann@Example.COM"),
        AudienceRow(2, b'{"_fname": "Bob", "site": "https://bob.example.net/"}',
                    "Ann@EXAMPLE.com"),  # Ann's address again (the local part is kept)
        AudienceRow(3, b'{"_fname": "Cy"}', "not an address")]


def code_of(url: str, head: str) -> str:
    assert url.startswith(head), url
    return url[len(head):]


def test_images_stay_as_written_and_links_become_short_in_both_parts() -> None:
    prep = preparer(compile_(pixel=True))
    batch = prep.finish(prep.screen(ROWS), set(), set(), now=0.0)
    assert [(s.profile_id, s.reason) for s in batch.skipped] == [
        (2, Skip.DUPLICATE), (3, Skip.INVALID_EMAIL)]
    (m,) = batch.messages
    assert (m.phone, m.segments, m.encoding) == ("Ann@example.com", 1, "email")
    parts = unpack(m.text)
    assert parts.subject == "Hi Ann 🎉"
    assert 'src="https://cdn.example.com/x.png"' in parts.html
    assert ('srcset="https://cdn.example.com/x1.png 1x, https://cdn.example.com/x2.png 2x"'
            in parts.html)
    assert "url('https://cdn.example.com/bg.png')" in parts.html
    assert '<h1 style="color: red;">Hi Ann</h1>' in parts.html
    hrefs = re.findall(r'href="([^"]+)"', parts.html)
    assert [LINKS.decode(code_of(u, BASE + "/")) for u in hrefs[:2]] == [(100, 1), (101, 1)]
    assert batch.links == [(101, 1, "https://ann.example.net/")]  # one slot for both parts
    assert UNSUBSCRIBE.decode(code_of(hrefs[2], BASE + "/u/")) == (100, 1)
    assert parts.unsubscribe == hrefs[2]
    for url in hrefs:  # the text version has the same links
        assert url in parts.text
    assert "shop.example.com" not in parts.text + parts.html
    (pixel,) = re.findall(r'<img src="([^"]+)" width="1"', parts.html)
    assert OPENS.decode(code_of(pixel, BASE + "/o/")) == (100, 1)


def test_a_message_with_no_url_from_data_takes_the_shorteners_fast_path() -> None:
    """Image URLs are not counted as the text's URLs: the count of ``://`` in a rendered
    message equals its template's, so no message is scanned for URLs."""
    template = compile_(HTML.replace("{lead.site}", "https://shop.example.com/b"), pixel=True)
    rendered = template.render({"lead": {"_fname": "Ann"}, "resource": {
        "unsubscribe_link": "\x1f1\x1f", "globalunsubscribe_link": "", "unsubscribe_url": ""}})
    assert rendered.count("://") == template.url_marks


def test_without_a_tracking_domain_links_go_as_written_with_the_static_unsubscribe() -> None:
    prep = preparer(compile_(pixel=False, unsubscribe=False), tracked=False)
    (m,) = prep.finish(prep.screen(ROWS[:1]), set(), set(), now=0.0).messages
    parts = unpack(m.text)
    assert 'href="https://shop.example.com/?a=1&b=2"' in parts.html
    assert 'href="https://static.example/u"' in parts.html
    assert "\x1f" not in parts.html + parts.text and "width=\"1\"" not in parts.html


def test_the_text_version_is_made_from_the_html_unless_given() -> None:
    made = compile_()
    assert made.text.source.startswith("Hi {lead._fname}")
    assert "Sale (https://shop.example.com/?a=1&b=2)" in made.text.source
    given = compile_(text="Plain {lead._fname}")
    prep = preparer(given, tracked=False)
    (m,) = prep.finish(prep.screen(ROWS[:1]), set(), set(), now=0.0).messages
    assert unpack(m.text).text == "Plain Ann"


@pytest.mark.parametrize("kw, part", [
    ({"subject": "Hi {lead.", "html": "<p>x</p>"}, "subject"),
    ({"html": "<p>{if}</p>"}, "template"),
    ({"text": "{end}"}, "text"),
])
def test_a_template_error_names_its_part(kw: dict[str, Any], part: str) -> None:
    with pytest.raises(TemplateError) as err:
        compile_(**kw)
    assert err.value.message.startswith(f"{part}: ")


def test_an_email_needs_a_subject_and_a_body() -> None:
    with pytest.raises(InputError, match=r"^subject: "):
        compile_(subject="  ")
    with pytest.raises(TemplateError) as err:
        compile_(html="   ")
    assert err.value.message == "template: every message's HTML would be empty"


def test_prepare_html_reads_entities_of_links_only() -> None:
    html = prepare_html('<a href="https://x.ru/?a=1&amp;b=2">a &amp; b</a>', inline=False)
    assert html == '<a href="https://x.ru/?a=1&b=2">a &amp; b</a>'


def message(text: str, to: str = "ann@example.com", seq: int = 1) -> Message:
    return Message(seq, f"r-{seq}", seq, to, "news", text, 1, "email")


def test_the_composer_writes_the_senders_from_and_a_verp_return_path() -> None:
    prep = preparer(compile_())
    (m,) = prep.finish(prep.screen(ROWS[:1]), set(), set(), now=0.0).messages
    c = Composer(from_="News <news@Example.com>", reply_to="help@example.com",
                 return_path="bounces@Bounces.example.com")
    out = c.compose(m, 1_800_000_000.0)
    assert (out.id, out.to, out.sender) == ("r-1", m.phone, "bounces+r-1@bounces.example.com")
    assert out.mime is not None
    parsed = email.message_from_bytes(out.mime, policy=email.policy.default)
    assert parsed["From"] == "News <news@example.com>"
    assert parsed["Subject"] == "Hi Ann 🎉"
    assert parsed["List-Unsubscribe"] == f"<{unpack(m.text).unsubscribe}>"
    assert parsed["Message-ID"] == "<r-1@example.com>"
    assert Composer(from_="news@example.com").compose(m, 0.0).sender == "news@example.com"


def test_a_message_that_cannot_be_written_fails_and_is_never_submitted() -> None:
    prep = preparer(compile_())
    (good,) = prep.finish(prep.screen(ROWS[:1]), set(), set(), now=0.0).messages
    bad = good._replace(seq=2, id="r-2", phone="a b@example.com")
    sub = Submission([good, bad], "", compose=Composer(from_="news@example.com").compose)
    assert [o.id for o in sub.next_attempt()] == ["r-1"]
    assert sub.outcomes[1] is not None
    assert (sub.outcomes[1].state, sub.outcomes[1].reason) == ("failed", "unwritable")
    only_bad = Submission([bad], "", compose=Composer(from_="news@example.com").compose)
    assert only_bad.done


MARKUP_ROW = AudienceRow(
    1, b'{"_fname": "<b>Tom & \\"Jerry\\"</b>", "site": "https://x.example.net/?a=1&b=2",'
       b' "banner": "<table><tr><td>Sale</td></tr></table>"}', "tom@example.com")
MARKUP_HTML = ('<html><body><h1 title="{lead._fname}">Hi {lead._fname}</h1>'
               '<a href="{lead.site}">yours</a>{raw(lead.banner)}</body></html>')


def _hrefs(page: str) -> list[str]:
    """The hrefs of ``page`` as a browser reads them (references decoded)."""
    from html.parser import HTMLParser

    found: list[str] = []

    class Links(HTMLParser):
        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            found.extend(v or "" for k, v in attrs if k == "href")

    Links().feed(page)
    return found


def test_data_in_the_html_is_escaped_but_not_in_the_subject_or_text_version() -> None:
    template = compile_(MARKUP_HTML, subject="For {lead._fname}",
                        text="Hi {lead._fname}: {lead.site}", pixel=False, unsubscribe=False)
    prep = preparer(template, tracked=False)
    (m,) = prep.finish(prep.screen([MARKUP_ROW]), set(), set(), now=0.0).messages
    parts = unpack(m.text)
    name = '&lt;b&gt;Tom &amp; &quot;Jerry&quot;&lt;/b&gt;'
    assert f'<h1 title="{name}">Hi {name}</h1>' in parts.html
    assert "<table><tr><td>Sale</td></tr></table>" in parts.html  # raw() is as it is
    assert _hrefs(parts.html) == ["https://x.example.net/?a=1&b=2"]
    assert parts.subject == 'For <b>Tom & "Jerry"</b>'
    assert parts.text == 'Hi <b>Tom & "Jerry"</b>: https://x.example.net/?a=1&b=2'


def test_a_short_link_from_escaped_data_leads_where_the_browser_would_go() -> None:
    template = compile_(MARKUP_HTML, text="Hi {lead._fname}: {lead.site}", pixel=False)
    prep = preparer(template)
    batch = prep.finish(prep.screen([MARKUP_ROW]), set(), set(), now=0.0)
    (m,) = batch.messages
    parts = unpack(m.text)
    # one slot for the HTML's escaped URL and the text's plain one, with the URL as meant
    assert batch.links == [(101, 1, "https://x.example.net/?a=1&b=2")]
    (href,) = _hrefs(parts.html)
    assert LINKS.decode(code_of(href, BASE + "/")) == (101, 1)
    assert href in parts.text and "x.example.net" not in parts.html + parts.text


def test_an_sms_template_is_never_escaped() -> None:
    template = compile_template("Hi {lead._fname} {raw(lead._fname)}")
    assert template.render({"lead": {"_fname": "A&B <c>"}}) == "Hi A&B <c> A&B <c>"

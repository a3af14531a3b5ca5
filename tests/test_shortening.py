"""Link shortening in the per-message core: which URLs a template closes, the Shortener's
codes, and the Preparer judging segments and too_long on the final text."""

from __future__ import annotations

from typing import Any

import pytest

from engine.core.codes import MAX_VALUE, Codec
from engine.core.dedupe import Dedupe
from engine.core.links import DATA_SLOTS, Shortener, link_request
from engine.core.phones import PhoneNormaliser
from engine.core.prepare import AudienceRow, Preparer
from engine.core.sms import measure
from engine.core.templates import compile_template
from engine.store.base import LinkRow, TriggerRow

SECRET = b"s" * 32
BASE = "https://t.example.com"
RUN_ID = 7
LINKS = Codec(SECRET, b"link")
UNSUBSCRIBE = Codec(SECRET, b"unsubscribe")


def shortener(source: str, first_id: int = 100, seq_base: int = 0, **kw: Any) -> Shortener:
    """A shortener of ``source`` as the pipeline makes one: link rows of ``seq_base``
    numbered from ``first_id`` for what ``link_request`` asks."""
    template = compile_template(source)
    urls, slots = link_request(template, BASE)
    rows = [LinkRow(first_id + i, RUN_ID, url, seq_base) for i, url in enumerate(urls)]
    rows += [LinkRow(first_id + len(urls) + i, RUN_ID, None, seq_base) for i in range(slots)]
    return Shortener.of(template, base=BASE, secret=SECRET, links=rows, seq_base=seq_base,
                        **kw)


def render(source: str, seq: int, ctx: dict[str, Any] | None = None,
           **kw: Any) -> tuple[str, list[tuple[int, int, str]]]:
    template = compile_template(source)
    short = shortener(source, **kw)
    ctx = dict(ctx or {})
    ctx["resource"] = {**ctx.get("resource", {}), **short.resource_fields}
    found: list[tuple[int, int, str]] = []
    return short.shorten(template.render(ctx), seq, found), found


def code_of(link: str, prefix: str = BASE + "/") -> str:
    assert link.startswith(prefix), link
    return link[len(prefix):]


# --- what the compiler knows --------------------------------------------------------------


@pytest.mark.parametrize(("source", "closed", "open_"), [
    ("Sale https://shop.ru/sale now, {lead._fname}", ["https://shop.ru/sale"], False),
    # at the template's very end nothing continues it
    ("Hi {lead._fname}: https://shop.ru/x.", ["https://shop.ru/x"], False),
    # data continues the URL: it is not a template link
    ("See https://shop.ru/item/{lead.id} now", [], True),
    ("{if lead.a}https://shop.ru{end}/b", [], True),
    ("https://shop.ru/x.{lead.tld}", [], True),
    ("{lead.scheme}://shop.ru", [], True),
    ("{if lead.a}see https://a.ru/faq {end}{lead.b}", ["https://a.ru/faq"], False),
    # a bracket at the end of a run of text may still be part of the URL
    ("{if lead.a}(see https://a.ru/faq){end}{lead.b}", [], True),
])
def test_the_compiler_tells_closed_template_urls_from_open_ones(
    source: str, closed: list[str], open_: bool
) -> None:
    template = compile_template(source)
    assert list(template.closed_urls) == closed
    assert template.open_urls is open_


def test_url_marks_count_only_the_literal_text_every_message_holds() -> None:
    template = compile_template("a https://x.ru b {if c}https://y.ru {end}{for i in d}"
                                "https://z.ru {end}{e}")
    assert template.url_marks == 1
    assert template.closed_urls == ("https://x.ru", "https://y.ru", "https://z.ru")
    assert template.urls == template.closed_urls  # `urls` means what it meant


def test_links_are_asked_for_closed_urls_and_slots_only_where_data_is_printed() -> None:
    assert link_request(compile_template("Go https://a.ru now"), BASE) == (["https://a.ru"], 0)
    assert link_request(compile_template("Go https://a.ru {lead.x}"), BASE) == (
        ["https://a.ru"], DATA_SLOTS)
    # a URL on the tracking domain already is not shortened again
    assert link_request(compile_template(f"Go {BASE}/abc {{x}}"), BASE) == ([], DATA_SLOTS)


def test_an_unsubscribe_link_asks_for_a_link_row_to_anchor_its_codes() -> None:
    class Unsubscribing:  # a template whose only link is its unsubscribe link
        closed_urls = ()
        prints_data = False
        variables = frozenset({"resource.unsubscribe_link"})

    assert link_request(Unsubscribing(), BASE) == ([], 1)
    assert link_request(compile_template("No links at all"), BASE) == ([], 0)


# --- the Shortener ------------------------------------------------------------------------


def test_codes_already_sent_keep_their_meaning() -> None:
    """Codes are derived, never stored: a change to how they are computed must give the
    same codes, or the links of every message already out would stop redirecting."""
    link = Codec(b"golden-secret-0123456789", b"link")
    unsubscribe = Codec(b"golden-secret-0123456789", b"unsubscribe")
    pairs = [(0, 0), (1, 1), (7, 123456), (MAX_VALUE - 1, MAX_VALUE - 1)]
    codes = ["UpWB5ISo00", "8lLopJeEUt", "LCiIoS85Q0", "9DLqaM7xac"]
    assert [link.encode(a, b) for a, b in pairs] == codes
    assert [link.prefix(a) + link.suffix(a)(b) for a, b in pairs] == codes
    assert [link.decode(c) for c in codes] == pairs
    assert unsubscribe.encode(3, 99) == "F6bwe4v10R"


def test_a_template_link_becomes_a_code_that_decodes_to_its_link_and_seq() -> None:
    text, found = render("Sale: https://shop.ru/sale?utm=sms now {lead.n}", 42,
                         {"lead": {"n": "Ann"}})
    head, link, tail = text.split(" ", 2)[0], text.split(" ")[1], text.split(" ", 2)[2]
    assert head == "Sale:" and tail == "now Ann"
    assert LINKS.decode(code_of(link)) == (100, 42)
    assert found == []  # nothing to write for a template link
    again, _ = render("Sale: https://shop.ru/sale?utm=sms now {lead.n}", 42,
                      {"lead": {"n": "Ann"}})
    other, _ = render("Sale: https://shop.ru/sale?utm=sms now {lead.n}", 43,
                      {"lead": {"n": "Ann"}})
    assert again == text and other != text


def test_several_template_links_each_get_their_own_link_id() -> None:
    text, _ = render("https://a.ru/x and https://a.ru/xy and https://a.ru/x.", 5)
    links = [w.rstrip(".") for w in text.split(" ") if w.startswith("https")]
    assert [LINKS.decode(code_of(w)) for w in links] == [(100, 5), (101, 5), (100, 5)]


def test_urls_from_data_take_slots_and_come_back_to_be_written() -> None:
    source = "{lead.a} {lead.b} {lead.a} {lead.c}"
    ctx = {"lead": {"a": "https://x.ru/1", "b": "(http://y.ru/2)", "c": "no url"}}
    text, found = render(source, 9, ctx)
    a, b, a2, *_ = text.split(" ")
    assert LINKS.decode(code_of(a)) == (100, 9)
    assert b[0] + b[-1] == "()" and LINKS.decode(code_of(b[1:-1])) == (101, 9)
    assert a2 == a  # the same URL twice in one message: one slot
    assert text.endswith(f"{a} no url")
    assert found == [(100, 9, "https://x.ru/1"), (101, 9, "http://y.ru/2")]


def test_urls_past_the_slots_stay_as_written() -> None:
    urls = [f"https://x.ru/{i}" for i in range(DATA_SLOTS + 2)]
    text, found = render(" ".join(f"{{lead.u{i}}}" for i in range(len(urls))), 3,
                         {"lead": {f"u{i}": u for i, u in enumerate(urls)}})
    words = text.split(" ")
    assert [LINKS.decode(code_of(w)) for w in words[:DATA_SLOTS]] == [
        (100 + i, 3) for i in range(DATA_SLOTS)]
    assert words[DATA_SLOTS:] == urls[DATA_SLOTS:]
    assert [u for _, _, u in found] == urls[:DATA_SLOTS]


def test_an_open_url_is_shortened_as_a_url_from_data() -> None:
    text, found = render("Your item https://shop.ru/item/{lead.id} is back", 11,
                         {"lead": {"id": 42}})
    assert found == [(100, 11, "https://shop.ru/item/42")]
    assert LINKS.decode(code_of(text.split(" ")[2])) == (100, 11)


def test_a_data_url_equal_to_a_template_link_uses_the_template_link() -> None:
    text, found = render("https://a.ru {lead.u}", 2, {"lead": {"u": "https://a.ru"}})
    first, second = text.split(" ")
    assert first == second and LINKS.decode(code_of(first)) == (100, 2)
    assert found == []


def test_urls_on_the_tracking_domain_are_left_alone() -> None:
    own = f"{BASE}/AbCdE12345"
    text, found = render("{lead.u} https://a.ru", 2, {"lead": {"u": own}})
    assert text.split(" ")[0] == own and found == []


def test_unsubscribe_links_are_per_recipient_on_the_tracking_domain() -> None:
    text, found = render("Stop: {unsubscribe} all: {globalunsubscribe}", 8,
                         {"resource": {"unsubscribe_url": "https://static.example/u"}})
    _, unsub, _, everywhere = text.split(" ")
    code = code_of(unsub, f"{BASE}/u/")
    assert UNSUBSCRIBE.decode(code) == (100, 8)  # the run's first link row, and the seq
    assert everywhere == f"{BASE}/ua/{code}"
    assert found == []  # not click links


def test_without_a_tracking_domain_unsubscribe_is_the_static_link() -> None:
    template = compile_template("Stop: {unsubscribe} all: {globalunsubscribe}")
    ctx = {"resource": {"unsubscribe_url": "https://static.example/u"}}
    assert template.render(ctx) == (
        "Stop: https://static.example/u all: https://static.example/u")


def test_a_seq_past_the_codes_range_keeps_its_urls_and_the_static_unsubscribe() -> None:
    text, found = render("https://a.ru {lead.u} {unsubscribe}", MAX_VALUE,
                         {"lead": {"u": "https://b.ru"}},
                         static_unsubscribe="https://static.example/u")
    assert text == "https://a.ru https://b.ru https://static.example/u" and found == []
    # and one before the links' seq_base
    text, found = render("https://a.ru {lead.u} {unsubscribe}", 5,
                         {"lead": {"u": "https://b.ru"}}, seq_base=MAX_VALUE,
                         static_unsubscribe="https://static.example/u")
    assert text == "https://a.ru https://b.ru https://static.example/u" and found == []


@pytest.mark.parametrize("source", [
    "https://a.ru {lead.u} {unsubscribe}",  # the general path
    "Sale https://a.ru now",  # the one-link fast path
])
def test_codes_carry_the_offset_from_the_links_seq_base(source: str) -> None:
    seq_base = 3 * 2**32  # a cluster run's fourth chunk
    seq = seq_base + 17
    text, found = render(source, seq, {"lead": {"u": "https://b.ru"}}, seq_base=seq_base)
    shorts = [w for w in text.split(" ") if w.startswith(BASE)]
    clicks = [LINKS.decode(code_of(w)) for w in shorts if not w.startswith(f"{BASE}/u/")]
    assert clicks and all(offset == 17 for _, offset in clicks)
    assert found == [(link, seq, "https://b.ru") for link, _ in clicks[1:]]  # the real seq
    unsubscribes = [code_of(w, f"{BASE}/u/") for w in shorts if w.startswith(f"{BASE}/u/")]
    assert [UNSUBSCRIBE.decode(c) for c in unsubscribes] == (
        [(100, 17)] if "{unsubscribe}" in source else [])


# --- the Preparer ---------------------------------------------------------------------------


def preparer(source: str, *, max_segments: int = 0, tracked: bool = True) -> Preparer:
    prep = Preparer(
        run_uid="r", run_id=RUN_ID, normaliser=PhoneNormaliser("GB"), dedupe=Dedupe(10),
        template=compile_template(source), measure=measure,
        route=lambda phone, now: "s1", max_segments={"s1": max_segments},
        context={"resource": {"id": 1, "unsubscribe_url": "https://static.example/u"}},
    )
    if tracked:
        prep.track(shortener(source))
    return prep


LONG_URL = "https://shop.example.com/catalogue/spring/" + "x" * 120 + "?utm_source=sms"
ROWS = [AudienceRow(1, b'{"_fname": "Ann"}', "+447911000001"),
        AudienceRow(2, b'{"_fname": "Bob"}', "+447911000002")]


def test_segments_are_counted_on_the_shortened_text() -> None:
    source = "Hi {lead._fname}, our spring sale is on: " + LONG_URL
    plain = preparer(source, tracked=False)
    batch = plain.finish(plain.screen(ROWS), set(), set(), now=0.0)
    assert [m.segments for m in batch.messages] == [2, 2]

    prep = preparer(source)
    batch = prep.finish(prep.screen(ROWS), set(), set(), now=0.0)
    assert [m.segments for m in batch.messages] == [1, 1]
    assert all(LONG_URL not in m.text and len(m.text) <= 160 for m in batch.messages)
    assert [LINKS.decode(code_of(m.text.rsplit(" ", 1)[1])) for m in batch.messages] == [
        (100, 1), (100, 2)]


def test_too_long_is_judged_on_the_shortened_text() -> None:
    source = "Hi {lead._fname}, our spring sale is on: " + LONG_URL
    plain = preparer(source, max_segments=1, tracked=False)
    batch = plain.finish(plain.screen(ROWS), set(), set(), now=0.0)
    assert batch.counts["too_long"] == 2 and not batch.messages

    prep = preparer(source, max_segments=1)
    batch = prep.finish(prep.screen(ROWS), set(), set(), now=0.0)
    assert batch.counts["too_long"] == 0 and len(batch.messages) == 2


def test_only_the_data_urls_of_messages_kept_come_back() -> None:
    prep = preparer("{lead.u} {lead.pad}", max_segments=1)
    rows = [AudienceRow(1, b'{"u": "https://a.ru/1", "pad": "x"}', "+447911000001"),
            AudienceRow(2, b'{"u": "https://a.ru/2", "pad": "%s"}' % (b"y" * 200),
                        "+447911000002")]
    batch = prep.finish(prep.screen(rows), set(), set(), now=0.0)
    assert [m.seq for m in batch.messages] == [1]
    assert list(batch.links) == [(100, 1, "https://a.ru/1")]


def test_rerender_gives_the_same_texts() -> None:
    source = "Hi {lead._fname} https://a.ru {lead.u} {unsubscribe}"
    rows = [AudienceRow(1, b'{"_fname": "Ann", "u": "https://b.ru"}', "+447911000001")]
    prep = preparer(source)
    batch = prep.finish(prep.screen(rows), set(), set(), now=0.0)
    later = preparer(source)  # another process, the same link rows
    again, missing = later.rerender([(1, 1, "+447911000001")], rows, "s1")
    assert [m.text for m in again] == [m.text for m in batch.messages] and not missing
    assert f"{BASE}/u/" in again[0].text


def test_a_trigger_text_is_shortened_and_its_data_urls_come_back() -> None:
    prep = preparer("Your order {apicontent.url} https://a.ru/help")
    rows = [TriggerRow(1, 31, 5, b"{}", "+447911000001", None,
                       b'{"url": "https://a.ru/o/9"}')]
    batch = prep.finish_triggers(rows, ["+447911000001"], set(), now=0.0)
    (message,) = batch.messages
    order, help_ = message.text.split(" ")[2:]
    assert LINKS.decode(code_of(order)) == (101, 31)
    assert LINKS.decode(code_of(help_)) == (100, 31)
    assert list(batch.links) == [(101, 31, "https://a.ru/o/9")]

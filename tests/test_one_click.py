"""One-click unsubscribe (RFC 8058): a mail client's POST of ``List-Unsubscribe=One-Click``
to the message's ``/u/{code}`` unsubscribes at once; a GET of the same URL changes nothing;
the confirm page's own POST still works."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from tests.test_opens import EmailSite, open_email_site

pytestmark = pytest.mark.anyio


@pytest.fixture
async def site(open_herald: Callable[..., Any], any_store: str) -> AsyncIterator[EmailSite]:
    async with open_email_site(open_herald) as site:
        yield site

ONE_CLICK = {"List-Unsubscribe": "One-Click"}


async def one_click(site: EmailSite, path: str, *, multipart: bool = False) -> httpx.Response:
    if multipart:  # as some providers send it
        return await site.client.post(path, files={"List-Unsubscribe": (None, "One-Click")})
    return await site.client.post(path, data=ONE_CLICK)


@pytest.mark.parametrize("multipart", [False, True])
async def test_a_one_click_post_unsubscribes_at_once_and_a_get_changes_nothing(
    site: EmailSite, multipart: bool,
) -> None:
    run_id, sent = await site.send(await site.subscribe())
    seq, email = min(sent.items())
    code = await site.unsubscribe_code(run_id, seq)
    for _ in range(2):  # a scanner following the header's URL, twice
        r = await site.client.get(f"/u/{code}")
        assert r.status_code == 200 and "<form" in r.text
    assert await site.statuses(email) == ["subscribed"]
    assert await site.events("unsub") == []

    r = await one_click(site, f"/u/{code}", multipart=multipart)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    assert r.text == "You are unsubscribed from \u201cletters\u201d.\n"
    assert await site.statuses(email) == ["unsubscribed"]
    [event] = await site.events("unsub")
    assert (event.run_id, event.seq, event.phone) == (run_id, seq, email)
    assert await site.events("unsub_sms") == []
    # the others are still subscribed; a second POST changes nothing more
    assert [await site.statuses(e) for e in sorted(sent.values()) if e != email] == [
        ["subscribed"]] * (len(sent) - 1)
    r = await one_click(site, f"/u/{code}", multipart=multipart)
    assert r.status_code == 200 and "unsubscribed" in r.text
    assert len(await site.events("unsub")) == 1


async def test_the_page_and_its_confirm_button_name_the_address_shortened(
    site: EmailSite,
) -> None:
    run_id, sent = await site.send(await site.subscribe())
    seq, email = min(sent.items())
    code = await site.unsubscribe_code(run_id, seq)
    r = await site.client.get(f"/u/{code}")
    assert r.status_code == 200 and f'action="/u/{code}"' in r.text
    local, _, domain = email.partition("@")
    assert f"{local[0]}\u2026@{domain}" in r.text and email not in r.text
    assert await site.statuses(email) == ["subscribed"]
    r = await site.client.post(f"/u/{code}", data={"confirm": "yes"})
    assert r.status_code == 200 and "You are unsubscribed" in r.text
    assert r.headers["content-type"].startswith("text/html")
    assert await site.statuses(email) == ["unsubscribed"]
    assert len(await site.events("unsub")) == 1


async def test_a_one_click_post_to_the_global_link_leaves_every_resource(
    site: EmailSite,
) -> None:
    profiles = await site.subscribe()
    await site.subscribe(resource="letters2")
    run_id, sent = await site.send(profiles)
    seq, email = min(sent.items())
    code = await site.unsubscribe_code(run_id, seq)
    assert (await site.client.get(f"/ua/{code}")).status_code == 200
    assert await site.statuses(email, "letters2") == ["subscribed"]
    r = await one_click(site, f"/ua/{code}")
    assert r.status_code == 200 and r.text == (
        "You are unsubscribed from any list of this sender.\n")
    assert await site.statuses(email) == ["unsubscribed"]
    assert await site.statuses(email, "letters2") == ["unsubscribed"]


@pytest.mark.parametrize("path", ["/u/zzzzzzzzzz", "/u/abc", "/ua/0000000000"])
async def test_a_one_click_post_of_an_unknown_code_is_a_404(
    site: EmailSite, path: str,
) -> None:
    _, sent = await site.send(await site.subscribe())
    r = await one_click(site, path)
    assert r.status_code == 404
    assert [await site.statuses(e) for e in sent.values()] == [["subscribed"]] * len(sent)


async def test_a_big_one_click_body_is_refused(site: EmailSite) -> None:
    run_id, sent = await site.send(await site.subscribe())
    seq, email = min(sent.items())
    code = await site.unsubscribe_code(run_id, seq)
    r = await site.client.post(f"/u/{code}", content=b"List-Unsubscribe=One-Click&"
                               + b"x" * 10_000,
                               headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 413
    assert await site.statuses(email) == ["subscribed"]

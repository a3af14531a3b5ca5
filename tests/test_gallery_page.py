"""The gallery's web page: its route and the thumbnail route in-process, then the page itself
in headless Chromium (Playwright) against the real app on Hypercorn (its files are
package data, ``engine/api/static/gallery/``): token, uploads with a
refusal, a new directory, moving a selection into it, browsing and searching.

The browser test is slow and skips itself without ``/usr/bin/chromium`` (Debian's package;
``.ci/chromium`` installs it) or the ``playwright`` package. Screenshots go to the test's
``tmp_path`` and, when ``HERALD_ARTIFACTS`` is set, to that directory too.
"""

from __future__ import annotations

import base64
import importlib.util
import io
import os
import shutil
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image as PILImage

from engine.api import TokenStore, create_app
from engine.service import MailingService
from engine.testing import write_config
from tests.servers import served_api

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]

CONFIG = """
[tracking]
domain = "trk.example.com"
scheme = "https"

[gallery]
storage = "gallery/"
"""


def png(color: tuple[int, int, int], size: tuple[int, int] = (120, 80)) -> bytes:
    out = io.BytesIO()
    PILImage.new("RGB", size, color).save(out, "PNG")
    return out.getvalue()


# -- in-process: the routes ----------------------------------------------------------


@pytest.mark.anyio
async def test_page_and_thumbnail_routes(open_herald: Callable[..., Any]) -> None:
    async with await open_herald(extra=CONFIG) as herald, \
            MailingService.running(herald) as service:
        tokens = TokenStore(herald.store)
        sender = {"Authorization": f"Bearer {(await tokens.create('sender'))[1]}"}
        viewer = {"Authorization": f"Bearer {(await tokens.create('viewer'))[1]}"}
        transport = httpx.ASGITransport(create_app(herald, service))
        async with httpx.AsyncClient(transport=transport, base_url="http://herald") as c:
            page = await c.get("/gallery")  # no token needed
            assert page.status_code == 200
            assert page.headers["content-type"].startswith("text/html")
            csp = page.headers["content-security-policy"]
            assert "script-src 'self'" in csp and "style-src 'self'" in csp
            assert "<title>Herald gallery</title>" in page.text
            assert "<style" not in page.text and "<script>" not in page.text
            assert "style=" not in page.text  # the CSP would block it
            for asset, kind in (("gallery.js", "application/javascript"),
                                ("gallery.css", "text/css")):
                assert f'"/gallery/static/{asset}"' in page.text
                r = await c.get(f"/gallery/static/{asset}")
                assert r.status_code == 200, asset
                assert r.headers["content-type"].startswith(kind)
                assert r.headers["x-content-type-options"] == "nosniff"
            for bad in ("/gallery/static/index.py", "/gallery/static/..%2fgallery.py"):
                assert (await c.get(bad)).status_code == 404, bad

            up = await c.post("/api/v1/gallery/images", headers=sender,
                              files=[("file", ("a.png", png((10, 200, 10)), "image/png"))])
            image_id = up.json()["uploaded"][0]["id"]
            url = f"/api/v1/gallery/images/{image_id}/thumbnail"
            assert (await c.get(url)).status_code == 401
            thumb = await c.get(url, headers=viewer)
            assert thumb.status_code == 200
            assert thumb.headers["content-type"] in ("image/png", "image/jpeg")
            with PILImage.open(io.BytesIO(thumb.content)) as im:
                assert im.size[0] <= 256 and im.size[1] <= 256
            missing = await c.get(f"/api/v1/gallery/images/{image_id + 1}/thumbnail",
                                  headers=viewer)
            assert missing.status_code == 404
            assert (await c.get("/openapi.json", headers=viewer)).status_code == 200


# -- the page in headless Chromium ---------------------------------------------------


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """(base URL, a sender token) of a fresh workspace served on a loopback port."""
    with served_api(write_config(tmp_path, extra=CONFIG), "sender") as served:
        yield served


def _save(page: Any, path: Path) -> None:
    page.screenshot(path=str(path), full_page=True)
    artifacts = os.environ.get("HERALD_ARTIFACTS")
    if artifacts:
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(artifacts) / path.name)


@pytest.mark.slow
@pytest.mark.skipif(not Path(CHROMIUM).exists(),
                    reason=f"no {CHROMIUM} (apt-get install chromium; see .ci/chromium)")
@pytest.mark.skipif(importlib.util.find_spec("playwright") is None,
                    reason="the playwright package is not installed (pip install playwright)")
def test_gallery_page_in_chromium(served: tuple[str, str], tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    base, secret = served
    problems: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                     args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            page.set_default_timeout(15_000)
            page.on("pageerror", lambda err: problems.append(f"page error: {err}"))
            page.on("console", lambda msg: problems.append(f"console: {msg.text}")
                    if msg.type == "error" else None)
            page.on("response", lambda r: problems.append(f"{r.status} {r.url}")
                    if r.status >= 400 else None)

            page.goto(f"{base}/gallery")
            page.get_by_label("API token").fill("hrld_not_a_token")
            page.get_by_role("button", name="Open the gallery").click()
            expect(page.locator("#message")).to_have_text(
                "The token was refused: enter it again.")
            expect(page.get_by_label("API token")).to_be_visible()
            assert problems and all("401" in p for p in problems)
            problems.clear()
            page.get_by_label("API token").fill(secret)
            page.get_by_role("button", name="Open the gallery").click()
            expect(page.locator("#app")).to_be_visible()

            page.get_by_label("Drop images here or choose files").set_input_files([
                {"name": "red.png", "mimeType": "image/png", "buffer": png((220, 30, 30))},
                {"name": "blue.png", "mimeType": "image/png",
                 "buffer": png((30, 60, 220), (60, 90))},
                {"name": "x.png", "mimeType": "image/png",
                 "buffer": b"<!doctype html><p>not an image</p>"},
            ])
            status = page.locator("#upload-status li")
            expect(status).to_have_count(3)
            expect(page.locator("#upload-status li.ok")).to_have_text(
                ["red.png: uploaded", "blue.png: uploaded"])
            refused = page.locator("#upload-status li.refused")
            expect(refused).to_have_count(1)
            expect(refused).to_contain_text("x.png: refused: not a JPEG, PNG or GIF image")

            cards = page.locator("#images > li")
            expect(cards).to_have_count(2)
            thumbs = page.locator("#images img")
            page.wait_for_function(
                "() => [...document.querySelectorAll('#images img')]"
                ".every(i => i.complete && i.naturalWidth > 0)")
            assert thumbs.count() == 2

            page.get_by_label("New directory").fill("Banners")
            page.get_by_role("button", name="Create", exact=True).click()
            expect(page.get_by_role("button", name="Open directory Banners")).to_be_visible()

            page.get_by_label("Select all").check()
            expect(page.locator("#count")).to_have_text("2 selected")
            target = page.get_by_label("Move to")
            expect(target.locator("option", has_text="/Banners")).to_have_count(1)
            target.select_option(label="/Banners")
            page.get_by_role("button", name="Move", exact=True).click()
            expect(cards).to_have_count(0)
            expect(page.locator("#empty")).to_be_visible()
            expect(page.locator("#message")).to_have_text("Moved 2 image(s).")

            page.get_by_role("button", name="Open directory Banners").click()
            expect(page.locator("#crumbs")).to_contain_text("Banners")
            expect(cards).to_have_count(2)
            assert sorted(t.strip() for t in page.locator("#images .name").all_inner_texts()) == [
                "blue.png", "red.png"]
            page.wait_for_function(
                "() => [...document.querySelectorAll('#images img')]"
                ".every(i => i.complete && i.naturalWidth > 0)")
            page.get_by_role("button", name="Insert an img tag of red.png").click()
            snippet = page.get_by_label("Template snippet").input_value()
            assert snippet.startswith('<img src="https://trk.example.com/')
            assert 'alt="red.png"' in snippet

            # Drag and drop: a file dropped on the zone goes into the current directory.
            drop = page.evaluate_handle(
                """(b64) => {
                    const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
                    const dt = new DataTransfer();
                    dt.items.add(new File([bytes], "green.png", {type: "image/png"}));
                    return dt;
                }""", base64.b64encode(png((30, 180, 60), (90, 90))).decode())
            page.dispatch_event("#drop", "drop", {"dataTransfer": drop})
            expect(page.locator("#upload-status li")).to_have_text(["green.png: uploaded"])
            expect(cards).to_have_count(3)
            page.wait_for_function(
                "() => [...document.querySelectorAll('#images img')]"
                ".every(i => i.complete && i.naturalWidth > 0)")
            _save(page, tmp_path / "gallery.png")

            page.get_by_label("Search").fill("red")
            expect(cards).to_have_count(1)
            expect(page.locator("#images .name")).to_have_text(["red.png"])
            expect(page.locator("#crumbs")).to_contain_text("Search: red")
            _save(page, tmp_path / "gallery-search.png")

            # The selection as a zip, then deleted (after a confirm()).
            page.get_by_label("Select red.png").check()
            with page.expect_download() as download:
                page.get_by_role("button", name="Download zip").click()
            with zipfile.ZipFile(download.value.path()) as archive:
                assert archive.namelist() == ["red.png"]
            page.once("dialog", lambda dialog: dialog.accept())
            page.get_by_role("button", name="Delete", exact=True).click()
            expect(cards).to_have_count(0)
            expect(page.locator("#message")).to_have_text("Deleted 1 image(s).")
        finally:
            browser.close()
    assert not problems, problems

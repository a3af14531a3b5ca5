"""The gallery's HTTP API in-process (httpx's ASGI transport): uploads with per-file
refusals, browsing, renames that keep the URL, directories, the zip download, the public
image route with its caching headers, and localising a template against a loopback server."""

from __future__ import annotations

import io
import threading
import zipfile
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from PIL import Image as PILImage

from engine.api import TokenStore, create_app
from engine.gallery import MAX_IMAGE_BYTES
from engine.runner import Herald
from engine.service import MailingService

pytestmark = pytest.mark.anyio

CONFIG = """
[tracking]
domain = "trk.example.com"
scheme = "https"

[gallery]
storage = "gallery/"
allow_fetch_from = ["127.0.0.1"]
fetch_timeout = 5
"""


def png(color: tuple[int, int, int] = (200, 10, 10), size: tuple[int, int] = (40, 30),
        fmt: str = "PNG") -> bytes:
    out = io.BytesIO()
    PILImage.new("RGB", size, color).save(out, fmt)
    return out.getvalue()


@dataclass
class Api:
    client: httpx.AsyncClient
    herald: Herald
    sender: str
    viewer: str
    app: Any

    def auth(self, role: str = "sender") -> dict[str, str]:
        return {"Authorization": f"Bearer {getattr(self, role)}"}

    async def upload(self, *files: tuple[str, bytes], **fields: str) -> dict[str, Any]:
        r = await self.client.post(
            "/api/v1/gallery/images", headers=self.auth(),
            files=[("file", (name, data, "application/octet-stream")) for name, data in files],
            data=fields)
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body

    async def call(self, method: str, url: str, json: Any = None,
                   role: str = "sender", **kw: Any) -> httpx.Response:
        return await self.client.request(method, url, json=json, headers=self.auth(role), **kw)


@pytest.fixture
async def api(open_herald: Callable[..., Any]) -> AsyncIterator[Api]:
    async with await open_herald(extra=CONFIG) as herald, \
            MailingService.running(herald) as service:
        tokens = TokenStore(herald.store)
        sender = (await tokens.create("sender", group="marketing"))[1]
        viewer = (await tokens.create("viewer"))[1]
        app = create_app(herald, service)
        transport = httpx.ASGITransport(app)
        async with httpx.AsyncClient(transport=transport, base_url="http://herald") as client:
            yield Api(client, herald, sender, viewer, app)


def public_path(url: str) -> str:
    assert url.startswith("https://trk.example.com/")
    return url.removeprefix("https://trk.example.com")


async def test_upload_refuses_per_file_and_keeps_the_rest(api: Api) -> None:
    body = await api.upload(
        ("cat.png", png()),
        ("evil.png", b"<html><script>alert(1)</script></html>"),
        ("huge.png", png() + b"\0" * (MAX_IMAGE_BYTES + 1 - len(png()))),
        ("photo.jpg", png(fmt="JPEG")),
    )
    assert [i["name"] for i in body["uploaded"]] == ["cat.png", "photo.jpg"]
    assert [r["name"] for r in body["rejected"]] == ["evil.png", "huge.png"]
    assert "not a JPEG, PNG or GIF" in body["rejected"][0]["error"]
    assert "over the limit" in body["rejected"][1]["error"]
    cat = body["uploaded"][0]
    assert (cat["size"], cat["width"], cat["height"]) == (len(png()), 40, 30)
    assert "group-marketing" in cat["tags"]
    assert any(t[:2] == "20" and len(t) == 10 for t in cat["tags"])  # the date tag
    assert cat["url"] == f"https://trk.example.com/1/{cat['id']}/{cat['url'].split('/')[5]}/cat.png"
    assert cat["html"] == f'<img src="{cat["url"]}" width="40" height="30" alt="cat.png">'
    listing = (await api.call("GET", "/api/v1/gallery/images", role="viewer")).json()
    assert sorted(i["name"] for i in listing["images"]) == ["cat.png", "photo.jpg"]


async def test_an_interrupted_upload_keeps_the_files_received_whole(api: Api) -> None:
    request = httpx.Request(
        "POST", "http://herald/api/v1/gallery/images",
        files=[("file", ("first.png", png(), "image/png")),
               ("file", ("second.png", png((0, 0, 9)), "image/png"))])
    body = request.read()
    cut = body.index(png((0, 0, 9))) + 20  # in the middle of the second file
    chunks = [body[:cut], None]  # then the client goes away

    async def receive() -> dict[str, Any]:
        chunk = chunks.pop(0)
        if chunk is None:
            return {"type": "http.disconnect"}
        return {"type": "http.request", "body": chunk, "more_body": True}

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    headers = [(k.lower().encode(), v.encode()) for k, v in request.headers.items()]
    headers.append((b"authorization", f"Bearer {api.sender}".encode()))
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "POST", "scheme": "http", "path": "/api/v1/gallery/images",
             "raw_path": b"/api/v1/gallery/images", "query_string": b"", "root_path": "",
             "headers": headers, "server": ("herald", 80), "client": ("127.0.0.1", 1)}
    await api.app(scope, receive, send)
    assert sent[0]["status"] == 400
    listing = (await api.call("GET", "/api/v1/gallery/images", role="viewer")).json()
    assert [i["name"] for i in listing["images"]] == ["first.png"]


async def test_public_route_caches_and_rename_keeps_the_url(api: Api) -> None:
    [image] = (await api.upload(("logo.png", png())))["uploaded"]
    path = public_path(image["url"])
    r = await api.client.get(path)  # no token: it is public
    assert r.status_code == 200 and r.content == png()
    assert r.headers["content-type"] == "image/png"
    assert r.headers["cache-control"] == "public, max-age=31536000, immutable"
    etag = r.headers["etag"]
    again = await api.client.get(path, headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    r = await api.call("PATCH", f"/api/v1/gallery/images/{image['id']}",
                       {"name": "brand logo.png", "add_tags": ["brand"]})
    assert r.status_code == 200, r.text
    assert r.json()["url"] == image["url"] and r.json()["name"] == "brand logo.png"
    assert (await api.client.get(path)).status_code == 200
    for bad in (path.replace("/1/", "/2/", 1), path[:-4] + ".gif",
                path.rsplit("/", 1)[0] + "/..%2F..%2Fherald.db", "/1/999/abc/x.png"):
        assert (await api.client.get(bad)).status_code in (400, 404), bad
    r = await api.call("DELETE", f"/api/v1/gallery/images/{image['id']}")
    assert r.status_code == 204
    assert (await api.client.get(path)).status_code == 404


async def test_directories_tree_and_moves(api: Api) -> None:
    async def mkdir(name: str, parent: int | None = None) -> int:
        r = await api.call("POST", "/api/v1/gallery/directories",
                           {"name": name, "parent_id": parent})
        assert r.status_code == 201, r.text
        return int(r.json()["id"])

    parent = await mkdir("Campaigns / 2026 ✓")
    child = await mkdir("child", parent)
    r = await api.call("PATCH", f"/api/v1/gallery/directories/{parent}", {"parent_id": child})
    assert r.status_code == 400 and r.json()["field"] == "parent_id"
    r = await api.call("POST", "/api/v1/gallery/directories", {"name": "child",
                                                               "parent_id": parent})
    assert r.status_code == 409
    r = await api.call("POST", "/api/v1/gallery/directories", {"name": "x" * 245})
    assert r.status_code == 400
    body = await api.upload(("in-child.png", png()), directory_id=str(child))
    [image] = body["uploaded"]
    listing = (await api.call("GET", "/api/v1/gallery/images",
                              params={"directory_id": child}, role="viewer")).json()
    assert [i["id"] for i in listing["images"]] == [image["id"]]
    root = (await api.call("GET", "/api/v1/gallery/images", role="viewer")).json()
    assert [d["name"] for d in root["directories"]] == ["Campaigns / 2026 ✓"]
    assert root["images"] == []
    r = await api.call("PATCH", f"/api/v1/gallery/images/{image['id']}", {"directory_id": None})
    assert r.json()["directory_id"] is None
    r = await api.call("PATCH", f"/api/v1/gallery/directories/{child}",
                       {"name": "moved", "parent_id": None})
    assert (r.json()["name"], r.json()["parent_id"]) == ("moved", None)
    found = (await api.call("GET", "/api/v1/gallery/images", params={"q": "MOV"},
                            role="viewer")).json()
    assert [d["id"] for d in found["directories"]] == [child]
    r = await api.call("DELETE", f"/api/v1/gallery/directories/{parent}")
    assert r.status_code == 200 and r.json() == {"deleted": 0}


async def test_search_tags_and_sorts(api: Api) -> None:
    body = await api.upload(("b-small.png", png(size=(2, 2))),
                            ("a-big.png", png(color=(1, 2, 3), size=(200, 200))))
    small, big = (i["id"] for i in body["uploaded"])
    await api.call("PATCH", f"/api/v1/gallery/images/{small}", {"add_tags": ["promo"]})

    async def ids(**params: Any) -> list[int]:
        r = await api.call("GET", "/api/v1/gallery/images", params=params, role="viewer")
        assert r.status_code == 200, r.text
        return [i["id"] for i in r.json()["images"]]

    assert await ids(tag="promo") == [small]
    assert await ids(tag="group-marketing", sort="name") == [big, small]
    assert await ids(sort="size") == [big, small]
    assert await ids(sort="size", order="asc") == [small, big]
    assert await ids(recent="true", q="small") == [small]
    assert (await api.call("GET", "/api/v1/gallery/images", params={"sort": "colour"},
                           role="viewer")).status_code == 400
    assert (await api.call("PATCH", f"/api/v1/gallery/images/{small}", {"name": "x"},
                           role="viewer")).status_code == 403


async def test_zip_download_of_three_images(api: Api) -> None:
    colors = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    body = await api.upload(*(("same-name.png", png(c)) for c in colors))
    ids = [i["id"] for i in body["uploaded"]]
    r = await api.call("POST", "/api/v1/gallery/download", {"ids": ids})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(r.content)) as archive:
        assert archive.namelist() == ["same-name.png", "same-name (2).png",
                                      "same-name (3).png"]
        assert [archive.read(n) for n in archive.namelist()] == [png(c) for c in colors]
    r = await api.call("POST", "/api/v1/gallery/download", {"ids": [*ids, 999]})
    assert r.status_code == 404


# -- localising a template against a loopback server ------------------------------------


@pytest.fixture
def image_server() -> Iterator[str]:
    """An HTTP server on 127.0.0.1 serving two images, a page and a redirect to 127.0.0.2."""
    routes: dict[str, tuple[int, str, bytes, dict[str, str]]] = {
        "/a.png": (200, "image/png", png((10, 20, 30)), {}),
        "/copy-of-a.png": (200, "image/png", png((10, 20, 30)), {}),
        "/b": (200, "image/gif", png((1, 1, 1), fmt="GIF"), {}),
        "/page.png": (200, "text/html", b"<html></html>", {}),
        "/away.png": (302, "text/plain", b"", {"Location": "http://127.0.0.2:9/x.png"}),
    }

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, ctype, body, headers = routes.get(
                self.path, (404, "text/plain", b"no", {}))
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            for k, v in headers.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


async def test_localize_rewrites_only_the_images(api: Api, image_server: str) -> None:
    s = image_server
    template = (
        f'<p>Hi {{lead._fname}}!</p>\n<img src="{s}/a.png" width="10">'
        f"<img src='{s}/copy-of-a.png'>\n<div style=\"background: url({s}/b)\"></div>"
        f'<a href="{s}/landing">go</a> <img src="{s}/page.png"><img src="{s}/away.png">'
        '<img src="http://127.0.0.2:9/secret.png">'
        f"\nSMS: see {s}/a.png."
    )
    r = await api.call("POST", "/api/v1/gallery/localize", {"template": template})
    assert r.status_code == 200, r.text
    body = r.json()
    images = body["images"]
    assert len(images) == 2  # a.png and its copy share one image
    a_url, b_url = images[0]["url"], images[1]["url"]
    expected = (
        f'<p>Hi {{lead._fname}}!</p>\n<img src="{a_url}" width="10">'
        f"<img src='{a_url}'>\n<div style=\"background: url({b_url})\"></div>"
        f'<a href="{s}/landing">go</a> <img src="{s}/page.png"><img src="{s}/away.png">'
        '<img src="http://127.0.0.2:9/secret.png">'
        f"\nSMS: see {a_url}."
    )
    assert body["template"] == expected
    errors = {e["url"]: e["error"] for e in body["errors"]}
    assert "content type 'text/html'" in errors[f"{s}/page.png"]
    assert "127.0.0.2" in errors[f"{s}/away.png"]
    assert "loopback, private or link-local" in errors["http://127.0.0.2:9/secret.png"]
    served = await api.client.get(public_path(a_url))
    assert served.content == png((10, 20, 30))
    again = (await api.call("POST", "/api/v1/gallery/localize",
                            {"template": f'<img src="{s}/a.png">'})).json()
    assert again["images"][0]["id"] == images[0]["id"]  # deduplicated by content


async def test_a_part_with_oversized_headers_is_named_as_such_not_as_too_many_files(
        api: Api) -> None:
    body = (b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\""
            + b"x" * 5000 + b".png\"\r\n\r\n" + png() + b"\r\n--b--\r\n")
    r = await api.client.post("/api/v1/gallery/images", content=body, headers={
        **api.auth(), "Content-Type": "multipart/form-data; boundary=b"})
    assert r.status_code == 400
    assert "headers" in r.json()["error"] and "files" not in r.json()["error"]


async def test_a_damaged_image_is_described_without_a_memory_address(api: Api) -> None:
    answer = await api.upload(("a.gif", b"GIF89a" + b"\0" * 20), ("b.png", png()[:60]))
    errors = [item["error"] for item in answer["rejected"]]
    assert len(errors) == 2 and not any("0x" in e or "object at" in e for e in errors), errors

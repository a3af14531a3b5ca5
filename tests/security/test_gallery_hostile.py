"""The gallery against hostile input on a real, watched server: images that decompress to
far more than they weigh, many big uploads at once, malformed public image paths, and
localize calls with too many URLs, disguised loopback addresses and servers that never
answer. Each test asserts what a user would notice: the loop keeps running (stall), the
memory stays bounded and comes back, the answer names the bound, the log stays quiet."""

from __future__ import annotations

import io
import logging
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from PIL import Image as PILImage

from engine.testing import write_config
from tests.security.harness import hostile_api

MB = 1024 * 1024

GALLERY = """
[tracking]
domain = "trk.example.com"
scheme = "https"

[gallery]
storage = "gallery/"
allow_fetch_from = [{allow}]
fetch_timeout = 5
localize_timeout = {deadline}
"""


def config(tmp_path: Path, *, allow: str = "", deadline: float = 60) -> Path:
    return write_config(tmp_path, extra=GALLERY.format(allow=allow, deadline=deadline))


def png(width: int, height: int, mode: str = "RGBA") -> bytes:
    """A blank image: it compresses to almost nothing whatever its pixel count."""
    out = io.BytesIO()
    with PILImage.new(mode, (width, height)) as img:
        img.save(out, "PNG")
    return out.getvalue()


@pytest.fixture(scope="module")
def bomb() -> bytes:
    """7000 x 7000 RGBA (49 MP, 196 MB decoded) in about 190 KB."""
    data = png(7000, 7000)
    assert len(data) < 300_000
    return data


def upload(base: str, token: str, name: str, data: bytes) -> httpx.Response:
    return httpx.post(f"{base}/api/v1/gallery/images",
                      headers={"Authorization": f"Bearer {token}"},
                      files=[("file", (name, data, "image/png"))], timeout=60)


def test_an_image_that_decompresses_to_49_megapixels_is_refused_unread(
        tmp_path: Path, bomb: bytes) -> None:
    with hostile_api(config(tmp_path)) as api:
        token = api.token("sender")
        with api.watch() as watch:
            r = upload(api.base, token, "bomb.png", bomb)
    print(f"\nbomb: stall {watch.stall:.3f} s, peak +{watch.peak_growth / MB:.0f} MB,"
          f" after +{watch.rss_growth / MB:.0f} MB")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["uploaded"] == []
    assert "[gallery] max_pixels" in body["rejected"][0]["error"]
    assert "7000x7000" in body["rejected"][0]["error"]
    assert watch.stall < 0.1
    assert watch.peak_growth < 100 * MB
    assert watch.rss_growth < 30 * MB


def test_six_big_uploads_at_once_decode_two_at_a_time_and_give_the_memory_back(
        tmp_path: Path) -> None:
    # 3000 x 3000 RGBA is allowed (9 MP); decoded it is 36 MB (72 MB while reduced).
    # Unbounded, six at once held ~430 MB; two at a time it is half of that at most.
    big = png(3000, 3000)
    with hostile_api(config(tmp_path)) as api:
        token = api.token("sender")
        with api.watch() as watch, ThreadPoolExecutor(6) as pool:
            answers = list(pool.map(lambda i: upload(api.base, token, f"big{i}.png", big),
                                    range(6)))
        for r in answers:
            assert r.status_code == 200, r.text
            assert len(r.json()["uploaded"]) == 1, r.text
        thumb = httpx.get(answers[0].json()["uploaded"][0]["url"].replace(
            "https://trk.example.com", api.base))
        assert thumb.status_code == 200
    print(f"\nsix uploads: stall {watch.stall:.3f} s, peak +{watch.peak_growth / MB:.0f} MB,"
          f" after +{watch.rss_growth / MB:.0f} MB")
    assert watch.stall < 0.1
    assert watch.peak_growth < 200 * MB
    assert watch.rss_growth < 30 * MB


class _LogLines(logging.Handler):
    """Counts the lines every record would print (a traceback is many)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith(("httpx", "httpcore")):  # the test's own client
            return
        self.lines += self.format(record).splitlines()


@pytest.fixture
def log_lines() -> Iterator[_LogLines]:
    handler = _LogLines()
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


MALFORMED = [
    "/1/99999999999999999999999/h/x",
    "/1/9223372036854775808/0123456789abcdef/x.png",
    "/1/-1/h/x",
    "/1/0/h/x",
    "/1/1e3/h/x",
    "/1/0x10/h/x",
    "/1/%00/h/x",
    "/1/1/%ff%fe/x",
    "/99999999999999999999999/1/h/x",
    "/%2e%2e/1/h/x",
    "/1/1/" + "a" * 5000 + "/x",
    "/1/1/0123456789abcdef/" + "n" * 5000,
    "/1/１２/h/x",
]


@pytest.mark.parametrize("path", MALFORMED)
def test_a_malformed_public_image_path_is_a_quiet_404(
        tmp_path: Path, log_lines: _LogLines, path: str) -> None:
    with hostile_api(config(tmp_path)) as api:
        before = len(log_lines.lines)
        r = httpx.get(api.base + path)
        assert r.status_code == 404, (path, r.status_code, r.text)
        assert "0x" not in r.text and "Traceback" not in r.text
        written = log_lines.lines[before:]
        assert len(written) <= 1, written


def test_many_malformed_public_paths_write_at_most_a_line_each(
        tmp_path: Path, log_lines: _LogLines) -> None:
    with hostile_api(config(tmp_path)) as api:
        before = len(log_lines.lines)
        with httpx.Client(base_url=api.base) as client:
            for i in range(200):
                assert client.get(f"/1/{10**22 + i}/h/x").status_code == 404
        assert len(log_lines.lines) - before <= 200


def localize(base: str, token: str, template: str) -> httpx.Response:
    return httpx.post(f"{base}/api/v1/gallery/localize",
                      headers={"Authorization": f"Bearer {token}"},
                      json={"template": template}, timeout=60)


def test_a_template_with_more_urls_than_the_bound_is_413_naming_it(tmp_path: Path) -> None:
    template = " ".join(f'<img src="http://127.0.0.1:9/{i}.png">' for i in range(300))
    with hostile_api(config(tmp_path, allow='"127.0.0.1"')) as api:
        token = api.token("sender")
        t0 = time.monotonic()
        r = localize(api.base, token, template)
        took = time.monotonic() - t0
    assert r.status_code == 413, r.text
    assert "[gallery] localize_max_urls" in r.json()["error"]
    assert "300" in r.json()["error"]
    assert took < 5


@pytest.mark.parametrize("host", ["[::127.0.0.1]", "[::ffff:127.0.0.1]", "[::ffff:7f00:1]",
                                  "[64:ff9b::127.0.0.1]", "[2002:7f00:1::]", "[::10.0.0.1]",
                                  "127.0.0.1", "localhost"])
def test_loopback_in_disguise_is_refused_and_the_error_does_not_show_its_address(
        tmp_path: Path, host: str) -> None:
    with hostile_api(config(tmp_path)) as api:
        token = api.token("sender")
        r = localize(api.base, token, f'<img src="http://{host}:9/a.png">')
    assert r.status_code == 200, r.text
    [error] = r.json()["errors"]
    assert "allow_fetch_from" in error["error"], error
    assert host in error["url"]
    if host == "localhost":  # what the name resolved to is not said
        assert "127.0.0.1" not in error["error"] and "::1" not in error["error"]


@pytest.fixture
def tarpit() -> Iterator[int]:
    """A loopback port that accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except TimeoutError:
                continue
            except OSError:
                return

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield int(server.getsockname()[1])
    finally:
        stop.set()
        thread.join(timeout=5)
        for s in held:
            s.close()
        server.close()


def test_tarpit_urls_end_by_the_localize_deadline(tmp_path: Path, tarpit: int) -> None:
    template = " ".join(f"http://127.0.0.1:{tarpit}/{i}.png" for i in range(6))
    with hostile_api(config(tmp_path, allow='"127.0.0.1"', deadline=1.5)) as api:
        token = api.token("sender")
        with api.watch() as watch:
            t0 = time.monotonic()
            r = localize(api.base, token, template)
            took = time.monotonic() - t0
    print(f"\ntarpit: {took:.1f} s, stall {watch.stall:.3f} s")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["template"] == template
    assert len(body["errors"]) == 6
    assert all("localize_timeout" in e["error"] or "took longer" in e["error"]
               for e in body["errors"]), body["errors"]
    assert took < 4
    assert watch.stall < 0.1

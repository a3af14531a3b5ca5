"""What the console's browser tests share: a workspace served by ``herald serve`` (uvicorn on
asyncio, in a subprocess) on a loopback port, its gateway a ``herald simulate`` subprocess
that posts delivery receipts back (or the ``null`` driver), a generated audience
(``engine.demo.generate``), tokens of each role; and headless Debian Chromium through
Playwright, with every request that would leave loopback refused and recorded, and
screenshots saved to the test's ``tmp_path`` and to ``HERALD_ARTIFACTS`` when it is set.

The browser tests skip themselves without ``/usr/bin/chromium`` (``.ci/chromium`` installs
it) or the ``playwright`` package, as the gallery's does.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from engine.demo import generate
from engine.testing import create_token, in_workspace
from tests.servers import free_port, wait_healthy

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]

#: The marks of a test that drives Chromium: skipped, with the reason, when it cannot.
needs_chromium = [
    pytest.mark.skipif(not Path(CHROMIUM).exists(),
                       reason=f"no {CHROMIUM} (apt-get install chromium; see .ci/chromium)"),
    pytest.mark.skipif(importlib.util.find_spec("playwright") is None,
                       reason="the playwright package is not installed (pip install playwright)"),
]



def browser_test(test: Any) -> Any:
    """Mark ``test`` slow and skipped without Chromium or Playwright."""
    for mark in (pytest.mark.slow, *needs_chromium):
        test = mark(test)
    return test


WIDE = {"width": 1280, "height": 800}
PHONE = {"width": 375, "height": 800}

RECEIPT_SECRET = "console-test-receipt-secret"

CONFIG = """\
[engine]
database = "herald.db"
default_region = "RU"

[gateways.gw]
driver = "{driver}"
{gateway}
[virtual_senders.v]
rules = [{{ senders = [{rules}] }}]

[resources.news]
channel = "sms"
virtual_sender = "v"

[tracking]
domain = "127.0.0.1:{port}"
scheme = "http"
"""

SENDER = """\
[senders.{name}]
gateway = "gw"
caller_id = "ACME"
rate = {rate}
burst = {burst}
"""


@dataclass
class Console:
    """A served workspace: its base URL, config, a token per role, its gateway's URL."""

    base: str
    config: Path
    tokens: dict[str, str]
    gateway_url: str | None = None
    profiles: int = 0

    def client(self, role: str = "sender") -> httpx.Client:
        return httpx.Client(base_url=f"{self.base}/api/v1", timeout=10,
                            headers={"Authorization": f"Bearer {self.tokens[role]}"})


def _spawn(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    out = log.open("wb")
    try:
        return subprocess.Popen([sys.executable, "-m", "engine.cli", *args],
                                stdout=out, stderr=subprocess.STDOUT)
    finally:
        out.close()  # the child holds its own descriptor


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_listening(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text(errors="replace")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.05)
    raise AssertionError(f"{url} did not answer in 30 s")


@contextmanager
def served_console(directory: Path, *, profiles: int, senders: dict[str, float],
                   driver: str = "http", burst: int = 5, simulate: tuple[str, ...] = (),
                   ) -> Iterator[Console]:
    """``herald serve`` over a fresh workspace in ``directory``: ``profiles`` generated
    profiles in database ``main`` subscribed to resource ``news``, whose virtual sender
    splits evenly over ``senders`` (name: rate in segments per second). ``driver="http"``
    sends to a ``herald simulate`` (extra ``simulate`` options) that posts receipts back;
    ``"null"`` accepts everything at once."""
    port, sim_port = free_port(), free_port()
    base = f"http://127.0.0.1:{port}"
    gateway = ""
    if driver == "http":
        gateway = (f'url = "http://127.0.0.1:{sim_port}/send"\nbatch_size = 50\n'
                   f'receipt_secret = "{RECEIPT_SECRET}"\n')
    shares = [100 // len(senders)] * len(senders)
    shares[0] += 100 - sum(shares)
    rules = ", ".join(f'{{ sender = "{name}", percent = {share} }}'
                      for name, share in zip(senders, shares, strict=True))
    text = CONFIG.format(driver=driver, gateway=gateway, rules=rules, port=port)
    text += "".join(SENDER.format(name=name, rate=rate, burst=burst)
                    for name, rate in senders.items())
    config = directory / "herald.toml"
    config.write_text(text, encoding="utf-8")

    async def fill(store: Any) -> None:
        await generate(store, profiles=profiles, database="main", seed=7)

    in_workspace(config, fill)
    tokens = {role: create_token(config, role, name=f"{role} of the console test")
              for role in ("viewer", "sender", "admin")}
    with ExitStack() as stack:
        gateway_url = None
        if driver == "http":
            log = directory / "simulate.log"
            sim = _spawn(["simulate", "--port", str(sim_port), "--latency", "0.005",
                          "--receipt-url",
                          f"{base}/api/v1/dlr/gw?secret={RECEIPT_SECRET}",
                          "--receipt-delay", "0.3", "--undelivered-rate", "0.1",
                          "--reject-rate", "0.01", "--seed", "5", *simulate], log)
            stack.callback(_stop, sim)
            gateway_url = f"http://127.0.0.1:{sim_port}"
            _wait_listening(f"{gateway_url}/stats", sim, log)
        log = directory / "serve.log"
        server = _spawn(["--config", str(config), "serve", "--port", str(port),
                         "--backend", "asyncio"], log)
        stack.callback(_stop, server)
        try:
            wait_healthy(base, server)
        except AssertionError:
            raise AssertionError(log.read_text(errors="replace")) from None
        yield Console(base, config, tokens, gateway_url, profiles)


def wait_for(check: Any, what: str, timeout: float = 30, every: float = 0.1) -> Any:
    """``check()``'s first truthy answer, polled; fails naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        answer = check()
        if answer:
            return answer
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(every)


# -- the browser ---------------------------------------------------------------------


@dataclass
class Browsing:
    """One Chromium for a test; pages opened by ``open`` watch for problems: page errors,
    console errors, unexpected HTTP errors and requests to anywhere but loopback."""

    browser: Any
    shots: Path
    problems: list[str] = field(default_factory=list)
    outside: list[str] = field(default_factory=list)
    allowed_errors: set[int] = field(default_factory=set)

    def open(self, base: str, viewport: dict[str, int] = WIDE) -> Any:
        context = self.browser.new_context(viewport=viewport, base_url=base)
        context.route("**/*", self._only_loopback)
        page = context.new_page()
        page.set_default_timeout(15_000)
        page.on("pageerror", lambda err: self.problems.append(f"page error: {err}"))
        page.on("console", self._console)
        page.on("response", self._response)
        page.on("requestfailed", self._failed)
        return page

    def _only_loopback(self, route: Any) -> None:
        url = route.request.url
        parts = urlsplit(url)
        if parts.scheme in ("data", "blob") or parts.hostname in ("127.0.0.1", "localhost"):
            route.continue_()
        else:
            self.outside.append(url)
            route.abort("internetdisconnected")

    def _console(self, message: Any) -> None:
        # an HTTP error is also told as "Failed to load resource": _response judges those
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            self.problems.append(f"console: {message.text}")

    def _failed(self, request: Any) -> None:
        # ERR_ABORTED: the page let go of it (a live stream closed on leaving a view)
        if "ERR_ABORTED" not in (request.failure or ""):
            self.problems.append(f"failed: {request.method} {request.url}: {request.failure}")

    def _response(self, response: Any) -> None:
        if response.status >= 400 and response.status not in self.allowed_errors:
            self.problems.append(f"{response.status} {response.request.method} {response.url}")

    def shoot(self, page: Any, name: str, *, full_page: bool = True) -> Path:
        """Save a screenshot as ``name``.png (and into ``HERALD_ARTIFACTS``)."""
        path = self.shots / f"{name}.png"
        page.screenshot(path=str(path), full_page=full_page)
        artifacts = os.environ.get("HERALD_ARTIFACTS")
        if artifacts:
            Path(artifacts).mkdir(parents=True, exist_ok=True)
            shutil.copy(path, Path(artifacts) / path.name)
        return path


@contextmanager
def chromium(shots: Path) -> Iterator[Browsing]:
    """Headless Chromium for one test; at the end, no request may have left loopback."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                     args=CHROMIUM_ARGS)
        browsing = Browsing(browser, shots)
        try:
            yield browsing
        finally:
            browser.close()
    assert not browsing.outside, f"requests left loopback: {browsing.outside}"


def log_in(page: Any, token: str) -> None:
    """Open the console and give it ``token`` (as a user would: the field, then the button)."""
    from playwright.sync_api import expect

    page.goto("/console")
    page.locator("#token").fill(token)
    page.locator("#login").click()
    expect(page.locator("#logout")).to_be_visible()


def count(page: Any, key: str) -> int:
    """The figure the page shows for ``counts[key]`` (digits only: "1 234" is 1234)."""
    text = page.locator(f'[data-count="{key}"]').first.inner_text()
    digits = "".join(c for c in text if c.isdigit())
    return int(digits) if digits else 0

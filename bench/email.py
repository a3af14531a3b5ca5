"""Email messages rendered, signed and handed to a loopback SMTP sink, through the engine.

The issue's goal: at least 2,000 messages/s per core rendered, signed and handed to a
loopback SMTP sink in pipelined sessions. This runs ``Herald.send`` on a workspace of
``--profiles`` email profiles (SQLite in a temp dir, or ``--database``) whose resource
sends through the ``smtp`` driver, DKIM-signing each message (``--dkim rsa|ed25519|none``),
to a sink in ANOTHER process (``bench/email_smtp.py``'s raw asyncio sink: it answers all
the pipelined commands of one read in one write, so it costs little), so this process's
CPU is the engine's: the audience read, dedupe, render of the subject, HTML and text
version, short links and open pixel (``--no-tracking``: none), MIME, DKIM, SMTP, the
record of each message.

Printed: messages/s by the wall clock (of ``Herald.send``), this process's CPU seconds
per message (``time.process_time``: every thread of it) and messages/s per core (messages
/ CPU seconds), with the mailing log's busy times per stage.

    python bench/email.py [--profiles 20000] [--dkim rsa|ed25519|none] [--no-tracking]
                          [--connections 4] [--backend asyncio|trio] [--sink aiosmtpd|raw]
                          [--database postgresql://...]
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __name__ == "email":
    # Imported as ``email`` by another script of bench/ (its folder is sys.path[0]): be the
    # standard library's email package instead, which that import meant. The import system
    # hands back what sys.modules holds under the name once this module has run.
    import importlib
    import os

    _here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _here]
    del sys.modules[__name__]
    sys.modules[__name__] = importlib.import_module(__name__)

ROOT = Path(__file__).resolve().parents[1]

CONFIG = """
[engine]
database = {database}
batch_size = {batch}

[gateways.mail]
driver = "smtp"
host = "127.0.0.1"
port = {port}
security = "none"
connections = {connections}
messages_per_connection = {per}
{dkim}

[senders.news]
gateway = "mail"
from = "ACME News <news@example.com>"
reply_to = "help@example.com"
return_path = "bounces@bounces.example.com"
rate = 0

[virtual_senders.mail]
rules = [{{ senders = [{{ sender = "news" }}] }}]

[resources.letters]
channel = "email"
virtual_sender = "mail"
{tracking}
"""

TRACKING = """
[tracking]
domain = "t.example.com"
scheme = "https"
"""

SUBJECT = "{lead._fname}, our winter sale starts today 🎉❄️"

#: About 4 KB of HTML, as a newsletter's: a style block (inlined at compile time), a
#: greeting, a condition, a loop, three links, an image and the unsubscribe link.
HTML = """<!doctype html>
<html><head><meta charset="utf-8"><title>Winter sale</title>
<style>
  h1 { font: bold 24px Helvetica, Arial, sans-serif; color: #1a1a2e; margin: 0 0 12px; }
  p { font: 15px/1.5 Helvetica, Arial, sans-serif; color: #333333; margin: 0 0 10px; }
  a.button { background: #e94560; color: #ffffff; padding: 10px 18px;
             text-decoration: none; border-radius: 4px; }
  td.footer p { font-size: 12px; color: #888888; }
</style></head>
<body>
<table width="100%" cellpadding="0" cellspacing="0"><tr><td>
<h1>Hello {lead._fname}!</h1>
<p>{if lead._city equal "Moscow"}Our Moscow flagship opens late on Saturday, and the
first hundred visitors get a gift.{else}New arrivals reached {lead._city} this week: coats,
boots and scarves for the coldest days.{end}</p>
<p>{if lead.interests}Picked for you: {for item in lead.interests}{item}{if not
loop.last}, {end}{end}.{else}Tell us what you like and we will pick for you.{end}</p>
<p><a class="button" href="https://shop.example.com/sale?utm_source=email&amp;utm_campaign=winter">
Shop the sale</a></p>
<p>Free delivery on orders over 50 EUR until Sunday. Returns are free for 30 days, in any
shop or by post. Questions? <a href="https://shop.example.com/help?utm_source=email">Our
help centre</a> answers within the hour, every day from 8:00 to 22:00.</p>
<p><img src="https://cdn.example.com/winter/banner-600.jpg" width="600" height="200"
alt="Winter sale: up to 50% off"></p>
<p>Your loyalty points: {lead.loyalty}. Spend them on anything in the sale, online or in
the shops; they never expire while you shop with us at least once a year.</p>
<p><a href="https://shop.example.com/stores?utm_source=email">Find a shop near you</a></p>
</td></tr>
<tr><td class="footer">
<p>You get this email as a subscriber of ACME News. ACME Ltd, 1 Example Street, London.
<a href="{unsubscribe}">Unsubscribe</a> at any time, in one click.</p>
</td></tr></table>
</body></html>
"""

_FIRST = ["Anna", "Boris", "Chloé", "Dmitri", "Elena", "Farid", "Galina", "Hugo", "Irina"]
_CITIES = ["Moscow", "Saint Petersburg", "Kazan", "London", "Berlin"]
_INTERESTS = ["boots", "coats", "scarves", "gloves", "hats"]


def start_sink(kind: str) -> tuple[subprocess.Popen[str], int]:
    """``bench/email_smtp.py``'s sink in another process: (the process, its port)."""
    # -P: not bench/ first on its sys.path either (this file would be its ``email``)
    proc = subprocess.Popen([sys.executable, "-P", str(ROOT / "bench" / "email_smtp.py"),
                             "--sink", kind], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout is not None
    return proc, int(proc.stdout.readline())


def write_workspace(directory: Path, args: argparse.Namespace, port: int) -> Path:
    import importlib.util
    import json

    spec = importlib.util.spec_from_file_location("email_smtp", ROOT / "bench" / "email_smtp.py")
    assert spec is not None and spec.loader is not None
    email_smtp = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(email_smtp)
    dkim = ""
    key = email_smtp.key_file(args.dkim, directory)
    if key is not None:
        dkim = f'dkim_selector = "s1"\ndkim_key = "{key.name}"'
    config = directory / "herald.toml"
    config.write_text(CONFIG.format(
        database=json.dumps(args.database or "herald.db"), batch=args.batch, port=port,
        connections=args.connections, per=args.per_connection, dkim=dkim,
        tracking="" if args.no_tracking else TRACKING), encoding="utf-8")
    return config


async def fill(herald: Any, profiles: int) -> None:
    """Database ``readers``: ``profiles`` profiles, each a distinct address subscribed to
    ``letters``, in chunks of 10,000."""
    from engine.store.base import ImportRecord

    store = herald.store
    db = await store.database_id("readers", create=True)
    resource = await store.resource_id("letters")
    for start in range(0, profiles, 10_000):
        records = [ImportRecord(None, None, f"reader.{i}@example{i % 7}.net", {
            "_fname": _FIRST[i % len(_FIRST)], "_city": _CITIES[i % len(_CITIES)],
            "loyalty": (i * 37) % 5000, "interests": _INTERESTS[: i % 3]})
            for i in range(start, min(start + 10_000, profiles))]
        await store.import_profiles(db, records, matching="email", resource_id=resource,
                                    mode="add", channel="email")


async def bench(args: argparse.Namespace, port: int) -> None:
    from engine.plugins import load_plugins
    from engine.runner import Herald

    with tempfile.TemporaryDirectory(prefix="herald-bench-email-") as tmp:
        config = write_workspace(Path(tmp), args, port)
        async with await Herald.open(config, plugins=load_plugins()) as herald:
            t = time.perf_counter()
            await fill(herald, args.profiles)
            filled = time.perf_counter() - t
            wall, cpu = time.perf_counter(), time.process_time()
            log = await herald.send(resource="letters", database="readers",
                                    template=HTML, subject=SUBJECT, name="bench")
            cpu = time.process_time() - cpu
            wall = time.perf_counter() - wall
    n = log.sent
    assert (log.status, n, log.failed) == ("finished", args.profiles, 0), (
        log.status, n, log.failed)
    stages = ", ".join(f"{name} {seconds / n * 1e6:.0f}"
                       for name, seconds in log.stage_busy_s.items())
    tracking = "no tracking" if args.no_tracking else "short links + open pixel"
    print(f"{n:,} email messages, DKIM {args.dkim}, {tracking}, {args.connections} pipelined"
          f" sessions to a {args.sink} sink in another process ({args.backend}; profiles"
          f" imported in {filled:.1f}s):")
    print(f"  {n / wall:,.0f} msg/s (wall clock of Herald.send, {wall:.2f}s);"
          f" {cpu / n * 1e6:.0f} µs CPU per message in the Herald process ({cpu:.2f}s);"
          f" {n / cpu:,.0f} msg/s per core")
    print(f"  busy µs per message: {stages}; first submit {log.first_submit_ms or 0:.0f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--profiles", type=int, default=20_000)
    parser.add_argument("--dkim", choices=["rsa", "ed25519", "none"], default="rsa")
    parser.add_argument("--no-tracking", action="store_true",
                        help="no tracking domain: links as written, no open pixel")
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--per-connection", type=int, default=100,
                        help="messages per SMTP session before it is renewed")
    parser.add_argument("--batch", type=int, default=500, help="[engine] batch_size")
    parser.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    parser.add_argument("--sink", choices=["raw", "aiosmtpd"], default="raw",
                        help="the sink process: a minimal asyncio one, or aiosmtpd")
    parser.add_argument("--database", metavar="URL",
                        help="the store (default: SQLite in a temp dir)")
    args = parser.parse_args()
    # this file's name is the standard library's email package's: its folder must not be
    # where ``import email`` looks (run as a script, it is sys.path[0])
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
    sys.path[:0] = [str(ROOT), str(ROOT / "plugins")]
    from engine.backends import run as run_backend

    proc, port = start_sink(args.sink)
    try:
        run_backend(lambda: bench(args, port), args.backend)
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        proc.wait(10)
    sink = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(f"  the sink process: {sink.ru_utime + sink.ru_stime:.2f}s CPU")


if __name__ == "__main__":
    main()

"""A console on a cluster, for the browser tests of tests/test_console_more.py: a
PostgreSQL workspace with ``[cluster]``, two ``herald serve`` processes on two loopback
ports (the API processes an operator's browser may reach), one ``herald worker`` that does
all the sending, and a ``herald simulate`` gateway that posts its receipts to the first
serve. Built from tests/console_helpers.py's config and process helpers.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.demo import generate
from engine.testing import create_token, in_workspace
from tests.console_helpers import (
    CONFIG,
    RECEIPT_SECRET,
    SENDER,
    Console,
    _spawn,
    _stop,
    _wait_listening,
)
from tests.servers import free_port, wait_healthy

#: Small chunks, so that a few hundred profiles still make several leases.
CLUSTER = "\n[cluster]\nchunk_profiles = 100\nlease_ttl = 5\n"


@dataclass
class Cluster:
    """Two API processes over one store: ``a`` (receipts come to it) and ``b``."""

    a: Console
    b: Console
    worker_log: Path


@contextmanager
def cluster_console(directory: Path, pg_url: str, *, profiles: int,
                    senders: dict[str, float], burst: int = 5) -> Iterator[Cluster]:
    """A workspace on ``pg_url`` with ``[cluster]``: ``profiles`` generated profiles in
    database ``main`` subscribed to ``news``, whose virtual sender splits evenly over
    ``senders`` (name: rate); served by two ``herald serve`` and sent by one ``herald
    worker`` to a ``herald simulate``."""
    port_a, port_b, sim_port = free_port(), free_port(), free_port()
    base_a, base_b = f"http://127.0.0.1:{port_a}", f"http://127.0.0.1:{port_b}"
    gateway = (f'url = "http://127.0.0.1:{sim_port}/send"\nbatch_size = 50\n'
               f'receipt_secret = "{RECEIPT_SECRET}"\n')
    shares = [100 // len(senders)] * len(senders)
    shares[0] += 100 - sum(shares)
    rules = ", ".join(f'{{ sender = "{name}", percent = {share} }}'
                      for name, share in zip(senders, shares, strict=True))
    text = CONFIG.format(driver="http", gateway=gateway, rules=rules, port=port_a)
    text = text.replace('database = "herald.db"', f'database = "{pg_url}"')
    text += "".join(SENDER.format(name=name, rate=rate, burst=burst)
                    for name, rate in senders.items())
    text += CLUSTER
    config = directory / "herald.toml"
    config.write_text(text, encoding="utf-8")

    async def fill(store: Any) -> None:
        await generate(store, profiles=profiles, database="main", seed=7)

    in_workspace(config, fill)
    tokens = {role: create_token(config, role, name=f"{role} of the cluster console test")
              for role in ("viewer", "sender", "admin")}
    with ExitStack() as stack:
        log = directory / "simulate.log"
        sim = _spawn(["simulate", "--port", str(sim_port), "--latency", "0.005",
                      "--receipt-url", f"{base_a}/api/v1/dlr/gw?secret={RECEIPT_SECRET}",
                      "--receipt-delay", "0.3", "--undelivered-rate", "0.1",
                      "--reject-rate", "0.01", "--seed", "5"], log)
        stack.callback(_stop, sim)
        gateway_url = f"http://127.0.0.1:{sim_port}"
        _wait_listening(f"{gateway_url}/stats", sim, log)
        for name, port, base in (("a", port_a, base_a), ("b", port_b, base_b)):
            log = directory / f"serve-{name}.log"
            server = _spawn(["--config", str(config), "serve", "--port", str(port),
                             "--backend", "asyncio"], log)
            stack.callback(_stop, server)
            try:
                wait_healthy(base, server)
            except AssertionError:
                raise AssertionError(log.read_text(errors="replace")) from None
        worker_log = directory / "worker.log"
        worker = _spawn(["--config", str(config), "worker"], worker_log)
        stack.callback(_stop, worker)
        yield Cluster(Console(base_a, config, tokens, gateway_url, profiles),
                      Console(base_b, config, tokens, gateway_url, profiles), worker_log)

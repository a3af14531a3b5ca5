"""A workspace for load-testing ``herald serve``: config, audience and a sender token.

    python bench/api_workspace.py /tmp/herald-load --profiles 100000

Writes DIR/herald.toml (one sender on an ``http`` gateway at the simulator's
http://127.0.0.1:8025/send), generates the audience in database ``customers`` (resource
``news``), and prints ``export HERALD_TOKEN=...`` for the locustfile. See README, "Load".
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from engine.api.tokens import TokenStore
from engine.demo import generate
from engine.store.base import Store
from engine.store.models import AudienceSource
from engine.testing import in_workspace

CONFIG = """\
[engine]
database = "herald.db"
default_region = "RU"

[gateways.sim]
driver = "http"
url = "http://127.0.0.1:{port}/send"
batch_size = 100

[senders.main]
gateway = "sim"
caller_id = "LOAD"

[virtual_senders.v]
rules = [{{ senders = [{{ sender = "main" }}] }}]

[resources.news]
virtual_sender = "v"
databases = ["customers"]
"""


async def setup(store: Store, profiles: int) -> str:
    """The audience (unless there is one) and a token for locust; the token's secret."""
    database_id = await store.database_id("customers", create=True)
    if not await store.count_audience(AudienceSource("list", database_id)):
        await generate(store, profiles=profiles, database="customers", messy=False)
    return (await TokenStore(store).create("sender", name="locust"))[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dir", type=Path)
    parser.add_argument("--profiles", type=int, default=100_000)
    parser.add_argument("--simulator-port", type=int, default=8025)
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    (args.dir / "herald.toml").write_text(CONFIG.format(port=args.simulator_port),
                                          encoding="utf-8")
    token = in_workspace(args.dir / "herald.toml", lambda store: setup(store, args.profiles))
    print(f"workspace: {args.dir}", file=sys.stderr)
    print(f"export HERALD_TOKEN={token}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

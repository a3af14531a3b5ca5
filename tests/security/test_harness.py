"""The watch itself: it sees a stall the server's loop really had (it can fail)."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from engine.testing import write_config
from tests.security.harness import hostile_api


def test_the_heartbeat_sees_a_blocked_loop_and_a_quiet_one(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    with hostile_api(config) as api:
        with api.watch() as quiet:
            assert httpx.get(f"{api.base}/healthz").status_code == 200
        assert quiet.beats > 0 and quiet.stall < 0.1
        # a sync sleep on the server's loop is what a compile on the loop looks like
        with api.watch() as blocked:
            t0 = time.monotonic()
            api.block_loop(0.3)
            assert time.monotonic() - t0 >= 0.3
        assert blocked.stall >= 0.25

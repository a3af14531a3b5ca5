"""Load test of ``herald serve``: users trigger sends and import profiles.

Headless, against a server wired to the gateway simulator (see README, "Load testing")::

    HERALD_TOKEN=... locust -f bench/locustfile.py --headless -u 64 -r 64 -t 30s \\
        -H http://127.0.0.1:8080 --csv /tmp/herald-load/locust

At start one trigger mailing is created (``LOCUST_MAILING`` reuses an existing one). Most
users call ``POST /api/v1/mailings/{id}/trigger`` for a random profile of the generated
audience (``LOCUST_PROFILES``, default 100000); one in twenty imports ten profiles. Users
call again as soon as they are answered (``LOCUST_WAIT`` seconds at most in between).
"""

from __future__ import annotations

import os
import random
import uuid
from typing import Any

from locust import FastHttpUser, between, events, task

TOKEN = os.environ.get("HERALD_TOKEN", "")
PROFILES = int(os.environ.get("LOCUST_PROFILES", "100000"))
#: Seconds each user waits between calls, at most (0: as fast as answers come).
WAIT = float(os.environ.get("LOCUST_WAIT", "0"))
HEADERS = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
STATE: dict[str, Any] = {"mailing": os.environ.get("LOCUST_MAILING")}


@events.test_start.add_listener
def create_mailing(environment: Any, **_: Any) -> None:
    if STATE["mailing"] or environment.host is None:
        return
    import httpx

    answer = httpx.post(
        f"{environment.host}/api/v1/mailings", headers=HEADERS, timeout=30, json={
            "name": "locust triggers", "kind": "trigger", "resource": "news",
            "database": "customers",
            "template": "Hi {lead._fname}, your code is {apicontent.code}",
        },
    )
    answer.raise_for_status()
    STATE["mailing"] = answer.json()["id"]


class Platform(FastHttpUser):
    """A platform backend calling Herald: mostly triggers, sometimes an import."""

    wait_time = between(0, WAIT)

    @task(20)
    def trigger(self) -> None:
        self.client.post(
            f"/api/v1/mailings/{STATE['mailing']}/trigger", headers=HEADERS,
            json={"profile_id": random.randint(1, PROFILES),
                  "content": {"code": f"{random.randrange(10**6):06d}"},
                  "idempotency_key": uuid.uuid4().hex},
            name="/api/v1/mailings/{id}/trigger",
        )

    @task(1)
    def import_profiles(self) -> None:
        base = random.randrange(10**8)
        self.client.post(
            "/api/v1/profiles/import", headers=HEADERS, json={
                "database": "customers", "matching": "phone", "resource": "news",
                "mode": "upsert",
                "profiles": [{"phone": f"+7915{base + i:07d}"[:12], "_fname": "Load"}
                             for i in range(10)],
            },
        )

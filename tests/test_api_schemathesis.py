"""Property tests against ``/openapi.json``: schemathesis generates requests for every
operation (valid ones and broken ones); no answer may be a 5xx, and every answer must be
one the document describes (status, content type, body schema).

The app is served by Hypercorn on a loopback port, from a thread of this process, over a
workspace with a few profiles, a trigger mailing (id 1) and a draft broadcast (id 2), so
that generated ids sometimes hit something. Bounded: ``MAX_EXAMPLES`` per operation.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import negative_data_rejection, positive_data_acceptance

from engine.testing import write_config
from tests.servers import served_api

MAX_EXAMPLES = 40


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(base URL, an admin token) of a seeded workspace's API."""
    workspace = tmp_path_factory.mktemp("schemathesis")
    with served_api(write_config(workspace, default_region="RU"), "admin") as (base, secret):
        _seed(base, secret)
        yield base, secret


def _seed(base: str, secret: str) -> None:
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {secret}"}) as c:
        c.post("/api/v1/profiles/import", json={
            "database": "main", "matching": "phone", "resource": "news",
            "profiles": [{"phone": f"+7916123450{i}"} for i in range(5)],
        }).raise_for_status()
        for kind in ("trigger", "broadcast"):
            c.post("/api/v1/mailings", json={
                "name": kind, "kind": kind, "resource": "news", "database": "main",
                "template": "Hi {lead._fname} {apicontent.code}",
            }).raise_for_status()


@pytest.fixture(scope="module")
def api_schema(served: tuple[str, str]) -> Any:
    base, secret = served
    return schemathesis.openapi.from_url(
        f"{base}/openapi.json", headers={"Authorization": f"Bearer {secret}"}
    )


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_no_input_makes_a_5xx(case: Any, served: tuple[str, str]) -> None:
    """Every default check but two: schema-valid bodies that name an unknown resource, or a
    trigger that names no profile, are refused with a 4xx on purpose; and unknown query
    parameters are ignored, as most HTTP APIs do, where schemathesis wants them refused."""
    _, secret = served
    case.call_and_validate(headers={"Authorization": f"Bearer {secret}"},
                           excluded_checks=[positive_data_acceptance, negative_data_rejection])

"""Property tests against ``/openapi.json``: schemathesis generates requests for every
operation (valid ones and broken ones); no answer may be a 5xx, and every answer must be
one the document describes (status, content type, body schema).

The app is served by Hypercorn on a loopback port, from a thread of this process, over a
workspace with a few profiles, a trigger mailing (id 1) and a draft broadcast (id 2), so
that generated ids sometimes hit something. Bounded: ``MAX_EXAMPLES`` per operation.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import msgspec
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
    # schemathesis sends thousands of bad tokens on purpose: no 429 for those here
    config = write_config(workspace, default_region="RU",
                          extra="\n[api]\nauth_failures_per_minute = 1000000\n")
    with served_api(config, "admin") as (base, secret):
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


# -- hostile examples ---------------------------------------------------------------------
# Bodies and ids no generator would think of, sent to every operation the document lists:
# each body to every POST/PUT/PATCH, each field of a body's schema poisoned in turn, each
# path parameter replaced by a malformed id. A 4xx is the right answer; a 5xx (or a dropped
# connection) is a failure, reported with every route it happened on.

DEEP = 10_000
HOSTILE_BODIES: dict[str, bytes] = {
    "nested arrays": b"[" * DEEP + b"]" * DEEP,
    "nested objects": b'{"a":' * DEEP + b"1" + b"}" * DEEP,
    "many keys": b"{" + b",".join(b'"k%d":%d' % (i, i) for i in range(200_000)) + b"}",
    "long string": b'{"name":"' + b"x" * 1_000_000 + b'"}',
    "huge integer": b'{"id":' + b"9" * 5000 + b"}",
    "nul bytes": b'{"name":"a\\u0000b","template":"\\u0000"}',
    "raw nul": b'{"name":"a\x00b"}',
    "invalid utf-8": b'{"name":"\xff\xfe\xc3\x28"}',
    "lone surrogate": b'{"name":"\\ud800"}',
    "not json": b"\x00\x01\x02 not json",
    "empty": b"",
}
HOSTILE_VALUES: dict[str, Any] = {
    "1M chars": "x" * 1_000_000,
    "nul": "a\x00b",
    "negative": -1,
    "past int64": 2**63,
    "huge negative": -(10**30),
    "deep list": "DEEP",  # spliced in as raw JSON below
}
HOSTILE_IDS = ["99999999999999999999999", "-1", "0", "1e3", "abc", "%00", "9" * 1000,
               "%C0%AF", "1.5"]


@pytest.fixture(scope="module")
def document(served: tuple[str, str]) -> dict[str, Any]:
    base, secret = served
    spec: dict[str, Any] = httpx.get(
        f"{base}/openapi.json", headers={"Authorization": f"Bearer {secret}"}
    ).raise_for_status().json()
    return spec


def _operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(method.upper(), path, op) for path, item in spec["paths"].items()
            for method, op in item.items()
            if method in ("get", "post", "put", "patch", "delete")]


def _fill(path: str, value: str = "1") -> str:
    return re.sub(r"\{[^}]+\}", value, path)


def _properties(spec: dict[str, Any], op: dict[str, Any]) -> list[str]:
    schema = (op.get("requestBody", {}).get("content", {})
              .get("application/json", {}).get("schema", {}))
    while "$ref" in schema:
        ref: str = schema["$ref"]
        schema = spec
        for part in ref.split("/")[1:]:
            schema = schema[part]
    return list(schema.get("properties", {}))


def _send(client: httpx.Client, method: str, url: str, body: bytes | None) -> str | None:
    """None if the answer is not a 5xx, else what went wrong."""
    try:
        answer = client.request(method, url, content=body,
                                headers={"Content-Type": "application/json"})
    except httpx.HTTPError as err:
        return f"{method} {url}: {type(err).__name__}"
    return f"{method} {url}: {answer.status_code}" if answer.status_code >= 500 else None


@pytest.fixture(scope="module")
def client(served: tuple[str, str]) -> Iterator[httpx.Client]:
    base, secret = served
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {secret}"},
                      timeout=60) as c:
        yield c


@pytest.mark.parametrize("kind", list(HOSTILE_BODIES))
def test_hostile_bodies_make_no_5xx(kind: str, document: dict[str, Any],
                                    client: httpx.Client) -> None:
    failures = [f for method, path, _ in _operations(document)
                if method in ("POST", "PUT", "PATCH")
                and (f := _send(client, method, _fill(path), HOSTILE_BODIES[kind]))]
    assert failures == []


@pytest.mark.parametrize("kind", list(HOSTILE_VALUES))
def test_hostile_field_values_make_no_5xx(kind: str, document: dict[str, Any],
                                          client: httpx.Client) -> None:
    value = HOSTILE_VALUES[kind]
    raw = (b"[" * DEEP + b"]" * DEEP) if value == "DEEP" else msgspec.json.encode(value)
    failures = []
    for method, path, op in _operations(document):
        if method not in ("POST", "PUT", "PATCH") or "requestBody" not in op:
            continue
        for name in _properties(document, op):
            body = b'{"' + name.encode() + b'":' + raw + b"}"
            if f := _send(client, method, _fill(path), body):
                failures.append(f"{f} ({name})")
    assert failures == []


@pytest.mark.parametrize("bad_id", HOSTILE_IDS)
def test_malformed_ids_in_paths_make_no_5xx(bad_id: str, document: dict[str, Any],
                                            client: httpx.Client) -> None:
    failures = [f for method, path, _ in _operations(document) if "{" in path
                and (f := _send(client, method, _fill(path, bad_id),
                                b"{}" if method in ("POST", "PUT", "PATCH") else None))]
    assert failures == []

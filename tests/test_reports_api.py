"""``GET /api/v1/reports/*`` in-process (httpx's ASGI transport) on both stores: the
viewer's JSON, downloads by ``format`` or ``Accept``, and the 4xx answers naming the
parameter."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator, Callable
from typing import Any, NamedTuple

import httpx
import pytest

from engine.api import TokenStore, create_app
from engine.reports.output import MEDIA_TYPES
from tests.test_reports import (
    PROMO,
    PROMO_ROW,
    REASONS_CSV,
    SPRING,
    SPRING_CSV,
    SPRING_REASONS,
    Seeded,
    seed,
)

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("any_store")]


class Api(NamedTuple):
    client: httpx.AsyncClient
    ids: Seeded
    #: role -> a token's secret
    tokens: dict[str, str]

    async def get(self, path: str, role: str | None = "viewer", **kw: Any) -> httpx.Response:
        headers = {**kw.pop("headers", {})}
        if role is not None:
            headers["Authorization"] = f"Bearer {self.tokens[role]}"
        return await self.client.get(f"/api/v1/reports/{path}", headers=headers, **kw)


@pytest.fixture
async def api(open_herald: Callable[..., Any]) -> AsyncIterator[Api]:
    async with await open_herald(extra=PROMO) as herald:
        ids = await seed(herald.store)
        tokens = TokenStore(herald.store)
        secrets = {role: (await tokens.create(role))[1] for role in ("admin", "viewer")}
        transport = httpx.ASGITransport(create_app(herald))
        async with httpx.AsyncClient(transport=transport, base_url="http://herald") as client:
            yield Api(client, ids, secrets)


async def test_a_viewer_reads_the_reports_as_json(api: Api) -> None:
    one = {"mailing": api.ids.spring}
    r = await api.get("channel", params=one)
    assert r.status_code == 200, r.text
    assert r.json() == {"rows": [SPRING]}
    r = await api.get("undeliveries", params=one)
    assert r.json() == {"rows": SPRING_REASONS}
    r = await api.get("clicks", params=one)
    assert r.json() == {"rows": [{"url": "https://shop.example/sale", "clicks": 3,
                                  "unique_clicks": 2, "share": 0.25}]}
    r = await api.get("channel", params={"by": "mailing",
                                         "mailing": [api.ids.spring, api.ids.promo]})
    assert r.json()["rows"] == [{"mailing_id": api.ids.spring, "mailing": "spring", **SPRING},
                                {"mailing_id": api.ids.promo, "mailing": "promo", **PROMO_ROW}]
    r = await api.get("channel", params={"resource": "promo", "since": "2000-01-01",
                                         "until": "2999-01-01T00:00+03:00"})
    assert r.json() == {"rows": [PROMO_ROW]}


async def test_csv_and_xlsx_are_downloads(api: Api) -> None:
    one = {"mailing": api.ids.spring}
    r = await api.get("channel", params={**one, "format": "csv"})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/csv")
    assert r.headers["content-disposition"] == 'attachment; filename="channel-report.csv"'
    assert r.text == SPRING_CSV
    r = await api.get("undeliveries", params=one, headers={"Accept": "text/csv"})
    assert r.headers["content-type"].startswith("text/csv") and r.text == REASONS_CSV
    r = await api.get("undeliveries", params=one, headers={"Accept": MEDIA_TYPES["xlsx"]})
    assert r.headers["content-type"] == MEDIA_TYPES["xlsx"]
    from openpyxl import load_workbook

    sheet = load_workbook(io.BytesIO(r.content)).active
    assert sheet is not None
    assert list(sheet.iter_rows(values_only=True))[1] == ("absent subscriber", 2, 0.5)
    r = await api.get("clicks", params={**one, "format": "xlsx"})
    assert "clicks-report.xlsx" in r.headers["content-disposition"]
    # format= wins over Accept; a browser's Accept gets JSON
    r = await api.get("channel", params={**one, "format": "json"},
                      headers={"Accept": "text/csv"})
    assert r.json() == {"rows": [SPRING]}
    r = await api.get("channel", params=one, headers={
        "Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"})
    assert r.json() == {"rows": [SPRING]}
    rows = list(csv.DictReader(io.StringIO(
        (await api.get("channel", params={"by": "resource", "format": "csv"})).text)))
    assert [(row["resource"], row["recipients"]) for row in rows] == [("news", "8"),
                                                                      ("promo", "2")]


async def test_a_token_is_needed(api: Api) -> None:
    r = await api.get("channel", role=None)
    assert r.status_code == 401
    assert (await api.get("channel", role="admin")).status_code == 200


@pytest.mark.parametrize(("params", "status", "field", "says"), [
    ({"since": "yesterday"}, 400, "since", "not a date"),
    ({"until": "2024-02-30"}, 400, "until", "not a date"),
    ({"since": "2024-05-02", "until": "2024-05-01"}, 400, "until", "later than since"),
    ({"mailing": "999"}, 404, "mailing", "no mailing 999"),
    ({"mailing": "x"}, 400, "mailing", ""),
    ({"mailing": "0"}, 400, "mailing", "not a mailing id"),
    ({"resource": "nope"}, 404, "resource", "no resource 'nope'"),
    ({"by": "week"}, 400, "by", ""),
    ({"format": "pdf"}, 400, "format", ""),
])
async def test_bad_parameters_are_named(
    api: Api, params: dict[str, str], status: int, field: str, says: str
) -> None:
    r = await api.get("channel", params=params)
    assert r.status_code == status, r.text
    assert r.json()["field"] == field
    assert says in r.json()["error"]


async def test_the_openapi_document_lists_the_downloads(api: Api) -> None:
    r = await api.client.get("/openapi.json",
                             headers={"Authorization": f"Bearer {api.tokens['viewer']}"})
    paths = r.json()["paths"]
    for name in ("channel", "undeliveries", "clicks"):
        operation = paths[f"/api/v1/reports/{name}"]["get"]
        assert set(operation["responses"]["200"]["content"]) == {
            "application/json", MEDIA_TYPES["csv"], MEDIA_TYPES["xlsx"]}
        assert {p["name"] for p in operation["parameters"]} >= {
            "mailing", "resource", "since", "until", "format"}
    channel = paths["/api/v1/reports/channel"]["get"]
    assert "by" in {p["name"] for p in channel["parameters"]}

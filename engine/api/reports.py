"""``GET /api/v1/reports/{channel,undeliveries,clicks}`` (role viewer): the channel's
reports, as ``herald report`` gives them.

Query parameters: ``mailing`` (repeatable), ``resource``, ``channel`` (``sms`` or
``email``: the mailings'), ``since``, ``until`` (``YYYY-MM-DD`` or an ISO datetime, UTC
unless it has an offset; ``until`` exclusive) and, for the channel report, ``by`` (day,
hour, mailing, resource, sender, variant). The channel report of email (``channel=email``,
or the ``resource`` of an email resource) has the email counts and rates too. The answer is JSON
``{"rows": [...]}``; ``format=csv|xlsx``, or an ``Accept`` header preferring ``text/csv``
or the xlsx type, makes it a download (``Content-Disposition: attachment``). A bad value
is a 400 naming its parameter; an unknown mailing or resource a 404 naming it. The
counters are kept by the UTC hour: ``since``/``until`` count every hour with a part in the
range (exact for dates and whole hours).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

import msgspec
from litestar import Response, get
from litestar.openapi.spec import OpenAPIMediaType, Operation, Schema
from litestar.openapi.spec.enums import OpenAPIFormat, OpenAPIType
from litestar.params import FromQuery, QueryParameter

from engine.api.auth import guarded
from engine.api.errors import ApiError
from engine.api.state import MAX_ID, Req, api_state
from engine.reports import (
    MEDIA_TYPES,
    Channel,
    Grouping,
    Report,
    channel_report,
    clicks_report,
    is_email,
    parse_time,
    render,
    report_filter,
    undeliveries_report,
    unknown_name,
)
from engine.reports.output import FileFormat
from engine.store.base import ReportFilter

__all__ = ["ROUTES", "ChannelReport", "ClickReport", "UndeliveryReport"]

UNSET = msgspec.UNSET
Unset = msgspec.UnsetType


class ChannelReportRow(msgspec.Struct, kw_only=True):
    """One key of the channel report; the key's field is there only when grouping by it
    (``mailing_id`` and ``mailing``, the mailing's name, for ``by=mailing``)."""

    day: str | Unset = UNSET
    hour: str | Unset = UNSET
    mailing_id: int | Unset = UNSET
    mailing: str | Unset | None = UNSET
    resource: str | Unset = UNSET
    sender: str | Unset = UNSET
    #: The variant (1-based) of a multivariate mailing's runs, for ``by=variant``.
    variant: int | Unset = UNSET
    recipients: int
    sent: int
    delivered: int
    undelivered: int
    failed: int
    unknown: int
    segments: int
    clicks: int
    unique_clicks: int
    unsubscribed: int
    #: Profiles held out in a control group (skipped; no recipient of any sender).
    control: int = 0
    #: delivered / sent, to 4 places (null when nothing was sent).
    delivery_rate: float | None
    #: unique clicks / delivered, to 4 places (null when nothing was delivered).
    ctr: float | None
    #: The email channel's (only in its report): people's opens (no prefetches, no
    #: bots) and first opens, hard and soft bounces, complaints.
    opens: int | Unset = UNSET
    unique_opens: int | Unset = UNSET
    hard_bounced: int | Unset = UNSET
    soft_bounced: int | Unset = UNSET
    complaints: int | Unset = UNSET
    #: Email: unique opens / delivered, and unique clicks / unique opens, to 4 places.
    open_rate: float | Unset | None = UNSET
    ctor: float | Unset | None = UNSET


class UndeliveryRow(msgspec.Struct):
    #: The provider's reason, normalised; ``undefined`` when the gateway gave none.
    reason: str
    count: int
    #: count / all undeliveries of the report.
    share: float | None


class ClickRow(msgspec.Struct):
    url: str
    clicks: int
    unique_clicks: int
    #: unique clickers / recipients of the same filter (null with no recipients).
    share: float | None


class ChannelReport(msgspec.Struct):
    rows: list[ChannelReportRow]


class UndeliveryReport(msgspec.Struct):
    rows: list[UndeliveryRow]


class ClickReport(msgspec.Struct):
    rows: list[ClickRow]


_ANSWERS: dict[str, type[Any]] = {
    "channel": ChannelReport, "undeliveries": UndeliveryReport, "clicks": ClickReport,
}


@dataclass
class _DownloadOperation(Operation):
    """The 200 answer's other content types: a CSV or an xlsx download."""

    def __post_init__(self) -> None:
        ok = (self.responses or {}).get("200")
        content = getattr(ok, "content", None)
        if content is not None:
            content[MEDIA_TYPES["csv"]] = OpenAPIMediaType(schema=Schema(type=OpenAPIType.STRING))
            content[MEDIA_TYPES["xlsx"]] = OpenAPIMediaType(
                schema=Schema(type=OpenAPIType.STRING, format=OpenAPIFormat.BINARY))


Mailings = Annotated[list[int] | None, QueryParameter(
    description="only these mailings (repeat the parameter for several; default all)")]
Resource = Annotated[str | None, QueryParameter(
    min_length=1, max_length=200, description="only this resource's mailings")]
ChannelParam = Annotated[Channel | None, QueryParameter(
    description="only the mailings of this channel (sms or email)")]
Since = Annotated[str | None, QueryParameter(
    min_length=1, max_length=64,
    description="from this moment: YYYY-MM-DD (midnight UTC) or an ISO datetime")]
Until = Annotated[str | None, QueryParameter(
    min_length=1, max_length=64,
    description="up to this moment, excluded: YYYY-MM-DD or an ISO datetime")]
Fmt = Annotated[Literal["json", "csv", "xlsx"] | None, QueryParameter(
    description="csv or xlsx: a download (default: by Accept, else json)")]


def _time(text: str | None, name: str) -> float | None:
    if text is None:
        return None
    try:
        return parse_time(text)
    except ValueError as err:
        raise ApiError(400, str(err), name) from None


async def _filter(request: Req, mailing: list[int] | None, resource: str | None,
                  since: str | None, until: str | None,
                  channel: str | None = None) -> ReportFilter:
    for mailing_id in mailing or ():
        if not 1 <= mailing_id <= MAX_ID:
            raise ApiError(400, f"not a mailing id: {mailing_id}", "mailing")
    try:
        where = report_filter(mailings=mailing or (), resource=resource,
                              since=_time(since, "since"), until=_time(until, "until"),
                              channel=channel)
    except ValueError as err:
        raise ApiError(400, str(err), "until") from None
    state = api_state(request)
    unknown = await unknown_name(state.store, state.herald.config.resources, where)
    if unknown is not None:
        raise ApiError(404, unknown[1], unknown[0])
    return where


_BY_TYPE: dict[str, FileFormat] = {MEDIA_TYPES[f]: f for f in ("json", "csv", "xlsx")}


def _format(request: Req, fmt: FileFormat | None) -> FileFormat:
    if fmt is not None:
        return fmt
    best = request.accept.best_match(
        list(_BY_TYPE), default=MEDIA_TYPES["json"])
    return _BY_TYPE.get(best or "", "json")


def _answer(report: Report, fmt: FileFormat) -> Response[Any]:
    if fmt == "json":
        return Response(msgspec.convert({"rows": report.rows}, _ANSWERS[report.name]))
    return Response(render(report, fmt), media_type=MEDIA_TYPES[fmt], headers={
        "Content-Disposition": f'attachment; filename="{report.name}-report.{fmt}"'})


_ROUTE: dict[str, Any] = {**guarded("viewer", 400, 404), "tags": ["reports"],
                          "operation_class": _DownloadOperation}


@get("/reports/channel", **_ROUTE, summary="The channel report")
async def report_channel(
    request: Req, mailing: Mailings = None, resource: Resource = None, since: Since = None,
    until: Until = None, by: FromQuery[Grouping | None] = None, format: Fmt = None,
    channel: ChannelParam = None,
) -> Response[ChannelReport]:
    """Recipients, sent, delivered, undelivered, failed, unknown, segments, clicks,
    unique_clicks, unsubscribed, delivery_rate (delivered / sent) and ctr (unique clicks /
    delivered): in all, or per ``by`` key. Of email, also opens, unique_opens,
    hard_bounced, soft_bounced, complaints, open_rate (unique opens / delivered) and ctor
    (unique clicks / unique opens)."""
    where = await _filter(request, mailing, resource, since, until, channel)
    out = _format(request, format)
    state = api_state(request)
    email = is_email(where, state.herald.config.resources)
    return _answer(await channel_report(state.store, where, by, email=email), out)


@get("/reports/undeliveries", **_ROUTE, summary="Undeliveries by reason")
async def report_undeliveries(
    request: Req, mailing: Mailings = None, resource: Resource = None, since: Since = None,
    until: Until = None, format: Fmt = None, channel: ChannelParam = None,
) -> Response[UndeliveryReport]:
    """Undeliveries by the provider's reason (normalised; ``undefined`` when the gateway
    gave none), most first, with each one's share."""
    where = await _filter(request, mailing, resource, since, until, channel)
    out = _format(request, format)
    return _answer(await undeliveries_report(api_state(request).store, where), out)


@get("/reports/clicks", **_ROUTE, summary="The click map")
async def report_clicks(
    request: Req, mailing: Mailings = None, resource: Resource = None, since: Since = None,
    until: Until = None, format: Fmt = None, channel: ChannelParam = None,
) -> Response[ClickReport]:
    """People's clicks per URL (bots left out), most unique clicks first; share is the
    unique clickers over the recipients."""
    where = await _filter(request, mailing, resource, since, until, channel)
    out = _format(request, format)
    return _answer(await clicks_report(api_state(request).store, where), out)


ROUTES = [report_channel, report_undeliveries, report_clicks]

"""Mailings: create (broadcast, regular, multivariate or trigger; at once, ``at`` a time or
on a ``schedule``), list, status with live progress and runs, start, pause, resume,
cancel, test sends, the pick of a winner, and the mailing log of the latest run.

``POST /api/v1/mailings``, ``GET /api/v1/mailings``, ``GET /api/v1/mailings/{id}``,
``POST /api/v1/mailings/{id}/start|pause|resume|cancel``, ``GET /api/v1/mailings/{id}/log``,
``POST /api/v1/mailings/{id}/test`` (``{"to": [...], "profile_id": N}``),
``POST /api/v1/mailings/{id}/pick`` (``{"variant": N}``, from 1).

The fields of a new mailing are ``herald mailing create``'s options under the same names
(``wait`` in seconds; an email resource's ``subject``, ``template`` its HTML and
``text``); ``GET /api/v1/mailings/{id}`` lists the runs as ``herald mailing
show --json`` does (``engine.mailing_view.describe``).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from litestar import HttpMethod, Request, Response, get, post, route
from litestar.connection import ASGIConnection
from litestar.handlers import BaseRouteHandler
from litestar.params import JSONBody, PathParameter
from litestar.types import ControllerRouterHandler
from msgspec import Meta

from engine.api.auth import guarded
from engine.api.bounds import check_document, deep_error
from engine.api.errors import ApiError, decode_error, field_of
from engine.api.state import MAX_ID, Req, api_state, service_of
from engine.core.policy import Policy
from engine.errors import InputError, TemplateError
from engine.mailing_log import MailingLog
from engine.mailing_view import RunView, TrialRun, describe, trial_runs
from engine.mailings import template_part
from engine.service import MailingSpec, MailingStatus
from engine.store.models import MailingOptions

__all__ = ["ROUTES", "MailingCreate", "MailingDetail", "MailingId", "MailingList",
           "PickBody", "TestAnswer", "TestBody"]

Name = Annotated[str, Meta(min_length=1, max_length=200)]
Template = Annotated[str, Meta(min_length=1, max_length=100_000)]
Subject = Annotated[str, Meta(min_length=1, max_length=2_000)]
#: A wall-clock time where the schedule's ``timezone`` is, ``2026-12-24T10:00``.
WallClock = Annotated[str, Meta(min_length=1, max_length=40)]
Percent = Annotated[float, Meta(ge=0, le=100)]
Phone = Annotated[str, Meta(min_length=1, max_length=64)]
#: Runs (launches, tests) ``GET /api/v1/mailings/{id}`` lists, the newest: each is a
#: count of its recipients, and clients poll it.
DETAIL_RUNS = 20
#: A mailing id in a path.
MailingId = Annotated[int, PathParameter(ge=1, le=MAX_ID, description="the mailing's id")]


class MailingCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A new mailing. A ``broadcast`` goes to its audience (``database`` or ``segment``)
    when started, or ``at`` its time; a ``regular`` one at each time of its ``schedule``
    (cron), a run over the audience as it is then; a ``multivariate`` one sends its 2 to
    8 ``templates`` to ``test_share`` percent of the audience, then the winner to the
    rest; a ``trigger`` mailing sends one message per trigger call, to profiles of
    ``database``, from the moment it is created."""

    name: Name
    kind: Literal["broadcast", "regular", "multivariate", "trigger"]
    resource: Name
    #: The one template (every kind but multivariate): an SMS text, or an email
    #: resource's HTML body.
    template: Template | None = None
    #: A multivariate mailing's templates, variant 1 first (of email: HTML bodies that
    #: share ``subject`` and ``text``).
    templates: Annotated[list[Template], Meta(min_length=2, max_length=8)] | None = None
    #: An email resource's subject, a template too (Emoji welcome): required there,
    #: refused for an SMS resource.
    subject: Subject | None = None
    #: An email resource's text version (default: made from the HTML).
    text: Template | None = None
    database: Name | None = None
    segment: Name | None = None
    limit: Annotated[int, Meta(ge=0, le=MAX_ID)] | None = None
    #: The JSON document templates reach as ``{json.*}``.
    document: dict[str, Any] = msgspec.field(default_factory=dict)
    #: This mailing's sending policy (over its resource's and the account's).
    policy: Policy | None = None
    #: Launch once at this time; or on this cron schedule (five fields, ``MON#1``...).
    at: WallClock | None = None
    schedule: Annotated[str, Meta(min_length=1, max_length=200)] | None = None
    #: Of ``at``, ``schedule`` and ``until`` (IANA name; default ``[engine] timezone``).
    timezone: Annotated[str, Meta(min_length=1, max_length=64)] | None = None
    #: No launch after this time.
    until: WallClock | None = None
    #: At the schedule's time in each profile's ``_tz`` (in waves, one per send time).
    local_time: bool = False
    late: Literal["now", "next"] | None = None
    #: Multivariate: percent of the audience in the test (100: a plain split), how the
    #: winner is chosen, and seconds between the test and the choice.
    test_share: Annotated[float, Meta(gt=0, le=100)] | None = None
    winner: Literal["clicks", "unique_clicks", "delivered", "manual"] | None = None
    wait: Annotated[float, Meta(ge=0, le=366 * 86400)] | None = None
    #: Percent of the audience held out (skipped, reason ``control``).
    control: Percent | None = None
    #: Send to the database's global control group too (transactional mail).
    ignore_global_control: bool = False
    #: A trigger mailing holds a call inside its resource's ``quiet_hours`` until they end.
    quiet_hours: bool = False


class MailingDetail(MailingStatus, kw_only=True):
    """A mailing's status (the live progress of its latest run), its schedule and
    options, and its newest runs with their counts (``herald mailing show --json``'s)."""

    #: ``next_launch`` as ISO 8601 in ``timezone``, the schedule's (or ``[engine]``'s).
    next_launch_at: str | None = None
    timezone: str = "UTC"
    #: Its options; the variants' templates left out (``variants`` counts them).
    options: MailingOptions = msgspec.field(default_factory=MailingOptions)
    variants: int = 0
    #: The variant (from 1) that won, once a winner run exists.
    winner: int | None = None
    launches_total: int = 0
    tests_total: int = 0
    #: The newest launch runs (a multivariate mailing's variant tests and winner too).
    launches: list[RunView] = msgspec.field(default_factory=list)
    #: The newest test sends, apart: they count for no report.
    tests: list[RunView] = msgspec.field(default_factory=list)


class TestBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Send every variant of the mailing to these phones, rendered for ``profile_id``
    (default: the first profile of its audience)."""

    to: Annotated[list[Phone], Meta(min_length=1, max_length=100)]
    profile_id: Annotated[int, Meta(ge=1, le=MAX_ID)] | None = None


class TestAnswer(msgspec.Struct, kw_only=True):
    """One run per variant, with each message's fate."""

    runs: list[TrialRun]


class PickBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The winner of a multivariate mailing whose ``winner`` is ``manual``."""

    variant: Annotated[int, Meta(ge=1, le=8)]


class _Document(msgspec.Struct):
    """A mailing body with only its document, raw: the rest waits for Litestar's decode."""

    document: msgspec.Raw = msgspec.Raw(b"{}")


_document_of = msgspec.json.Decoder(_Document).decode


async def bounded_document(connection: ASGIConnection[Any, Any, Any, Any],
                           _: BaseRouteHandler) -> None:
    """A guard (after the token's): the body's ``document`` within ``[limits]`` before
    anything decodes it; a body that is not a JSON object is left to Litestar's 400."""
    limits = api_state(connection).herald.config.limits
    assert isinstance(connection, Request)  # a guard of an HTTP route
    body = await connection.body()
    try:
        raw = _document_of(body).document
    except RecursionError:
        raise deep_error(limits) from None
    except msgspec.DecodeError:
        return
    await check_document(bytes(raw), limits)


class MailingList(msgspec.Struct):
    mailings: list[MailingStatus]


@route("/mailings", http_method=[HttpMethod.OPTIONS], include_in_schema=False)
async def mailings_options() -> Response[None]:
    """Litestar's own OPTIONS answer of a path whose methods come from several handlers
    lists only the first one's methods in Allow; registered first, this one replaces it."""
    return Response(None, status_code=204, headers={"Allow": "GET, OPTIONS, POST"})


@post("/mailings", **guarded("sender", 400, 404, 409, 413, 422, 503,
                             bounds=bounded_document),
      status_code=201, tags=["mailings"], summary="Create a mailing")
async def create_mailing(request: Req, data: JSONBody[MailingCreate]) -> MailingStatus:
    """A broadcast waits for ``start`` (or its ``at``), a regular mailing for its
    ``schedule``; a trigger mailing takes calls at once."""
    given = {k: v for k, v in msgspec.structs.asdict(data).items() if v is not None}
    try:  # fields left out take the spec's defaults ([engine] timezone...)
        spec = msgspec.convert(given, MailingSpec)
    except msgspec.ValidationError as err:
        raise decode_error(err) from None
    try:
        return await service_of(request).create(spec)
    except TemplateError as err:  # an email's subject or text version names itself
        part, rest = template_part(err)
        if part == "template":
            raise
        where = TemplateError(rest, line=err.line, col=err.col, source_line=err.source_line)
        raise ApiError(422, str(where), part) from None


@get("/mailings", **guarded("viewer", 503), tags=["mailings"], summary="List mailings")
async def list_mailings(request: Req) -> MailingList:
    """Mailings, newest first, each with the progress of its latest run."""
    return MailingList(await service_of(request).list())


@get("/mailings/{mailing_id:int}", **guarded("viewer", 400, 404, 503),
     tags=["mailings"], summary="A mailing's status")
async def mailing_status(request: Req, mailing_id: MailingId) -> MailingDetail:
    """Status and live progress of the mailing's latest run; its state, next launch and
    options; its runs with their counts (test sends apart)."""
    return await _detail(request, mailing_id)


async def _detail(request: Req, mailing_id: int) -> MailingDetail:
    status = await service_of(request).status(mailing_id)
    herald = api_state(request).herald
    view = await describe(herald, await herald.store.get_mailing(mailing_id),
                          runs=DETAIL_RUNS)
    return MailingDetail(
        **msgspec.structs.asdict(status), next_launch_at=view.next_launch_at,
        timezone=view.timezone, options=view.options, variants=view.variants,
        winner=view.winner, launches_total=view.launches_total,
        tests_total=view.tests_total, launches=view.launches, tests=view.tests,
    )


@post("/mailings/{mailing_id:int}/test", **guarded("sender", 400, 404, 409, 422, 503),
      status_code=200, tags=["mailings"], summary="Test a mailing")
async def mailing_test(request: Req, mailing_id: MailingId,
                       data: JSONBody[TestBody]) -> TestAnswer:
    """Send every variant to the ``to`` phones through the mailing's real routing, and
    answer once they are sent: test messages skip dedupe and policies and count for no
    report. Works before the mailing was ever started."""
    try:
        logs = await service_of(request).test(mailing_id, list(data.to), data.profile_id)
    except InputError as err:  # the engine's "phones:" is this body's "to"
        field, message = field_of(str(err))
        raise ApiError(400, message, "to" if field == "phones" else field) from None
    return TestAnswer(runs=await trial_runs(api_state(request).herald, logs))


@post("/mailings/{mailing_id:int}/pick", **guarded("sender", 400, 404, 409, 503),
      status_code=200, tags=["mailings"], summary="Pick a mailing's winner")
async def pick_variant(request: Req, mailing_id: MailingId,
                       data: JSONBody[PickBody]) -> MailingDetail:
    """A multivariate mailing with ``winner: manual`` whose tests are done: ``variant``
    (from 1) goes to the rest of the audience, in the background."""
    await service_of(request).pick(mailing_id, data.variant)
    return await _detail(request, mailing_id)


@get("/mailings/{mailing_id:int}/log", **guarded("viewer", 400, 404, 409, 503),
     tags=["mailings"], summary="A mailing's log")
async def mailing_log(request: Req, mailing_id: MailingId) -> MailingLog:
    """The mailing log of the latest run (Altcraft's SMS log fields and Herald's)."""
    return await service_of(request).log(mailing_id)


@post("/mailings/{mailing_id:int}/start", **guarded("sender", 400, 404, 409, 503),
      status_code=200, tags=["mailings"], summary="Start a mailing")
async def start_mailing(request: Req, mailing_id: MailingId) -> MailingStatus:
    """Start a new run; it goes on in the background."""
    return await service_of(request).start(mailing_id)


@post("/mailings/{mailing_id:int}/pause", **guarded("sender", 400, 404, 409, 503),
      status_code=200, tags=["mailings"], summary="Pause a mailing")
async def pause_mailing(request: Req, mailing_id: MailingId) -> MailingStatus:
    """Stop gracefully (batches at a gateway finish); ``resume`` carries on."""
    return await service_of(request).pause(mailing_id)


@post("/mailings/{mailing_id:int}/resume", **guarded("sender", 400, 404, 409, 503),
      status_code=200, tags=["mailings"], summary="Resume a mailing")
async def resume_mailing(request: Req, mailing_id: MailingId) -> MailingStatus:
    """Carry on a paused or interrupted run: nobody lost, nobody sent twice."""
    return await service_of(request).resume(mailing_id)


@post("/mailings/{mailing_id:int}/cancel", **guarded("sender", 400, 404, 409, 503),
      status_code=200, tags=["mailings"], summary="Cancel a mailing")
async def cancel_mailing(request: Req, mailing_id: MailingId) -> MailingStatus:
    """Stop for good: what was never handed to a gateway is skipped as cancelled."""
    return await service_of(request).cancel(mailing_id)


ROUTES: list[ControllerRouterHandler] = [
    mailings_options, create_mailing, list_mailings, mailing_status, mailing_log,
    start_mailing, pause_mailing, resume_mailing, cancel_mailing, mailing_test, pick_variant,
]

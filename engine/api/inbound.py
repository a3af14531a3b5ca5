"""``POST /api/v1/inbound/{gateway}``: a gateway's inbound messages (STOP replies), or an
email gateway's bounces and complaints; ``GET`` for a gateway that calls back with it (its
query string is the form-encoded message).

Authenticated exactly as the gateway's delivery receipts (``engine.api.receipts``): the
secret ``HERALD_DLR_SECRET_<NAME>`` or the gateway's ``receipt_secret``, as the header
``X-Herald-Secret`` or ``?secret=``; a gateway with no secret takes nothing (403). The
gateway's driver parses the body (herald-json: ``{"inbound": [{"from", "text", "to",
"at"}]}``); a body it cannot parse is a 400 naming the field, one of more than
``MAX_INBOUND`` messages a 400 naming ``body``, one over ``MAX_INBOUND_BODY`` bytes a 413.
Which subscriptions a STOP changes is the rule of ``engine.tracking.inbound``: the sender's
phone, from every resource that can send through that gateway.

For a gateway whose driver takes bounces (``smtp``: a DSN or an ARF report, the raw mail,
as a bounce mailbox posts it, with the VERP address it was delivered to as
``X-Original-To``; ``mailgun``: its signed webhook), the body is parsed into bounces, and
the answer counts what they did (``InboundBounces``): ``hbounce`` makes the address's
subscriptions to those resources ``hardbounced``, ``complain`` makes them ``complainer``
and suppresses the address, ``sbounce`` changes nothing. Bounces are posted: a ``GET`` is a
400. A body it cannot parse is a 400 naming the field; one of more than ``MAX_INBOUND``
bounces a 400 naming ``body``.
"""

from __future__ import annotations

from typing import Annotated

from litestar import route
from litestar.params import FromPath, HeaderParameter, QueryParameter

from engine.api.errors import ApiError, error_responses, field_of
from engine.api.receipts import authenticate_gateway, lowered, query_callback
from engine.api.state import Req, api_state
from engine.errors import InputError
from engine.tracking.inbound import InboundBounces, InboundReport

__all__ = ["MAX_INBOUND", "MAX_INBOUND_BODY", "ROUTES"]

#: Messages one callback may carry.
MAX_INBOUND = 10_000
#: Bytes a callback may have (a herald-json message has ~80 and a long text ~1,000).
MAX_INBOUND_BODY = 2_000 * MAX_INBOUND


@route("/inbound/{gateway:str}", http_method=["GET", "POST"],
       responses=error_responses(400, 401, 403, 404, 413), status_code=200,
       tags=["receipts"], request_max_body_size=MAX_INBOUND_BODY,
       summary="Inbound messages (replies), or bounces, of a gateway",
       security=[{"receiptSecretHeader": []}, {"receiptSecretQuery": []}])
async def receive_inbound(
    request: Req,
    gateway: FromPath[str],
    header_secret: Annotated[
        str | None, HeaderParameter(name="X-Herald-Secret", required=False, max_length=1000)
    ] = None,
    query_secret: Annotated[
        str | None, QueryParameter(name="secret", required=False, max_length=1000)
    ] = None,
) -> InboundReport | InboundBounces:
    """Take a gateway's inbound messages: a STOP reply unsubscribes its phone from the
    resources that send through the gateway; other replies are ignored. An email
    gateway's bounces and complaints change the status of the address's subscriptions
    to those resources."""
    api = api_state(request)
    authenticate_gateway(api.herald.config, gateway, header_secret or query_secret,
                         "inbound messages")
    bounces = _takes_bounces(request, gateway)
    if request.method == "GET":  # a gateway that calls back so: the query is the body
        if bounces:
            raise ApiError(400, f"gateway {gateway!r} takes bounces, which are POSTed",
                           "body")
        body, headers = query_callback(request)
    else:
        body, headers = await request.body(), lowered(request.headers)
    if bounces:
        return await _take_bounces(request, gateway, body, headers)
    return await _take(request, gateway, body, headers)


def _bad_input(err: InputError) -> ApiError:
    field, message = field_of(str(err))
    return ApiError(400, message, field or "body")


def _takes_bounces(request: Req, gateway: str) -> bool:
    try:
        return api_state(request).inbound.takes_bounces(gateway)
    except InputError as err:
        raise _bad_input(err) from None


async def _take(request: Req, gateway: str, body: bytes,
                headers: dict[str, str]) -> InboundReport:
    try:
        return await api_state(request).inbound.take(gateway, body, headers,
                                                     max_messages=MAX_INBOUND)
    except InputError as err:
        raise _bad_input(err) from None


async def _take_bounces(request: Req, gateway: str, body: bytes,
                        headers: dict[str, str]) -> InboundBounces:
    try:
        return await api_state(request).inbound.take_bounces(gateway, body, headers,
                                                             max_bounces=MAX_INBOUND)
    except InputError as err:
        raise _bad_input(err) from None


ROUTES = [receive_inbound]

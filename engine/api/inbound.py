"""``POST /api/v1/inbound/{gateway}``: a gateway's inbound messages (STOP replies); ``GET``
for a gateway that calls back with it (its query string is the form-encoded message).

Authenticated exactly as the gateway's delivery receipts (``engine.api.receipts``): the
secret ``HERALD_DLR_SECRET_<NAME>`` or the gateway's ``receipt_secret``, as the header
``X-Herald-Secret`` or ``?secret=``; a gateway with no secret takes nothing (403). The
gateway's driver parses the body (herald-json: ``{"inbound": [{"from", "text", "to",
"at"}]}``); a body it cannot parse is a 400 naming the field, one of more than
``MAX_INBOUND`` messages a 400 naming ``body``, one over ``MAX_INBOUND_BODY`` bytes a 413.
Which subscriptions a STOP changes is the rule of ``engine.tracking.inbound``: the sender's
phone, from every resource that can send through that gateway.
"""

from __future__ import annotations

from typing import Annotated

from litestar import route
from litestar.params import FromPath, HeaderParameter, QueryParameter

from engine.api.errors import ApiError, error_responses, field_of
from engine.api.receipts import authenticate_gateway, lowered, query_callback
from engine.api.state import Req, api_state
from engine.errors import InputError
from engine.tracking.inbound import InboundReport

__all__ = ["MAX_INBOUND", "MAX_INBOUND_BODY", "ROUTES"]

#: Messages one callback may carry.
MAX_INBOUND = 10_000
#: Bytes a callback may have (a herald-json message has ~80 and a long text ~1,000).
MAX_INBOUND_BODY = 2_000 * MAX_INBOUND


@route("/inbound/{gateway:str}", http_method=["GET", "POST"],
       responses=error_responses(400, 401, 403, 404, 413), status_code=200,
       tags=["receipts"], request_max_body_size=MAX_INBOUND_BODY,
       summary="Inbound messages (replies) of a gateway",
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
) -> InboundReport:
    """Take a gateway's inbound messages: a STOP reply unsubscribes its phone from the
    resources that send through the gateway; other replies are ignored."""
    api = api_state(request)
    authenticate_gateway(api.herald.config, gateway, header_secret or query_secret,
                         "inbound messages")
    if request.method == "GET":  # a gateway that calls back so: the query is the body
        body, headers = query_callback(request)
    else:
        body, headers = await request.body(), lowered(request.headers)
    return await _take(request, gateway, body, headers)


async def _take(request: Req, gateway: str, body: bytes,
                headers: dict[str, str]) -> InboundReport:
    try:
        return await api_state(request).inbound.take(gateway, body, headers,
                                                     max_messages=MAX_INBOUND)
    except InputError as err:
        field, message = field_of(str(err))
        raise ApiError(400, message, field or "body") from None


ROUTES = [receive_inbound]

"""``POST /api/v1/dlr/{gateway}``: a gateway's delivery-receipt callback; ``GET`` for a
gateway that calls back with it (Vonage's default): its query string, but ``secret``, is the
form-encoded body its driver parses.

Gateways do not hold bearer tokens; each one is authenticated by a shared secret instead.
The secret of gateway ``NAME`` is the environment variable ``HERALD_DLR_SECRET_<NAME>``
(upper-cased, anything but letters and digits as ``_``), else the gateway's config key
``receipt_secret`` when the config has one. The gateway presents it as the header
``X-Herald-Secret``, or as ``?secret=`` in the callback URL for gateways that cannot set
headers. A gateway with no secret takes no receipts (403). The gateway's driver parses the
body; a body it cannot parse is a 400 naming ``body``, and so is one of more than
``MAX_RECEIPTS`` receipts; a body over ``MAX_RECEIPTS_BODY`` bytes is a 413, unread.

A gateway's receipts touch only the messages its own senders sent (another gateway's
secret cannot move them, nor can a provider id issued by another gateway). The parse runs
in a worker thread and the receipts are applied in short transactions, so a big callback
does not stall the loop. Receipts whose message is not recorded yet are kept, at most
``[limits] pending_receipts`` per gateway: past that the oldest are dropped, and the
answer's ``dropped`` says how many.
"""

from __future__ import annotations

import hmac
import os
import re
from typing import Annotated, Any
from urllib.parse import parse_qsl, urlencode

import msgspec
from litestar import route
from litestar.params import FromPath, HeaderParameter, QueryParameter

from engine.api.errors import ApiError, error_responses, field_of
from engine.api.state import Req, api_state
from engine.config import Config, GatewayConfig
from engine.errors import InputError

__all__ = [
    "MAX_RECEIPTS",
    "MAX_RECEIPTS_BODY",
    "ROUTES",
    "ReceiptAnswer",
    "authenticate_gateway",
    "lowered",
    "receipt_secret",
    "secret_variable",
]

#: Receipts one callback may carry (a gateway posts more in several).
MAX_RECEIPTS = 10_000
#: Bytes a callback may have: 400 per receipt at the bound (a herald-json one has ~150).
#: A bigger body is a 413 before it is read, let alone parsed.
MAX_RECEIPTS_BODY = 400 * MAX_RECEIPTS


class ReceiptAnswer(msgspec.Struct, omit_defaults=True):
    #: Receipts applied to their recipient.
    matched: int
    #: Receipts whose message is not recorded yet: kept, applied when it is.
    pending: int
    #: Receipts that could not move their recipient (already in a final state).
    ignored: int
    #: Kept receipts dropped, the oldest first, to keep the gateway's under
    #: ``[limits] pending_receipts`` (left out when none were).
    dropped: int = 0


def secret_variable(gateway: str) -> str:
    """The environment variable holding ``gateway``'s receipt secret."""
    return "HERALD_DLR_SECRET_" + re.sub(r"[^A-Z0-9]", "_", gateway.upper())


def receipt_secret(config: Config, gateway: str) -> str | None:
    """``gateway``'s receipt secret, or None when it has none."""
    secret = os.environ.get(secret_variable(gateway))
    if secret:
        return secret
    gw = config.gateways.get(gateway)
    configured = getattr(gw, "receipt_secret", None)
    return configured if isinstance(configured, str) and configured else None


def authenticate_gateway(
    config: Config, gateway: str, given: str | None, what: str
) -> GatewayConfig:
    """The config of ``gateway`` if ``given`` is its secret; else the ApiError to answer:
    404 for no such gateway, 403 for one with no secret (it takes no ``what``), 401 for a
    missing or wrong secret. Shared by every route a gateway calls back."""
    gw = config.gateways.get(gateway)
    if gw is None:
        raise ApiError(404, f"no gateway named {gateway!r} in the config", "gateway")
    expected = receipt_secret(config, gateway)
    if expected is None:
        raise ApiError(403, f"gateway {gateway!r} takes no {what}: give it a secret"
                       f" ({secret_variable(gateway)})", "gateway")
    if not given:
        raise ApiError(401, f"{what} need the gateway's secret (X-Herald-Secret header"
                       " or ?secret=)")
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise ApiError(401, "wrong secret for this gateway")
    return gw


def lowered(headers: Any) -> dict[str, str]:
    """A request's headers as the drivers' parsers take them: names in lower case."""
    return {k.lower(): v for k, v in headers.items()}


def query_callback(request: Req) -> tuple[bytes, dict[str, str]]:
    """A callback a gateway made with ``GET`` (Vonage's default, SMSC.ru's option): its
    query string but ``secret``, as the form-encoded body and headers a driver parses."""
    raw = request.scope.get("query_string", b"")
    pairs = parse_qsl(raw.decode("latin-1"), keep_blank_values=True)
    body = urlencode([(k, v) for k, v in pairs if k != "secret"]).encode("ascii")
    headers = lowered(request.headers)
    headers["content-type"] = "application/x-www-form-urlencoded"
    return body, headers


@route("/dlr/{gateway:str}", http_method=["GET", "POST"],
       responses=error_responses(400, 401, 403, 404, 413), status_code=200,
       tags=["receipts"], request_max_body_size=MAX_RECEIPTS_BODY,
       summary="Delivery receipts of a gateway",
       security=[{"receiptSecretHeader": []}, {"receiptSecretQuery": []}])
async def receive_receipts(
    request: Req,
    gateway: FromPath[str],
    header_secret: Annotated[
        str | None, HeaderParameter(name="X-Herald-Secret", required=False, max_length=1000)
    ] = None,
    query_secret: Annotated[
        str | None, QueryParameter(name="secret", required=False, max_length=1000)
    ] = None,
) -> ReceiptAnswer:
    """Apply a gateway's receipts; the body is in the gateway's own format. With ``GET``
    (a gateway that calls back so, as Vonage does by default), the query string but
    ``secret`` is the body, form-encoded."""
    _authenticate(request, gateway, header_secret or query_secret)  # before reading
    if request.method == "GET":
        body, headers = query_callback(request)
    else:
        body, headers = await request.body(), lowered(request.headers)
    return await _take(request, gateway, body, headers)


def _authenticate(request: Req, gateway: str, secret: str | None) -> None:
    herald = api_state(request).herald
    gw = authenticate_gateway(herald.config, gateway, secret, "receipts")
    if not herald.plugins.drivers[gw.driver].capabilities.supports_dlr:
        raise ApiError(400, f"gateway {gateway!r} (driver {gw.driver}) has no receipts",
                       "gateway")


async def _take(request: Req, gateway: str, body: bytes,
                headers: dict[str, str]) -> ReceiptAnswer:
    herald = api_state(request).herald
    try:
        report = await herald.receipts(gateway, body, headers, max_receipts=MAX_RECEIPTS)
    except InputError as err:
        field, message = field_of(str(err))
        raise ApiError(400, message, field or "body") from None
    return ReceiptAnswer(report.matched, report.pending, report.ignored, report.dropped)


ROUTES = [receive_receipts]

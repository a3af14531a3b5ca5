"""Herald's HTTP API (``herald serve``): Litestar on Hypercorn, msgspec bodies, OpenAPI.

Routes (JSON in and out; the roles are ``viewer`` < ``sender`` < ``admin``)::

    GET  /healthz                                   no token
    GET  /openapi.json                              viewer
    GET  /metrics                                   viewer   Prometheus text
    POST /api/v1/profiles/import                    sender
    GET  /api/v1/resources                          viewer
    GET  /api/v1/resources/{name}/subscriptions     viewer   ?profile_id= or ?phone=
    POST /api/v1/resources/{name}/subscribe         sender
    POST /api/v1/resources/{name}/unsubscribe       sender
    POST /api/v1/mailings                           sender   create (broadcast or trigger)
    GET  /api/v1/mailings                           viewer
    GET  /api/v1/mailings/{id}                      viewer   status with live progress
    POST /api/v1/mailings/{id}/start|pause|resume|cancel   sender
    GET  /api/v1/mailings/{id}/log                  viewer   the latest run's mailing log
    POST /api/v1/mailings/{id}/trigger              sender   one message, its id at once
    POST /api/v1/mailings/{id}/trigger/batch        sender
    POST /api/v1/dlr/{gateway}                      the gateway's shared secret
    POST /api/v1/inbound/{gateway}                  the gateway's shared secret (STOP)
    GET  /api/v1/reports/channel|undeliveries|clicks   viewer   ?format=csv|xlsx downloads
    GET  /api/v1/whoami                             viewer   the token's role and name
    GET  /api/v1/mailings/{id}/live                 viewer   server-sent events: status
    GET  /api/v1/senders                            viewer   pace, weight, health, errors
    GET  /api/v1/senders/live                       viewer   server-sent events: senders
    POST /api/v1/templates/preview                  viewer   rendered text, encoding, segments
    GET  /api/v1/databases                          viewer   with their profile counts
    GET  /api/v1/databases/{name}/profiles          viewer   ?limit=&after= a page
    GET  /api/v1/segments                           viewer

Altcraft's methods, its fields and envelope (``engine.api.altcraft``; HTTP 200, the code in
``error``; the token in the body as ``token`` or as a bearer header)::

    POST /api/v1.1/campaigns/triggers/start         sender
    POST /api/v1.1/campaigns/triggers/start_batch   sender
    POST /api/v1.1/profiles/import                  sender
    POST /api/v1.1/profiles/import_batch            sender
    POST /api/v1.1/campaigns/log_v2                 viewer

The operator console's pages (no token; ``engine.api.console``, package data under
``engine/api/static/console/``)::

    GET  /console, /console/                        the page (it asks for a token)
    GET  /console/static/{name}                     its scripts, styles and images

The tracking domain's public routes (no token; ``engine.tracking``)::

    GET  /{code}                                    302 to a short link's URL, the click kept
    GET  /u/{code}, /ua/{code}                      an unsubscribe page (one confirm button)
    POST /u/{code}, /ua/{code}                      unsubscribe (``/ua/``: every resource)

``/healthz`` and ``/metrics`` are also under ``/api/v1``. Tokens come from ``herald token
create --role R``; errors are described in ``engine.api.errors``.
"""

from typing import TYPE_CHECKING, Any

from engine.api.tokens import Token, TokenStore

if TYPE_CHECKING:
    from engine.api.app import create_app

__all__ = ["Token", "TokenStore", "create_app"]


def __getattr__(name: str) -> Any:
    # Litestar takes 0.2 s to import: only `herald serve` and embedders should pay it.
    if name == "create_app":
        from engine.api.app import create_app

        return create_app
    raise AttributeError(name)

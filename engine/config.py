"""Herald's TOML config, decoded into strict msgspec Structs.

Every table is decoded on its own so that one run of ``herald check-config`` reports every
problem, each as ``FILE: key.path: message``. A driver's options (the keys of
``[gateways.NAME]`` other than ``driver``) are decoded with that driver's own Struct.
Cross-references (a sender's gateway, a virtual sender's senders, a resource's virtual
sender) are checked after decoding.

Where the file comes from: ``--config PATH``, else ``$HERALD_CONFIG``, else ``./herald.toml``.
Relative paths inside the file (the database, a file driver's output) are relative to the
directory of the config file.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec
from msgspec import Meta

from engine.core.fields import FieldSpec
from engine.core.localtime import QuietHours, parse_quiet_hours
from engine.core.policy import Policy
from engine.core.retry import RetryPolicy
from engine.core.routing import HealthPolicy, Rule, VirtualSenderRouter
from engine.drivers import Driver, DriverConfig
from engine.errors import ConfigError, ConfigProblem, InputError, redact, secret_values

__all__ = [
    "HOOK_EVENTS",
    "ApiConfig",
    "ClusterConfig",
    "Config",
    "DatabaseConfig",
    "EngineConfig",
    "GalleryConfig",
    "GatewayConfig",
    "HookConfig",
    "HookEventName",
    "LimitsConfig",
    "Policy",
    "ResourceConfig",
    "RetryRules",
    "RouteTarget",
    "RoutingRule",
    "SenderConfig",
    "TrackingConfig",
    "VirtualSenderConfig",
    "bad_timezone",
    "find_config_path",
    "load_config",
    "parse_config",
]

Name = Annotated[str, Meta(min_length=1, max_length=200)]
Percent = Annotated[float, Meta(ge=0, le=100)]


class _Strict(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class EngineConfig(_Strict):
    """``[engine]``: where data lives and how the pipeline is shaped."""

    database: str = "herald.db"
    #: Region for numbers written without a country code (ISO 3166 alpha-2, e.g. "RU").
    #: Unset: digits without "+" are read as an international number.
    default_region: Annotated[str, Meta(pattern="^[A-Z]{2}$")] | None = None
    #: Profiles read from the store per chunk (keyset pagination).
    chunk_size: Annotated[int, Meta(ge=1, le=100_000)] = 1000
    #: Messages handed to a driver per batch (capped by the driver's own max_batch).
    batch_size: Annotated[int, Meta(ge=1, le=100_000)] = 500
    #: Bloom filter false-positive rate of the per-run phone dedupe. Every positive is
    #: confirmed exactly, so this trades memory for confirmation queries, never correctness.
    dedupe_fp_rate: Annotated[float, Meta(gt=0, lt=0.5)] = 0.001
    #: Seconds that batches already handed to a gateway get to finish after Ctrl-C/SIGTERM.
    shutdown_grace: Annotated[float, Meta(ge=0)] = 10.0
    #: Seconds a trigger mailing waits after a call before it reads its queue, so that the
    #: calls arriving meanwhile go out together (throughput at the cost of that latency).
    trigger_linger: Annotated[float, Meta(ge=0, le=5)] = 0.01
    #: The account's sending policy (None: no limit).
    policy: Policy | None = None
    #: Seconds a delivery receipt whose message is not recorded (yet) is kept waiting for
    #: it; older ones are dropped. Default 7 days.
    receipt_ttl: Annotated[float, Meta(gt=0)] = 7 * 86400.0
    #: Inbound texts that unsubscribe their phone (``POST /api/v1/inbound/{gateway}``),
    #: matched case-insensitively against the whole trimmed text.
    stop_words: list[Annotated[str, Meta(min_length=1, max_length=64)]] = msgspec.field(
        default_factory=lambda: ["STOP", "СТОП", "UNSUBSCRIBE", "ОТПИСКА"])
    #: The time zone (an IANA name, e.g. "Europe/Moscow") of a mailing's schedule when the
    #: mailing names none.
    timezone: Annotated[str, Meta(min_length=1, max_length=64)] = "UTC"
    #: The account id that action hooks' messages carry (Altcraft's ``account_id``).
    account_id: Annotated[int, Meta(ge=0, le=2**53)] = 1


_Domain = Annotated[str, Meta(pattern=r"^[A-Za-z0-9.-]+(:[0-9]{1,5})?$")]


class TrackingConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """``[tracking]``: the public domain that serves short links, unsubscribe pages and
    gallery images (``engine.tracking``).

    Links are shortened only where a domain is set, here or on the resource
    (``[resources.X] tracking_domain``): without one, URLs go out as written and
    ``{unsubscribe}`` renders the resource's static ``unsubscribe_url``."""

    #: The domain (and port) that reaches ``herald serve``; None: no tracked links.
    domain: _Domain | None = None
    scheme: Literal["http", "https"] = "https"
    #: The account segment of public URLs: ``{scheme}://{domain}/{account}/{n}/{hash}/{name}``.
    account: Annotated[str, Meta(pattern="^[A-Za-z0-9_-]{1,64}$")] = "1"
    #: Shorten the links of SMS texts where a tracking domain is set (a resource may
    #: say otherwise).
    track_links: bool = True

    @property
    def host(self) -> str:
        """The domain gallery URLs are made on (``localhost`` when none is set)."""
        return self.domain or "localhost"


class GalleryConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """``[gallery]``: where image blobs live and which private hosts localising may fetch."""

    #: The blob directory (relative to the config file's directory).
    storage: str = "gallery/"
    #: Hosts (names or addresses) fetched even though they resolve to loopback, private or
    #: link-local addresses; everything else must resolve to global addresses only.
    allow_fetch_from: list[str] = msgspec.field(default_factory=list)
    #: Seconds one external image may take to download when localising a template.
    fetch_timeout: Annotated[float, Meta(gt=0, le=300)] = 10.0
    #: Seconds one localize call may take in all, however many URLs it fetches.
    localize_timeout: Annotated[float, Meta(gt=0, le=3600)] = 60.0
    #: External image URLs one localize call fetches at most (more: 413, naming the bound).
    localize_max_urls: Annotated[int, Meta(ge=1, le=100_000)] = 200
    #: Pixels (width x height) an image may have to be decoded at all; default 16 MP.
    max_pixels: Annotated[int, Meta(ge=1, le=1_000_000_000)] = 16_000_000
    #: Images decoded at once (checks and thumbnails), in worker threads.
    max_concurrent_decodes: Annotated[int, Meta(ge=1, le=64)] = 2


class LimitsConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """``[limits]``: the bounds of what a client or a file may hand Herald. Past one, the
    answer names it (a 4xx from the API, exit 2 from the CLI)."""

    #: Bytes of template source.
    template_bytes: Annotated[int, Meta(ge=1, le=10_000_000)] = 100_000
    #: Parts of one dotted path in a template (``lead.a.b.c`` has 4).
    template_path_depth: Annotated[int, Meta(ge=1, le=10_000)] = 32
    #: Distinct variables (paths) one template may use.
    template_variables: Annotated[int, Meta(ge=1, le=1_000_000)] = 1_000
    #: Bytes of a mailing's JSON ``document``.
    document_bytes: Annotated[int, Meta(ge=1, le=100_000_000)] = 1_000_000
    #: Keys of a mailing's ``document``, counted at every level.
    document_keys: Annotated[int, Meta(ge=1, le=10_000_000)] = 10_000
    #: Fields of one profile (standard and custom).
    profile_fields: Annotated[int, Meta(ge=1, le=1_000_000)] = 1_000
    #: Levels of nesting in any JSON a client sends.
    json_depth: Annotated[int, Meta(ge=1, le=10_000)] = 64
    #: Delivery receipts kept waiting for their message, per gateway: past it the oldest
    #: are dropped (0 = no cap). One callback carries at most 10,000 receipts in 4 MB.
    pending_receipts: Annotated[int, Meta(ge=0, le=100_000_000)] = 100_000
    #: How many times larger than the archive its contents may be (zip, tar.gz imports).
    import_compression_ratio: Annotated[int, Meta(ge=1, le=100_000)] = 100


class ApiConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """``[api]``: how ``herald serve`` treats its clients."""

    #: Failed authentications from one address in a minute before it gets 429 for a minute.
    auth_failures_per_minute: Annotated[int, Meta(ge=1, le=1_000_000)] = 30
    #: Seconds a request body may take to arrive, in all.
    body_timeout: Annotated[float, Meta(gt=0, le=3600)] = 30.0
    #: The HTTP server of ``herald serve``: ``uvicorn`` (httptools' C parser; asyncio
    #: only) or ``hypercorn`` (h11; asyncio and trio). ``auto``: uvicorn on asyncio,
    #: hypercorn on trio.
    server: Literal["auto", "uvicorn", "hypercorn"] = "auto"


class ClusterConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """``[cluster]``: Herald on several processes and machines (``herald worker``).

    Present, it makes ``herald send`` and ``herald serve`` share runs with the workers
    through the store (PostgreSQL) and the senders' limits through Redis or Valkey."""

    #: Seconds a worker's lease on a chunk lasts without a heartbeat; after it, another
    #: worker takes the chunk over (a worker killed with SIGKILL loses its chunks so).
    lease_ttl: Annotated[float, Meta(ge=1, le=3600)] = 30.0
    #: Seconds between heartbeats (renewals of a worker's leases; each also looks for
    #: pause and cancel). Default: lease_ttl / 10, at most 1 s.
    heartbeat: Annotated[float, Meta(gt=0, le=600)] | None = None
    #: Profiles per chunk of a broadcast run: the unit of work a worker leases.
    chunk_profiles: Annotated[int, Meta(ge=100, le=10_000_000)] = 20_000
    #: Where each sender's rate (GCRA) and window live, cluster-wide: redis:// or
    #: rediss:// (Redis or Valkey). Unset: each process keeps its own (one machine).
    redis: str | None = None

    @property
    def heartbeat_s(self) -> float:
        return self.heartbeat if self.heartbeat is not None else min(1.0, self.lease_ttl / 10)


#: The events an action hook may deliver (Altcraft's names).
HookEventName = Literal["send_sms", "deliv_sms", "undeliv_sms", "click_sms", "uclick_sms",
                        "unsub_sms", "import_file", "import_api", "send", "deliv", "undeliv",
                        "click", "uclick", "unsub", "open", "uopen", "hbounce", "sbounce",
                        "complain"]
HOOK_EVENTS: tuple[str, ...] = ("send_sms", "deliv_sms", "undeliv_sms", "click_sms",
                                "uclick_sms", "unsub_sms", "import_file", "import_api",
                                "send", "deliv", "undeliv", "click", "uclick", "unsub",
                                "open", "uopen", "hbounce", "sbounce", "complain")
#: Which URL schemes each transport takes.
_HOOK_SCHEMES = {"http": ("http://", "https://"), "rabbitmq": ("amqp://", "amqps://"),
                 "nats": ("nats://", "tls://")}


class HookConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """``[hooks.NAME]``: an action hook, which delivers the events of the record to a
    system of the user's (``engine.events``; the messages: ``docs/hooks.md``).

    The keys of every transport are in this one table; each transport reads its own, and
    ``check-config`` refuses another transport's keys."""

    transport: Literal["http", "rabbitmq", "nats"]
    #: The events it delivers.
    events: Annotated[list[HookEventName], Meta(min_length=1)]
    #: Only events of these resources, profile databases and mailings (config names,
    #: names, ids). Empty: all. An import event has no resource or mailing: a hook with
    #: either filter delivers no import event.
    resources: list[Name] = msgspec.field(default_factory=list)
    databases: list[Name] = msgspec.field(default_factory=list)
    mailings: list[Annotated[int, Meta(ge=1)]] = msgspec.field(default_factory=list)
    #: Deliver the events of test sends (``mailing test``) too.
    include_tests: bool = False
    #: Seconds a failing batch is retried (exponential backoff with jitter, from
    #: ``retry_initial`` up to ``retry_max`` between tries) before it goes to the dead
    #: letters (``herald hooks status``, ``herald hooks replay``). Default 3 days.
    max_age: Annotated[float, Meta(gt=0, le=365 * 86400)] = 3 * 86400.0
    retry_initial: Annotated[float, Meta(gt=0, le=3600)] = 1.0
    retry_max: Annotated[float, Meta(gt=0, le=86400)] = 300.0
    #: Events per delivery: sent when this many have accumulated...
    batch_size: Annotated[int, Meta(ge=1, le=10_000)] = 500
    #: ...or when the oldest waiting has waited this many seconds.
    flush_interval: Annotated[float, Meta(ge=0, le=3600)] = 1.0
    #: Seconds one delivery may take.
    timeout: Annotated[float, Meta(gt=0, le=600)] = 10.0
    #: http: where batches are POSTed (a JSON array of messages); rabbitmq: amqp://...;
    #: nats: nats://...
    url: Annotated[str, Meta(min_length=1, max_length=2000)]
    #: http: a regex the answer's body must match (searched); empty: any 2xx is success.
    success: Annotated[str, Meta(max_length=1000)] = ""
    #: http: extra request headers.
    headers: dict[Annotated[str, Meta(pattern=r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")],
                  Annotated[str, Meta(max_length=8000)]] = msgspec.field(default_factory=dict)
    #: http: signs each request (``X-Herald-Signature``, HMAC-SHA256 with a timestamp).
    secret: Annotated[str, Meta(min_length=16, max_length=1000)] | None = None
    #: rabbitmq: the exchange ("" is the default exchange) and the routing key; both may
    #: hold ``{event_type}``.
    exchange: Annotated[str, Meta(max_length=255)] | None = None
    routing_key: Annotated[str, Meta(max_length=255)] = "herald.{event_type}"
    #: nats: the JetStream subject (may hold ``{event_type}``); a stream must take it.
    subject: Annotated[str, Meta(min_length=1, max_length=255)] | None = None


class GatewayConfig(msgspec.Struct, frozen=True):
    """``[gateways.NAME]``: a driver name and that driver's own validated options.

    ``receipt_secret``: the shared secret its delivery-receipt callbacks carry (header
    ``X-Herald-Secret`` or ``?secret=``) on ``POST /api/v1/dlr/NAME``.
    """

    driver: str
    options: DriverConfig
    receipt_secret: str | None = None


class RetryRules(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """``[senders.NAME.retry]``: how to retry, per class of answer.

    ``transient``: the gateway failed (5xx, timeout, connection refused).
    ``throttled``: it asked us to slow down (429, SMPP THROTTLED); the whole sender waits.
    ``message``: it answered ``retry`` for single messages of an otherwise fine batch.
    """

    transient: RetryPolicy = RetryPolicy(attempts=6, base=1.0, max_delay=60.0, max_age=3600.0)
    throttled: RetryPolicy = RetryPolicy(attempts=20, base=1.0, max_delay=60.0,
                                         max_age=3600.0)
    message: RetryPolicy = RetryPolicy(attempts=4, base=2.0, max_delay=60.0, max_age=3600.0)

    def for_answer(self, error: BaseException | None, sub: Any) -> RetryPolicy:
        if sub.throttled:
            return self.throttled
        return self.transient if error is not None else self.message


class SenderConfig(_Strict):
    """``[senders.NAME]``: a real sender on a gateway: an SMS sender's ``caller_id``, an
    email sender's ``from`` (and optional ``reply_to``, ``return_path``)."""

    gateway: Name
    #: An SMS sender's caller id (alphanumeric name or number). Required on SMS.
    caller_id: Name | None = None
    #: An email sender's From, as people write it: ``"News <news@example.com>"``.
    from_: Annotated[str, Meta(min_length=3, max_length=400)] | None = msgspec.field(
        default=None, name="from")
    #: An email sender's Reply-To, if replies go elsewhere.
    reply_to: Annotated[str, Meta(min_length=3, max_length=400)] | None = None
    #: An email sender's envelope sender (``MAIL FROM``, where bounces by mail go):
    #: ``bounces@bounces.example.com`` is written as the VERP address
    #: ``bounces+{message id}@bounces.example.com``, so a DSN names its message. None:
    #: the From address.
    return_path: Annotated[str, Meta(min_length=3, max_length=254)] | None = None
    #: Segments per second; 0 = unlimited (never a division by zero).
    rate: Annotated[float, Meta(ge=0)] = 0
    #: Segments that may go out at once above the steady rate.
    burst: Annotated[int, Meta(ge=0)] = 0
    #: Messages in flight at once on this sender (submitted, not yet answered); 0 = no cap.
    window: Annotated[int, Meta(ge=0)] = 0
    #: Batches in flight at once on this sender's gateway (its workers).
    concurrency: Annotated[int, Meta(ge=1, le=1024)] = 4
    #: Longest text in segments this sender takes; 0 = no cap. Longer texts are skipped.
    max_segments: Annotated[int, Meta(ge=0)] = 0
    retry: RetryRules = RetryRules()
    #: An attempt that may have reached the gateway (a timeout after the request was
    #: written, a connection lost before the answer): "retry" it under the same ids, or
    #: record its messages "unknown" (reason timeout / connection_lost). None: "retry"
    #: when the driver declares idempotent submission, "unknown" otherwise.
    on_ambiguous: Literal["unknown", "retry"] | None = None


class RouteTarget(_Strict):
    sender: Name
    percent: Percent = 100


class RoutingRule(_Strict):
    """A rule for phones starting with one of ``prefixes`` (``"+7"``, ``"+44"``); the last
    rule has none and takes everything else. A sender at 0 percent is a backup."""

    senders: Annotated[list[RouteTarget], Meta(min_length=1)]
    prefixes: list[str] | None = None


class VirtualSenderConfig(_Strict):
    """``[virtual_senders.NAME]``: ordered rules, the last one being the default."""

    rules: Annotated[list[RoutingRule], Meta(min_length=1)]
    #: When a sender counts as failing and how its traffic comes back.
    health: HealthPolicy = HealthPolicy()

    def router(self) -> VirtualSenderRouter:
        """A fresh router (with fresh health) for these rules."""
        rules = [Rule(senders=[(t.sender, t.percent) for t in r.senders], prefixes=r.prefixes)
                 for r in self.rules]
        return VirtualSenderRouter(rules, policy=self.health)


class ResourceConfig(_Strict):
    """``[resources.NAME]``: a subscription resource (a newsletter, a service)."""

    virtual_sender: Name
    #: What its subscriptions carry and its mailings send: SMS, or email (a subject, an
    #: HTML body and a text version, through senders with a ``from``).
    channel: Literal["sms", "email"] = "sms"
    databases: list[Name] = msgspec.field(default_factory=list)
    #: The static unsubscribe link, for ``{unsubscribe}`` where no tracking domain is set.
    unsubscribe_url: str | None = None
    #: This resource's sending policy (over the account's).
    policy: Policy | None = None
    #: This resource's tracking domain (over ``[tracking] domain``).
    tracking_domain: _Domain | None = None
    #: Shorten this resource's links (None: as ``[tracking] track_links`` says).
    track_links: bool | None = None
    #: ``"21:00-09:00"``: in the recipient's local time, a broadcast's, regular or
    #: multivariate mailing's message due inside it waits for its end (a window may wrap
    #: midnight); trigger mailings ignore it (``engine.core.localtime``).
    quiet_hours: str | None = None
    #: Email: put an open-tracking pixel in each message (where links are tracked).
    track_opens: bool = True
    #: Email: ``List-Unsubscribe`` with one-click POST (RFC 8058) in each message (where
    #: links are tracked: the header is the message's own unsubscribe link).
    list_unsubscribe: bool = True
    #: Email: inline the HTML's ``<style>`` rules into ``style`` attributes (css-inline).
    inline_css: bool = True

    def quiet(self) -> QuietHours | None:
        """The quiet hours, parsed (checked when the config was read)."""
        return None if self.quiet_hours is None else parse_quiet_hours(self.quiet_hours)


class DatabaseConfig(msgspec.Struct, frozen=True, kw_only=True):
    """``[databases.NAME]``: a profile database's custom field types (see
    ``engine.core.fields``): ``fields = { age = "int", plan = { type = "enum", ... } }``,
    and its global control group: ``control_group = 2.5`` holds a stable 2.5% of its
    profiles out of every mailing but those that ignore it (``engine.core.groups``)."""

    fields: dict[str, FieldSpec] = msgspec.field(default_factory=dict)
    #: Percent of the database's profiles held out of every mailing (0 <= x < 100).
    control_group: float = 0.0

    def field_specs(self) -> dict[str, FieldSpec]:
        return dict(self.fields)


class Config(msgspec.Struct, frozen=True, kw_only=True):
    """A whole, checked config file."""

    path: Path | None
    engine: EngineConfig
    gateways: dict[str, GatewayConfig]
    senders: dict[str, SenderConfig]
    virtual_senders: dict[str, VirtualSenderConfig]
    resources: dict[str, ResourceConfig]
    databases: dict[str, DatabaseConfig] = msgspec.field(default_factory=dict)
    tracking: TrackingConfig = TrackingConfig()
    gallery: GalleryConfig = GalleryConfig()
    limits: LimitsConfig = LimitsConfig()
    api: ApiConfig = ApiConfig()
    #: None: no ``[cluster]`` table, one process does all the work (as before).
    cluster: ClusterConfig | None = None
    #: ``[hooks.NAME]``: action hooks.
    hooks: dict[str, HookConfig] = msgspec.field(default_factory=dict)

    def field_specs(self, database: str) -> dict[str, FieldSpec]:
        """The custom field types declared for ``database`` (none: all text)."""
        db = self.databases.get(database)
        return db.field_specs() if db else {}

    def tracking_base(self, resource: str) -> str | None:
        """``{scheme}://{domain}`` on which the resource's links and unsubscribe pages are
        made, or None when its links are not tracked (no domain, or ``track_links``
        off)."""
        res = self.resources.get(resource)
        domain = (res.tracking_domain if res else None) or self.tracking.domain
        track = res.track_links if res is not None and res.track_links is not None \
            else self.tracking.track_links
        if domain is None or not track:
            return None
        return f"{self.tracking.scheme}://{domain}"

    def resources_of_gateway(self, gateway: str) -> list[str]:
        """The resources that can send through ``gateway`` (through a sender of one of its
        virtual sender's rules): the ones a STOP reply to that gateway unsubscribes from."""
        senders = {name for name, s in self.senders.items() if s.gateway == gateway}
        out = []
        for name, res in self.resources.items():
            vs = self.virtual_senders.get(res.virtual_sender)
            if vs is not None and any(t.sender in senders for r in vs.rules for t in r.senders):
                out.append(name)
        return out

    @property
    def base_dir(self) -> Path:
        return self.path.parent if self.path else Path.cwd()

    def resolve(self, relative: str) -> Path:
        """A path from the config, relative to the config file's directory."""
        p = Path(relative).expanduser()
        return p if p.is_absolute() else self.base_dir / p

    @property
    def database_url(self) -> str:
        """The store's URL: ``HERALD_DATABASE`` if set, else ``[engine] database``, a
        relative SQLite path made relative to the config's directory
        (``engine.store.open``)."""
        from engine.store.open import ENV, resolve_url

        return resolve_url(os.environ.get(ENV) or self.engine.database, self.base_dir)

    @property
    def database_path(self) -> Path:
        """The SQLite file of the store (a ValueError on PostgreSQL)."""
        from engine.store.open import is_postgres, sqlite_path

        url = self.database_url
        if is_postgres(url):
            raise ValueError("the store is PostgreSQL, not a file")
        return sqlite_path(url)


_TOML_AT = re.compile(r"\(at line (\d+), column (\d+)\)")
_AT = re.compile(r"^(?P<msg>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.S)
_UNKNOWN = re.compile(r"^Object contains unknown field `(?P<key>[^`]*)`$")
_MISSING = re.compile(r"^Object missing required field `(?P<key>[^`]*)`$")

S = TypeVar("S")


def _join(prefix: str, rest: str) -> str:
    if not rest:
        return prefix
    if rest.startswith("["):
        return prefix + rest
    return f"{prefix}.{rest}" if prefix else rest


def _problem(file: str, prefix: str, err: msgspec.ValidationError) -> ConfigProblem:
    m = _AT.match(str(err))
    assert m is not None  # the pattern matches any string
    msg, sub = m["msg"], (m["path"] or "").lstrip(".")
    path = _join(prefix, sub)
    if u := _UNKNOWN.match(msg):
        return ConfigProblem(file, _join(path, u["key"]), "unknown key (misspelled?)")
    if u := _MISSING.match(msg):
        return ConfigProblem(file, _join(path, u["key"]), "required key is missing")
    return ConfigProblem(file, path, msg[0].lower() + msg[1:] if msg else "invalid value")


class _Decoder:
    """Decodes tables one at a time, collecting problems instead of stopping at the first."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.problems: list[ConfigProblem] = []

    def fail(self, path: str, message: str) -> None:
        self.problems.append(ConfigProblem(self.file, path, message))

    def convert(self, value: Any, typ: type[S], path: str) -> S | None:
        try:
            return msgspec.convert(value, typ, strict=True)
        except msgspec.ValidationError as err:
            self.problems.append(_problem(self.file, path, err))
            return None

    def table(self, raw: Mapping[str, Any], key: str) -> dict[str, Any]:
        value = raw.get(key, {})
        if not isinstance(value, dict):
            self.fail(key, f"expected a table, got {type(value).__name__}")
            return {}
        return value

    def named(
        self, raw: Mapping[str, Any], key: str, decode: Callable[[Any, str], S | None]
    ) -> dict[str, S]:
        out: dict[str, S] = {}
        for name, value in self.table(raw, key).items():
            path = f"{key}.{name}"
            if not isinstance(value, dict):
                self.fail(path, f"expected a table, got {type(value).__name__}")
                continue
            decoded = decode(value, path)
            if decoded is not None:
                out[name] = decoded
        return out


_TOP_LEVEL = ("engine", "gateways", "senders", "virtual_senders", "resources", "databases",
              "tracking", "gallery", "limits", "api", "cluster", "hooks")


def parse_config(
    raw: Mapping[str, Any],
    *,
    drivers: Mapping[str, type[Driver]],
    file: str = "<config>",
    path: Path | None = None,
) -> Config:
    """Decode and cross-check an already parsed TOML document; raise ConfigError."""
    d = _Decoder(file)
    for key in raw:
        if key not in _TOP_LEVEL:
            d.fail(key, f"unknown table (expected one of: {', '.join(_TOP_LEVEL)})")
    engine = d.convert(d.table(raw, "engine"), EngineConfig, "engine") or EngineConfig()
    from engine.store.open import bad_url
    from engine.store.open import is_postgres as is_postgres_url

    if (why := bad_url(engine.database)) is not None:
        d.fail("engine.database", why)
    if (why := bad_timezone(engine.timezone)) is not None:
        d.fail("engine.timezone", why)
    tracking = (d.convert(d.table(raw, "tracking"), TrackingConfig, "tracking")
                or TrackingConfig())
    gallery = d.convert(d.table(raw, "gallery"), GalleryConfig, "gallery") or GalleryConfig()
    limits = d.convert(d.table(raw, "limits"), LimitsConfig, "limits") or LimitsConfig()
    api = d.convert(d.table(raw, "api"), ApiConfig, "api") or ApiConfig()
    cluster = (d.convert(d.table(raw, "cluster"), ClusterConfig, "cluster") or ClusterConfig()
               if "cluster" in raw else None)
    if cluster is not None:
        if cluster.redis is not None and not cluster.redis.startswith(
                ("redis://", "rediss://", "unix://")):
            d.fail("cluster.redis", f"{cluster.redis!r}: expected redis://HOST[:PORT][/DB]")
        if not is_postgres_url(os.environ.get("HERALD_DATABASE") or engine.database):
            d.fail("engine.database", "a [cluster] shares its work through PostgreSQL:"
                   " expected a postgresql:// URL")

    def gateway(value: dict[str, Any], where: str) -> GatewayConfig | None:
        options = dict(value)
        name = options.pop("driver", None)
        secret = options.pop("receipt_secret", None)
        if secret is not None and (not isinstance(secret, str) or len(secret) < 16):
            d.fail(f"{where}.receipt_secret", "expected a string of at least 16 characters")
            secret = None
        if not isinstance(name, str):
            d.fail(f"{where}.driver", "required key is missing: the driver's name, e.g. 'file'")
            return None
        driver = drivers.get(name)
        if driver is None:
            known = ", ".join(sorted(drivers)) or "none installed"
            d.fail(f"{where}.driver", f"unknown driver {name!r} (installed: {known})")
            return None
        before = len(d.problems)
        decoded = d.convert(options, driver.Config, where)
        hidden = list(secret_values(value))  # a driver's message must not echo a secret
        d.problems[before:] = [ConfigProblem(p.file, p.path, redact(p.message, hidden))
                               for p in d.problems[before:]]
        return None if decoded is None else GatewayConfig(name, decoded, secret)

    gateways = d.named(raw, "gateways", gateway)
    senders = d.named(raw, "senders", lambda v, p: d.convert(v, SenderConfig, p))
    vsenders = d.named(
        raw, "virtual_senders", lambda v, p: d.convert(v, VirtualSenderConfig, p)
    )
    resources = d.named(raw, "resources", lambda v, p: d.convert(v, ResourceConfig, p))
    def database(value: dict[str, Any], where: str) -> DatabaseConfig | None:
        for key in value:
            if key not in ("fields", "control_group"):
                d.fail(f"{where}.{key}", "unknown key (misspelled?)")
        control = value.get("control_group", 0.0)
        if isinstance(control, bool) or not isinstance(control, int | float):
            d.fail(f"{where}.control_group",
                   f"expected a percent (a number, 0 <= x < 100), got {type(control).__name__}")
            control = 0.0
        elif not 0 <= control < 100:
            d.fail(f"{where}.control_group", f"expected a percent, 0 <= x < 100, got {control}")
            control = 0.0
        raw_fields = value.get("fields", {})
        if not isinstance(raw_fields, dict):
            d.fail(f"{where}.fields", "expected a table of field types")
            return None
        fields: dict[str, FieldSpec] = {}
        for field_name, raw_spec in raw_fields.items():
            path = f"{where}.fields.{field_name}"
            spec = d.convert({"type": raw_spec} if isinstance(raw_spec, str) else raw_spec,
                             FieldSpec, path)
            if spec is None:
                continue
            if field_name in ("phone", "email", "id", "phones"):
                d.fail(path, "a built-in field; its type is fixed")
            elif spec.type == "enum" and not spec.values:
                d.fail(f"{path}.values", "an enum needs its values")
            elif spec.type != "enum" and spec.values is not None:
                d.fail(f"{path}.values", 'values only go with type = "enum"')
            else:
                fields[field_name] = spec
        return DatabaseConfig(fields=fields, control_group=float(control))

    databases = d.named(raw, "databases", database)

    def hook(value: dict[str, Any], where: str) -> HookConfig | None:
        before = len(d.problems)
        decoded = d.convert(value, HookConfig, where)
        hidden = list(secret_values(value))
        d.problems[before:] = [ConfigProblem(p.file, p.path, redact(p.message, hidden))
                               for p in d.problems[before:]]
        if decoded is None:
            return None
        t = decoded.transport
        if not decoded.url.startswith(_HOOK_SCHEMES[t]):
            d.fail(f"{where}.url", f"{redact(decoded.url)!r}: a {t} hook's url starts with"
                   f" {' or '.join(_HOOK_SCHEMES[t])}")
        own = {"http": ("success", "headers", "secret"), "rabbitmq": ("exchange", "routing_key"),
               "nats": ("subject",)}
        for other, keys in own.items():
            if other != t:
                for key in keys:
                    if key in value:
                        d.fail(f"{where}.{key}", f"a key of the {other} transport, not of {t}")
        if t == "rabbitmq" and decoded.exchange is None:
            d.fail(f"{where}.exchange", 'required key is missing (\"\" for the default'
                   ' exchange)')
        if t == "nats" and decoded.subject is None:
            d.fail(f"{where}.subject", "required key is missing")
        if decoded.success:
            try:
                re.compile(decoded.success)
            except re.error as err:
                d.fail(f"{where}.success", f"not a regular expression: {err}")
        if decoded.retry_initial > decoded.retry_max:
            d.fail(f"{where}.retry_initial", "greater than retry_max")
        if t == "http":  # the broker clients are imported only when a hook runs
            from engine.events.transports import transport_class

            for key, message in transport_class(t).problems(decoded):
                d.fail(f"{where}.{key}", redact(message, hidden))
        return decoded

    hooks = d.named(raw, "hooks", hook)
    for name, h in hooks.items():
        for i, r in enumerate(h.resources):
            if r not in resources and r not in d.table(raw, "resources"):
                d.fail(f"hooks.{name}.resources[{i}]", f"no resource named {r!r}")

    raw_gateways = d.table(raw, "gateways")
    for name, sender in senders.items():
        if sender.gateway not in raw_gateways:
            d.fail(f"senders.{name}.gateway", f"no gateway named {sender.gateway!r}")
        gw = gateways.get(sender.gateway)
        driver_cls = drivers.get(gw.driver) if gw is not None else None
        if driver_cls is not None:
            _check_sender(d, f"senders.{name}", sender, driver_cls.capabilities.channel)
    raw_senders = d.table(raw, "senders")
    for name, vs in vsenders.items():
        for i, rule in enumerate(vs.rules):
            for j, target in enumerate(rule.senders):
                if target.sender not in raw_senders:
                    d.fail(
                        f"virtual_senders.{name}.rules[{i}].senders[{j}].sender",
                        f"no sender named {target.sender!r}",
                    )
    for name, vs in vsenders.items():
        try:
            vs.router()
        except (ValueError, msgspec.ValidationError) as err:
            d.fail(f"virtual_senders.{name}.rules", str(err))
    raw_vsenders = d.table(raw, "virtual_senders")
    for name, res in resources.items():
        if res.quiet_hours is not None:
            try:
                parse_quiet_hours(res.quiet_hours)
            except ValueError as err:
                d.fail(f"resources.{name}.quiet_hours", str(err))
        if res.virtual_sender not in raw_vsenders:
            d.fail(
                f"resources.{name}.virtual_sender",
                f"no virtual sender named {res.virtual_sender!r}",
            )
        routed = vsenders.get(res.virtual_sender)
        for i, rule in enumerate(routed.rules if routed is not None else ()):
            for j, target in enumerate(rule.senders):
                target_sender = senders.get(target.sender)
                target_gw = gateways.get(target_sender.gateway) \
                    if target_sender is not None else None
                if target_sender is None or target_gw is None:
                    continue
                target_driver = drivers.get(target_gw.driver)
                carries = target_driver.capabilities.channel if target_driver else res.channel
                if carries != res.channel:
                    d.fail(f"resources.{name}.channel",
                           f"{res.channel!r}, but its virtual sender"
                           f" {res.virtual_sender!r} routes to sender {target.sender!r}"
                           f" (virtual_senders.{res.virtual_sender}.rules[{i}].senders[{j}])"
                           f" on gateway {target_sender.gateway!r}, whose"
                           f" {target_gw.driver!r} driver sends {carries}")
    if d.problems:
        raise ConfigError(d.problems)
    return Config(
        path=path,
        engine=engine,
        gateways=gateways,
        senders=senders,
        virtual_senders=vsenders,
        resources=resources,
        databases=databases,
        tracking=tracking,
        gallery=gallery,
        limits=limits,
        api=api,
        cluster=cluster,
        hooks=hooks,
    )


def _check_sender(d: _Decoder, where: str, sender: SenderConfig, channel: str) -> None:
    """An SMS sender needs a ``caller_id`` and no email keys; an email sender a valid
    ``from`` and no ``caller_id``: what its gateway's driver carries decides."""
    email_keys = {"from": sender.from_, "reply_to": sender.reply_to,
                  "return_path": sender.return_path}
    if channel == "sms":
        if sender.caller_id is None:
            d.fail(f"{where}.caller_id", "required key is missing: an SMS sender's caller id"
                   " (its gateway's driver sends SMS)")
        for key, value in email_keys.items():
            if value is not None:
                d.fail(f"{where}.{key}", "an email sender's key, but this sender's gateway"
                       " sends SMS (an SMS sender has a caller_id)")
        return
    if sender.caller_id is not None:
        d.fail(f"{where}.caller_id", "an SMS sender's key, but this sender's gateway sends"
               " email (an email sender has from, and optionally reply_to)")
    if sender.from_ is None:
        d.fail(f"{where}.from", 'required key is missing: an email sender\'s From, e.g.'
               ' "News <news@example.com>" (its gateway\'s driver sends email)')
        return
    from engine.core.mime import parse_address

    for key, value in email_keys.items():
        if value is None:
            continue
        try:
            parse_address(value, bare=key == "return_path")
        except InputError as err:
            d.fail(f"{where}.{key}", str(err))


def bad_timezone(name: str) -> str | None:
    """Why ``name`` is not an IANA time zone this machine knows (None: it is one)."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return (f"unknown time zone {name!r}: expected an IANA name such as"
                " 'Europe/Moscow' or 'UTC'")
    return None


def find_config_path(explicit: str | os.PathLike[str] | None = None) -> Path:
    """``explicit``, else ``$HERALD_CONFIG``, else ``./herald.toml``."""
    if explicit:
        return Path(explicit)
    env = os.environ.get("HERALD_CONFIG")
    return Path(env) if env else Path("herald.toml")


def load_config(
    path: str | os.PathLike[str] | None, *, drivers: Mapping[str, type[Driver]]
) -> Config:
    """Read, decode and check a config file; raise ConfigError naming the file."""
    p = find_config_path(path)
    file = str(p)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        hint = "" if path else " (give --config PATH or set HERALD_CONFIG)"
        raise ConfigError([ConfigProblem(file, "", f"no such file{hint}")]) from None
    except OSError as err:
        raise ConfigError([ConfigProblem(file, "", err.strerror or str(err))]) from None
    try:
        raw = tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError as err:
        raise ConfigError([ConfigProblem(file, "", f"not UTF-8 text ({err.reason})")]) from None
    except tomllib.TOMLDecodeError as err:
        m = _TOML_AT.search(str(err))
        where = f"{file}:{m[1]}:{m[2]}" if m else file
        msg = _TOML_AT.sub("", str(err)).strip()
        raise ConfigError([ConfigProblem(where, "", f"not valid TOML: {msg}")]) from None
    return parse_config(raw, drivers=drivers, file=file, path=p.resolve())

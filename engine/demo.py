"""``herald demo``: a throw-away workspace, a generated audience, one mailing end to end.

It sends through two gateway simulators on loopback (one a little faulty: latency, 1% of
requests answered 500, a few numbers rejected), via two senders of one virtual sender.

The audience is built to exercise every rule a real one breaks: the same phone written in
different formats on different profiles, unsubscribed profiles, profiles with no
subscription at all, suppressed phones and malformed numbers. ``generate`` returns the plan
(how many of each were planted) so a test can check the mailing log against it. It writes
through the store's protocols only, so it fills any store.
"""

from __future__ import annotations

import json
import random
from array import array
from pathlib import Path
from typing import Any

import msgspec

from engine.errors import StoreError
from engine.store.base import ImportRecord, Store
from engine.store.models import AudienceSource

__all__ = ["DEMO_CONFIG", "DEMO_TEMPLATE", "AudiencePlan", "generate", "write_workspace"]

DEMO_CONFIG = """\
# A Herald workspace made by `herald demo`. See config/herald.toml for every key.
# The two gateways are simulators that `herald demo` ran on loopback while it sent;
# start your own with `herald simulate --port 8025` and point `url` at it to send again.
[engine]
database = {database}
default_region = "RU"          # numbers written without a country code are Russian

[gateways.main]
driver = "http"                # herald-json over HTTP/1.1 (docs/wire-format.md)
url = "{main_url}"
batch_size = 100
# the simulators post receipts and replies to POST /api/v1/dlr|inbound/NAME?secret=...
receipt_secret = "{secret}"

[gateways.backup]
driver = "http"
url = "{backup_url}"
batch_size = 100
receipt_secret = "{secret}"

[senders.main]
gateway = "main"
caller_id = "HERALD"
rate = 0                       # segments per second; 0 = as fast as the gateway answers
[senders.main.retry.transient]
base = 0.05
[senders.main.retry.message]
base = 0.05

[senders.backup]
gateway = "backup"
caller_id = "HERALD"
[senders.backup.retry.transient]
base = 0.05

[virtual_senders.default]
rules = [
    {{ senders = [{{ sender = "main", percent = 70 }}, {{ sender = "backup", percent = 30 }}] }},
]

[resources.news]
channel = "sms"
databases = ["customers"]
virtual_sender = "default"
unsubscribe_url = "https://herald.example/u"

# The demo served the tracking domain on loopback: each text's link went out as a short
# per-recipient link there, and {{unsubscribe}} as a per-recipient page.
[tracking]
domain = "{tracking}"
scheme = "http"
"""

DEMO_TEMPLATE = (
    "Hi {lead._fname}! "
    '{if lead._city equal "Moscow"}Our Moscow flagship opens late on Saturday.'
    "{else}New arrivals in {lead._city} this week.{end}"
    "{if lead.interests} Picked for you: "
    "{for item in lead.interests}{item}{if not loop.last}, {end}{end}.{end}"
    " https://shop.example/new?utm_source=sms Stop: {unsubscribe}"
)

_FIRST = ["Anna", "Boris", "Chloé", "Dmitri", "Elena", "Farid", "Galina", "Hugo", "Irina",
          "José", "Katya", "Lev", "Maria", "Nikolai", "Olga", "Pavel", "Zoë"]
_CITIES = ["Moscow", "Saint Petersburg", "Kazan", "Novosibirsk", "Yekaterinburg", "Sochi"]
_INTERESTS = ["sneakers", "jackets", "bags", "watches", "scarves", "sunglasses"]
_MALFORMED = ["12345", "+7 912", "phone", "n/a", "0000", "+999 123 4567",
              "7916123456789012", "+7 916 123 45"]


class AudiencePlan(msgspec.Struct, frozen=True):
    """What ``generate`` planted. Categories are disjoint."""

    profiles: int
    unique: int
    duplicates: int
    unsubscribed: int
    no_subscription: int
    suppressed: int
    invalid: int

    @property
    def subscribed(self) -> int:
        return self.profiles - self.unsubscribed - self.no_subscription

    @property
    def recipients(self) -> int:
        return self.unique


def _formats(national: str, rng: random.Random) -> str:
    """One Russian mobile number (10 national digits) written as people write it."""
    a, b, c, d = national[:3], national[3:6], national[6:8], national[8:]
    return rng.choice([
        f"+7{national}",
        f"+7 {a} {b}-{c}-{d}",
        f"8 ({a}) {b}-{c}-{d}",
        f"8{national}",
        f"7 {a} {b} {c} {d}",
        f"+7({a}){b}{c}{d}",
    ])


async def _last_profile_id(store: Store, source: AudienceSource, resource_id: int) -> int:
    """The database's highest profile id (0 if it has none)."""
    last = 0
    if await store.count_audience(source):
        while rows := await store.audience_chunk(source, resource_id, last, 10_000):
            last = rows[-1][0]  # AudienceRow.profile_id (the hot path hands bare tuples)
    return last


async def generate(store: Store, *, profiles: int, resource: str = "news",
                   database: str = "customers", seed: int = 1, chunk: int = 50_000,
                   messy: bool = True) -> AudiencePlan:
    """Fill ``database`` with ``profiles`` generated profiles subscribed to ``resource``.

    ``messy``: phones written in the many ways people write them; otherwise in E.164, as
    after an import. Imported ``chunk`` profiles at a time, so memory stays small. Nobody
    else may add profiles to the database meanwhile: the store picks the new profiles' ids
    and ``ImportResult`` does not say them, so the unsubscribed ones are found again by
    phone (or, in a database that had profiles, read back after the last one).
    """
    rng = random.Random(seed)
    fmt = _formats if messy else (lambda national, rng: "+7" + national)
    database_id = await store.database_id(database, create=True)
    resource_id = await store.resource_id(resource)
    source = AudienceSource("list", database_id)
    after = await _last_profile_id(store, source, resource_id)
    fresh = after == 0
    counts = dict.fromkeys(
        ("unique", "duplicates", "unsubscribed", "no_subscription", "suppressed", "invalid"), 0
    )
    uniques = array("q")  # national numbers of the profiles that will be messaged
    base = 9_000_000_000 + rng.randrange(0, 10_000) * 10_000
    for start in range(0, profiles, chunk):
        records: list[ImportRecord] = []
        unsubscribed: list[str] = []  # their phones: no other generated one is written alike
        suppressed: list[str] = []
        for i in range(start, min(start + chunk, profiles)):
            roll = rng.random()
            phone: str | None
            if roll < 0.04 and uniques:
                phone = fmt(str(uniques[rng.randrange(len(uniques))]), rng)
                counts["duplicates"] += 1
            elif roll < 0.07:
                phone = fmt(str(base + i), rng)
                unsubscribed.append(phone)
                counts["unsubscribed"] += 1
            elif roll < 0.08:
                phone = None
                counts["no_subscription"] += 1
            elif roll < 0.10:
                phone = fmt(str(base + i), rng)
                suppressed.append(f"+7{base + i}")
                counts["suppressed"] += 1
            elif roll < 0.12:
                phone = rng.choice(_MALFORMED)
                counts["invalid"] += 1
            else:
                phone = fmt(str(base + i), rng)
                uniques.append(base + i)
                counts["unique"] += 1
            fields: dict[str, Any] = {
                "_fname": rng.choice(_FIRST), "_city": rng.choice(_CITIES),
                "_sex": rng.choice("mf"), "loyalty": rng.randrange(0, 5000),
                "interests": rng.sample(_INTERESTS, rng.randrange(0, 3)),
            }
            if phone is not None:
                fields["phones"] = [phone]
            # no key: every record is a new profile, its phone subscribed to the resource
            records.append(ImportRecord(None, phone, None, fields))
        result = await store.import_profiles(database_id, records, matching="phone",
                                             resource_id=resource_id, mode="add")
        if result.added != len(records):
            raise StoreError(f"database {database!r}: {result.added} of {len(records)}"
                             " generated profiles added")
        if fresh:  # every profile with one of those phones is one of this call's
            ids = list((await store.find_profiles(database_id, "phone", unsubscribed)).values())
        else:  # older ones may share a phone: read the chunk's profiles back
            rows = await store.audience_chunk(source, resource_id, after, len(records))
            if len(rows) != len(records):
                raise StoreError(f"database {database!r} changed while the demo filled it")
            after = rows[-1][0]
            wanted = set(unsubscribed)
            ids = [pid for pid, _, phone, _ in rows if phone in wanted]
        await store.set_subscription_status(resource_id, ids, "unsubscribed")
        await store.add_suppressions("global", "phone", suppressed)
    return AudiencePlan(profiles=profiles, **counts)


def write_workspace(directory: Path, *, main_url: str, backup_url: str,
                    database: str = "herald.db", tracking: str = "127.0.0.1:8080",
                    secret: str = "demo-receipt-secret") -> Path:
    """Write the demo config and template into ``directory``; return the config path.
    ``database``: the store's URL (default: a SQLite file in ``directory``); ``tracking``:
    the tracking domain (where the demo serves the API); ``secret``: the gateways'
    receipt secret."""
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "herald.toml"
    config.write_text(DEMO_CONFIG.format(main_url=main_url, backup_url=backup_url,
                                         database=json.dumps(database), tracking=tracking,
                                         secret=secret), encoding="utf-8")
    (directory / "template.txt").write_text(DEMO_TEMPLATE, encoding="utf-8")
    return config


#: The link of ``DEMO_TEMPLATE``: every text carries it as a short link.
DEMO_LINK = "https://shop.example/new?utm_source=sms"
#: A link-preview bot's user agent: redirected, never counted as a click.
PREVIEW_BOT = "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)"


class TrackingDemo(msgspec.Struct, frozen=True):
    """What ``exercise_tracking`` did through the real routes."""

    clicks: int
    clickers: int
    bot_clicks: int
    stop_phone: str | None


async def exercise_tracking(
    store: Store, run_id: int, base: str, *, people: int = 12, twice: int = 3,
    seed: int = 1,
) -> TrackingDemo:
    """Click the short link of ``people`` sent messages through ``base`` (the served
    tracking domain): ``twice`` of them click again, and a link-preview bot fetches one.
    Each answer must be a 302 to ``DEMO_LINK``. Returns what was done."""
    import httpx

    from engine.core.codes import Codec

    rng = random.Random(seed)
    links = [row for row in await store.ensure_links(run_id, [], 0) if row.url == DEMO_LINK]
    if not links:
        return TrackingDemo(0, 0, 0, None)
    codec = Codec(await store.tracking_secret(), b"link")
    sent = [r for r in await store.recipient_rows(run_id)
            if r.state in ("sent", "delivered", "undelivered")]
    chosen = rng.sample(sent, min(people, len(sent)))
    clicks = bots = 0
    async with httpx.AsyncClient(base_url=base, timeout=10) as client:
        for i, recipient in enumerate(chosen):
            url = f"/{codec.encode(links[0].id, recipient.seq)}"
            for _ in range(2 if i < twice else 1):
                answer = await client.get(url, headers={"user-agent": "Mozilla/5.0 (demo)"})
                if answer.status_code != 302 or answer.headers.get("location") != DEMO_LINK:
                    raise StoreError(f"short link {base}{url} answered {answer.status_code},"
                                     f" not a 302 to {DEMO_LINK}")
                clicks += 1
        if chosen:
            await client.get(f"/{codec.encode(links[0].id, chosen[0].seq)}",
                             headers={"user-agent": PREVIEW_BOT})
            bots += 1
    # a STOP reply matches subscriptions by their phone in E.164, as imports store it; the
    # generator wrote most phones as people write them, so take one it wrote in E.164
    news = await store.resource_id("news")
    stop = None
    for recipient in reversed(sent):
        if await store.find_subscriptions(news, phone=recipient.phone, limit=1):
            stop = recipient.phone
            break
    return TrackingDemo(clicks, len(chosen), bots, stop)

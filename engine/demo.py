"""``herald demo``: a throw-away workspace, a generated audience, one mailing end to end.

It sends through two gateway simulators on loopback (one a little faulty: latency, 1% of
requests answered 500, a few numbers rejected), via two senders of one virtual sender.

The audience is built to exercise every rule a real one breaks: the same phone written in
different formats on different profiles, unsubscribed profiles, profiles with no
subscription at all, suppressed phones and malformed numbers. ``generate`` returns the plan
(how many of each were planted) so a test can check the mailing log against it.
"""

from __future__ import annotations

import random
import time
from array import array
from pathlib import Path
from typing import Any

import msgspec

from engine.store.sqlite import SQLiteStore

__all__ = ["DEMO_CONFIG", "DEMO_TEMPLATE", "AudiencePlan", "generate", "write_workspace"]

DEMO_CONFIG = """\
# A Herald workspace made by `herald demo`. See config/herald.toml for every key.
# The two gateways are simulators that `herald demo` ran on loopback while it sent;
# start your own with `herald simulate --port 8025` and point `url` at it to send again.
[engine]
database = "herald.db"
default_region = "RU"          # numbers written without a country code are Russian

[gateways.main]
driver = "http"                # herald-json over HTTP/1.1 (docs/wire-format.md)
url = "{main_url}"
batch_size = 100

[gateways.backup]
driver = "http"
url = "{backup_url}"
batch_size = 100

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
"""

DEMO_TEMPLATE = (
    "Hi {lead._fname}! "
    '{if lead._city equal "Moscow"}Our Moscow flagship opens late on Saturday.'
    "{else}New arrivals in {lead._city} this week.{end}"
    "{if lead.interests} Picked for you: "
    "{for item in lead.interests}{item}{if not loop.last}, {end}{end}.{end}"
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


def generate(store: SQLiteStore, *, profiles: int, resource: str = "news",
             database: str = "customers", seed: int = 1, chunk: int = 50_000,
             messy: bool = True) -> AudiencePlan:
    """Fill ``database`` with ``profiles`` generated profiles subscribed to ``resource``.

    ``messy``: phones written in the many ways people write them; otherwise in E.164, as
    after an import. Written in transactions of ``chunk`` profiles, so memory stays small.
    """
    rng = random.Random(seed)
    fmt = _formats if messy else (lambda national, rng: "+7" + national)
    conn = store.conn
    database_id = store.database_id_sync(database, create=True)
    resource_id = store.resource_id_sync(resource)
    now = time.time()
    enc = msgspec.json.Encoder()
    counts = dict.fromkeys(
        ("unique", "duplicates", "unsubscribed", "no_subscription", "suppressed", "invalid"), 0
    )
    uniques = array("q")  # national numbers of the profiles that will be messaged
    (next_id,) = conn.execute("SELECT coalesce(max(id), 0) + 1 FROM profiles").fetchone()
    base = 9_000_000_000 + rng.randrange(0, 10_000) * 10_000
    with store._tx() as c:
        c.execute(
            "INSERT OR IGNORE INTO suppression_lists (name, is_global, created_at)"
            " VALUES ('global', 1, ?)",
            (now,),
        )
        (list_id,) = c.execute(
            "SELECT id FROM suppression_lists WHERE name = 'global'"
        ).fetchone()
    for start in range(0, profiles, chunk):
        profile_rows: list[tuple[Any, ...]] = []
        sub_rows: list[tuple[Any, ...]] = []
        suppressed: list[tuple[Any, ...]] = []
        for i in range(start, min(start + chunk, profiles)):
            pid = next_id + i
            roll = rng.random()
            status = "subscribed"
            phone: str | None
            if roll < 0.04 and uniques:
                phone = fmt(str(uniques[rng.randrange(len(uniques))]), rng)
                counts["duplicates"] += 1
            elif roll < 0.07:
                phone = fmt(str(base + i), rng)
                status = "unsubscribed"
                counts["unsubscribed"] += 1
            elif roll < 0.08:
                phone = None
                counts["no_subscription"] += 1
            elif roll < 0.10:
                phone = fmt(str(base + i), rng)
                suppressed.append((list_id, f"+7{base + i}", now))
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
                sub_rows.append((pid, resource_id, phone, status, now, now))
            profile_rows.append((pid, database_id, phone, enc.encode(fields).decode(), now, now))
        with store._tx() as c:
            c.executemany(
                "INSERT INTO profiles (id, database_id, phone, fields, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                profile_rows,
            )
            c.executemany(
                "INSERT INTO subscriptions (profile_id, resource_id, channel, phone, status,"
                " created_at, updated_at) VALUES (?, ?, 'sms', ?, ?, ?, ?)",
                sub_rows,
            )
            c.executemany(
                "INSERT OR IGNORE INTO suppressions (list_id, kind, value, added_at)"
                " VALUES (?, 'phone', ?, ?)",
                suppressed,
            )
    return AudiencePlan(profiles=profiles, **counts)


def write_workspace(directory: Path, *, main_url: str, backup_url: str) -> Path:
    """Write the demo config and template into ``directory``; return the config path."""
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "herald.toml"
    config.write_text(DEMO_CONFIG.format(main_url=main_url, backup_url=backup_url),
                      encoding="utf-8")
    (directory / "template.txt").write_text(DEMO_TEMPLATE, encoding="utf-8")
    return config

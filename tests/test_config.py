"""Config decoding: every problem named by file and key path."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.config import load_config
from engine.errors import ConfigError
from engine.plugins import load_plugins

ROOT = Path(__file__).resolve().parents[1]
DRIVERS = load_plugins().drivers

GOOD = """\
[engine]
database = "herald.db"
[gateways.out]
driver = "file"
path = "sent.jsonl"
[senders.s1]
gateway = "out"
caller_id = "ACME"
[virtual_senders.v]
rules = [{ senders = [{ sender = "s1", percent = 100 }] }]
[resources.news]
channel = "sms"
databases = ["main"]
virtual_sender = "v"
"""


def problems(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "herald.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path, drivers=DRIVERS)
    return [f"{p.path}: {p.message}" for p in info.value.problems]


def test_the_issue_example_loads_and_paths_are_relative_to_the_file(tmp_path: Path) -> None:
    path = tmp_path / "conf" / "herald.toml"
    path.parent.mkdir()
    path.write_text(GOOD, encoding="utf-8")
    config = load_config(path, drivers=DRIVERS)
    assert config.database_path == path.parent.resolve() / "herald.db"
    assert config.gateways["out"].driver == "file"
    assert config.senders["s1"].rate == 0  # unlimited unless set
    assert config.resources["news"].virtual_sender == "v"


def test_example_config_in_repo_is_valid() -> None:
    config = load_config(ROOT / "config" / "herald.toml", drivers=DRIVERS)
    assert set(config.gateways) == {"archive", "blackhole"}


def commented_gateways(text: str) -> dict[str, str]:
    """The commented-out ``# [gateways.NAME]`` examples of a config, uncommented."""
    examples: dict[str, str] = {}
    name: str | None = None
    for line in text.splitlines():
        if line.startswith("# [gateways."):
            name = line[len("# [gateways."):].rstrip("]")
            examples[name] = line[2:] + "\n"
        elif name is not None and line.startswith("# ") and not line.startswith("# # "):
            examples[name] += line[2:] + "\n"
        else:
            name = None
    return examples


def test_every_driver_has_a_commented_example_that_loads(tmp_path: Path) -> None:
    """Each bundled driver of a real gateway has an example in config/herald.toml, and
    each example, uncommented, is a valid gateway."""
    text = (ROOT / "config" / "herald.toml").read_text(encoding="utf-8")
    examples = commented_gateways(text)
    drivers = {e.split('driver = "')[1].split('"')[0] for e in examples.values()}
    assert drivers >= {"http", "smpp", "twilio", "vonage", "infobip", "smscru", "devino",
                       "exolve", "mailgun", "smtp"}
    path = tmp_path / "herald.toml"
    path.write_text(text + "\n" + "\n".join(examples.values()), encoding="utf-8")
    config = load_config(path, drivers=DRIVERS)
    assert set(examples) <= set(config.gateways)



def test_misspelled_key_is_named_by_path(tmp_path: Path) -> None:
    text = GOOD.replace('caller_id = "ACME"', 'caller_id = "ACME"\ngatway = "out"')
    assert problems(tmp_path, text) == ["senders.s1.gatway: unknown key (misspelled?)"]


def test_dangling_references_are_all_reported(tmp_path: Path) -> None:
    text = GOOD.replace('gateway = "out"', 'gateway = "nowhere"').replace(
        'virtual_sender = "v"', 'virtual_sender = "vv"'
    )
    assert problems(tmp_path, text) == [
        "senders.s1.gateway: no gateway named 'nowhere'",
        "resources.news.virtual_sender: no virtual sender named 'vv'",
    ]


def test_virtual_sender_naming_an_unknown_sender(tmp_path: Path) -> None:
    text = GOOD.replace('sender = "s1", percent', 'sender = "s9", percent')
    assert problems(tmp_path, text) == [
        "virtual_senders.v.rules[0].senders[0].sender: no sender named 's9'"
    ]


def test_wrong_types_and_bounds(tmp_path: Path) -> None:
    text = GOOD.replace('caller_id = "ACME"', 'caller_id = "ACME"\nrate = -5').replace(
        "percent = 100", 'percent = "all"'
    )
    assert problems(tmp_path, text) == [
        "senders.s1.rate: expected `float` >= 0.0",
        "virtual_senders.v.rules[0].senders[0].percent: expected `float`, got `str`",
    ]


def test_driver_options_are_checked_by_the_driver(tmp_path: Path) -> None:
    text = GOOD.replace('path = "sent.jsonl"', 'pth = "sent.jsonl"')
    assert problems(tmp_path, text) == ["gateways.out.pth: unknown key (misspelled?)"]
    text = GOOD.replace('path = "sent.jsonl"', "")
    assert problems(tmp_path, text) == ["gateways.out.path: required key is missing"]
    text = GOOD.replace('driver = "file"', 'driver = "smsc"')
    (problem,) = problems(tmp_path, text)
    assert problem.startswith("gateways.out.driver: unknown driver 'smsc' (installed: ")


def test_unknown_table_and_bad_toml(tmp_path: Path) -> None:
    assert problems(tmp_path, GOOD + "[sender.s2]\ngateway = 'out'\n") == [
        "sender: unknown table (expected one of: engine, gateways, senders, virtual_senders,"
        " resources, databases, tracking, gallery, limits, api, cluster, hooks)"
    ]
    path = tmp_path / "bad.toml"
    path.write_text("[engine]\ndatabase = \n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path, drivers=DRIVERS)
    assert str(info.value).startswith(f"{path}:2:12: not valid TOML: Invalid value")


def test_check_config_cli(tmp_path: Path) -> None:
    path = tmp_path / "herald.toml"
    path.write_text(GOOD.replace("caller_id", "caler_id"), encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, "-m", "engine.cli", "check-config", str(path)],
        capture_output=True, text=True, check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        f"{path}: senders.s1.caler_id: unknown key (misspelled?)",
    ]
    path.write_text(GOOD, encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, "-m", "engine.cli", "check-config", str(path)],
        capture_output=True, text=True, check=False,
    )
    assert (proc.returncode, proc.stdout) == (0, "ok\n")


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_any_text_is_a_config_or_a_config_error(tmp_path_factory: Any, text: str) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "herald.toml"
    path.write_text(text, encoding="utf-8")
    try:
        load_config(path, drivers=DRIVERS)
    except ConfigError as err:
        assert err.problems and all(p.file.startswith(str(path)) for p in err.problems)


_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 10**6) | st.floats(allow_nan=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=3),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(
    st.sampled_from(["engine", "gateways", "senders", "virtual_senders", "resources", "x"]),
    st.dictionaries(st.sampled_from(["out", "s1", "v", "news", "rate", "database", "driver"]),
                    _values, max_size=3),
    max_size=5,
))
def test_any_document_is_a_config_or_a_config_error(raw: dict[str, Any]) -> None:
    """Structurally valid TOML with wrong shapes and values never escapes as a crash."""
    from engine.config import parse_config

    try:
        parse_config(raw, drivers=DRIVERS, file="f.toml")
    except ConfigError as err:
        assert err.problems and all(p.file == "f.toml" for p in err.problems)


def test_the_store_url_is_checked_where_it_is_written(tmp_path: Path) -> None:
    text = GOOD.replace('database = "herald.db"', 'database = "mysql://root@db/herald"')
    [problem] = problems(tmp_path, text)
    # (the user in a URL is redacted from messages, as a password would be)
    assert problem == ("engine.database: 'mysql://***@db/herald': expected a file path,"
                       " sqlite:///PATH or a postgresql:// URL")


def test_herald_database_overrides_the_config(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "herald.toml"
    path.write_text(GOOD, encoding="utf-8")
    monkeypatch.setenv("HERALD_DATABASE", "postgresql://postgres@db.example/herald")
    assert load_config(path, drivers=DRIVERS).database_url == (
        "postgresql://postgres@db.example/herald")
    monkeypatch.setenv("HERALD_DATABASE", "sqlite:///elsewhere.db")
    assert load_config(path, drivers=DRIVERS).database_url == (
        "sqlite:///" + str(path.parent.resolve() / "elsewhere.db"))


def test_a_cluster_needs_postgresql_and_a_redis_url(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HERALD_DATABASE", raising=False)
    text = GOOD + '[cluster]\nredis = "localhost:6379"\nlease_tll = 5\n'
    needs_pg = ("engine.database: a [cluster] shares its work through PostgreSQL:"
                " expected a postgresql:// URL")
    assert problems(tmp_path, text) == ["cluster.lease_tll: unknown key (misspelled?)", needs_pg]
    text = GOOD + '[cluster]\nredis = "localhost:6379"\n'
    assert problems(tmp_path, text) == [
        "cluster.redis: 'localhost:6379': expected redis://HOST[:PORT][/DB]", needs_pg,
    ]
    path = tmp_path / "herald.toml"
    path.write_text(GOOD.replace('"herald.db"', '"postgresql://postgres@127.0.0.1/h"')
                    + '[cluster]\nlease_ttl = 5\nredis = "redis://127.0.0.1:6379/0"\n',
                    encoding="utf-8")
    cluster = load_config(path, drivers=DRIVERS).cluster
    assert cluster is not None and cluster.lease_ttl == 5 and cluster.heartbeat_s == 0.5


def test_hooks_are_checked_key_by_key(tmp_path: Path) -> None:
    text = GOOD + """
[hooks.crm]
transport = "http"
url = "https://user:pw@crm.example.com/hook"
events = ["send_sms", "sent_sms"]
[hooks.queue]
transport = "rabbitmq"
url = "amqp://guest:guest@127.0.0.1/"
events = ["deliv_sms"]
secret = "0123456789abcdef"
resources = ["nope"]
[hooks.stream]
transport = "nats"
url = "http://127.0.0.1:4222"
events = ["click_sms"]
[hooks.web]
transport = "http"
url = "https://user:pw@crm.example.com/hook"
events = ["unsub_sms"]
headers = { "Content-Length" = "5" }
success = "("
"""
    found = problems(tmp_path, text)
    assert "hooks.crm.events[1]: invalid enum value 'sent_sms'" in found
    assert "hooks.queue.secret: a key of the http transport, not of rabbitmq" in found
    assert any(p.startswith("hooks.queue.exchange: required key is missing") for p in found)
    assert "hooks.queue.resources[0]: no resource named 'nope'" in found
    assert any(p.startswith("hooks.stream.url: ") and "nats://" in p for p in found)
    assert "hooks.stream.subject: required key is missing" in found
    assert any(p.startswith("hooks.web.url: url must not carry credentials") for p in found)
    assert any(p.startswith("hooks.web.headers.Content-Length: ") for p in found)
    assert any(p.startswith("hooks.web.success: not a regular expression") for p in found)
    assert not any("pw" in p or "guest:guest" in p for p in found)

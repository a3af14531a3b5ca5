"""``herald check-config`` never echoes a URL's credentials or a secret's value."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from engine.errors import ConfigProblem, redact

BASE = """\
[engine]
database = "herald.db"
[senders.s1]
gateway = "g"
caller_id = "ACME"
[virtual_senders.v]
rules = [{ senders = [{ sender = "s1", percent = 100 }] }]
[resources.news]
channel = "sms"
databases = ["main"]
virtual_sender = "v"
[gateways.g]
driver = "http"
"""
SECRETS = ("user", "hunter2-password", "s3cr3t-bearer-token", "0123456789abcdef-rs")


def check_config(tmp_path: Path, gateway: str) -> str:
    path = tmp_path / "herald.toml"
    path.write_text(BASE + gateway, encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "engine.cli", "check-config", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    return done.stdout + done.stderr


@pytest.mark.parametrize("gateway", [
    'url = "https://user:hunter2-password@host/x"',
    'url = "ftp://user:hunter2-password@host/x"',
    'url = "https://user:hunter2-password@/x"',
    'url = "https://user:hunter2-password@host:99x/x"',
    'url = "user:hunter2-password@host/x"',
    'url = "https://user:hunter2-password@host/a b"',
])
def test_a_url_with_credentials_is_refused_without_them(tmp_path: Path, gateway: str) -> None:
    out = check_config(tmp_path, gateway)
    assert "gateways.g" in out
    assert "hunter2-password" not in out and "user:" not in out


@pytest.mark.parametrize("gateway", [
    'url = "https://h/x"\nreceipt_secret = 1234567890',
    'url = "https://h/x"\nreceipt_secret = "short-s3cr3t"',
    'url = "https://h/x"\nreceipt_secret = ["0123456789abcdef-rs"]',
    'url = "https://h/x"\nheaders = { Authorization = "Bearer s3cr3t-bearer-token\\n" }',
    'url = "https://h/x"\nheaders = { Authorization = 12345 }',
    'url = "https://h/x"\nheaders = "Bearer s3cr3t-bearer-token"',
    'url = "https://h/x"\npassword = "hunter2-password"',
    'url = "https://h/x"\ntoken = "s3cr3t-bearer-token"\napi_key = "hunter2-password"',
])
def test_a_bad_secret_is_named_not_shown(tmp_path: Path, gateway: str) -> None:
    out = check_config(tmp_path, gateway)
    assert "gateways.g" in out
    for secret in ("1234567890", "short-s3cr3t", *SECRETS[1:]):
        assert secret not in out


def test_a_message_that_would_echo_a_secret_is_redacted() -> None:
    """A driver's own message quoting the value of a secret key (as a third-party
    driver's ``__post_init__`` may) loses it; an address is not a URL."""
    from engine.config import parse_config
    from engine.drivers import DriverConfig
    from engine.errors import ConfigError

    class Leaky(DriverConfig, kw_only=True):
        api_key: str

        def __post_init__(self) -> None:
            raise ValueError(f"api_key {self.api_key!r} is not valid at http://u:p@h/")

    class Driver:
        Config = Leaky

    raw = {"gateways": {"g": {"driver": "leaky", "api_key": "hunter2-password"}}}
    with pytest.raises(ConfigError) as info:
        parse_config(raw, drivers={"leaky": Driver})  # type: ignore[dict-item]
    assert [p.message for p in info.value.problems] == [
        "api_key '***' is not valid at http://***@h/"
    ]
    assert redact("write to bob@example.com") == "write to bob@example.com"
    assert str(ConfigProblem("f", "k", "not 'https://a:b@h/x'")) == "f: k: not 'https://***@h/x'"

"""Action hooks' messages: Altcraft's structure, per event kind, and the hooks' filters."""

from __future__ import annotations

import json
from typing import Any

import pytest

from engine.events.messages import HookFilter, MessageEncoder, event_date
from tests.events.fakes import event, hook_config

ENCODER = MessageEncoder(account_id=77)


def message(**fields: Any) -> dict[str, Any]:
    kind = fields.pop("kind", "send_sms")
    out: dict[str, Any] = json.loads(ENCODER.encode(event(fields.pop("i", 5), kind, **fields)))
    return out


def test_a_sent_message_has_altcrafts_fields() -> None:
    assert message(i=5, at=1_764_657_211.125) == {
        "event_id": "5",
        "event_type": "send_sms",
        "event_date": "2025-12-02T06:33:31.125Z",
        "account_id": 77,
        "is_test": False,
        "profile_id": 105,
        "list_id": 1,
        "custom_data": None,
        "event_data": {
            "message_id": "r5x-5", "campaign_id": 12, "resource_id": 3, "run_id": 40,
            "phone": "+447911000005", "sender": "ACME", "error": None, "url": None,
        },
    }


@pytest.mark.parametrize(("kind", "fields", "data"), [
    ("deliv_sms", {}, {}),
    ("undeliv_sms", {"error": "absent subscriber"}, {"error": "absent subscriber"}),
    ("click_sms", {"url": "https://shop.example/a"}, {"url": "https://shop.example/a"}),
    ("uclick_sms", {"url": "https://shop.example/a"}, {"url": "https://shop.example/a"}),
    ("unsub_sms", {}, {}),
])
def test_each_message_event_says_its_type_and_its_own_fields(
        kind: str, fields: dict[str, Any], data: dict[str, Any]) -> None:
    out = message(kind=kind, **fields)
    assert out["event_type"] == kind
    assert out["event_data"]["message_id"] == "r5x-5"
    for key, value in data.items():
        assert out["event_data"][key] == value


@pytest.mark.parametrize("kind", ["send", "deliv", "undeliv", "click", "uclick", "unsub",
                                  "open", "uopen", "hbounce", "sbounce", "complain"])
def test_an_email_event_carries_the_address_as_email(kind: str) -> None:
    out = message(kind=kind, phone="ann@example.com", error="5.1.1 user unknown")
    assert out["event_type"] == kind
    assert out["event_data"]["email"] == "ann@example.com"
    assert "phone" not in out["event_data"]
    assert out["event_data"]["error"] == "5.1.1 user unknown"


def test_an_email_event_is_a_hook_event_name() -> None:
    from engine.config import HOOK_EVENTS
    from engine.core.events import ALL_KINDS

    assert set(ALL_KINDS) <= set(HOOK_EVENTS)


def test_a_stop_reply_to_no_message_has_no_message_id() -> None:
    out = message(kind="unsub_sms", message_id=None, mailing_id=None, run_id=None, seq=None)
    assert out["event_data"]["message_id"] is None
    assert out["event_data"]["campaign_id"] is None
    assert out["event_data"]["phone"] == "+447911000005"


@pytest.mark.parametrize("kind", ["import_file", "import_api"])
def test_an_import_event_carries_the_imports_counts(kind: str) -> None:
    counts = b'{"file":"leads.csv","created":10,"updated":2,"skipped":1}'
    out = message(kind=kind, data=counts, mailing_id=None, run_id=None, seq=None,
                  message_id=None, profile_id=None, resource_id=None, resource=None,
                  phone="", sender=None)
    assert out["event_type"] == kind
    assert out["list_id"] == 1
    assert out["profile_id"] is None
    assert out["event_data"] == json.loads(counts)


def test_custom_data_of_the_trigger_call_reaches_the_message() -> None:
    out = message(kind="deliv_sms", custom_data=b'{"order": 9, "tags": ["a"]}')
    assert out["custom_data"] == {"order": 9, "tags": ["a"]}


def test_a_test_send_says_so() -> None:
    assert message(is_test=True)["is_test"] is True


def test_event_date_is_rfc3339_utc_to_the_millisecond() -> None:
    assert event_date(0) == "1970-01-01T00:00:00.000Z"
    assert event_date(1_764_657_211.9999) == "2025-12-02T06:33:31.999Z"
    assert event_date(1_764_657_212.0) == "2025-12-02T06:33:32.000Z"


def test_filters_take_only_the_hooks_events() -> None:
    events = [
        event(1, "send_sms"), event(2, "deliv_sms"), event(3, "click_sms"),
        event(4, "deliv_sms", is_test=True), event(5, "deliv_sms", resource="promo"),
        event(6, "deliv_sms", database="other"), event(7, "deliv_sms", mailing_id=13),
        event(8, "import_api", resource=None, mailing_id=None),
    ]

    def ids(**keys: Any) -> list[int]:
        return [e.position.id for e in HookFilter(hook_config(**keys)).select(events)]

    assert ids() == [1, 2, 3, 5, 6, 7, 8]
    assert ids(events=["deliv_sms"]) == [2, 5, 6, 7]
    assert ids(include_tests=True) == [1, 2, 3, 4, 5, 6, 7, 8]
    # an import has no resource or mailing: those filters leave it out
    assert ids(resources=["news"]) == [1, 2, 3, 6, 7]
    assert ids(mailings=[12]) == [1, 2, 3, 5, 6]
    assert ids(databases=["main"]) == [1, 2, 3, 5, 7, 8]

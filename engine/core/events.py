"""The names of recipients' events (Altcraft's), and how an undelivery's reason is kept.

Every event of a recipient is one row of the store's event record (``EventStore``), in
the order it happened; reports count them and action hooks deliver them.
"""

from __future__ import annotations

import re
from typing import Final, Literal

__all__ = ["ALL_KINDS", "CLICK", "COMPLAINT", "DELIVERED", "EMAIL_KINDS", "HARD_BOUNCE",
           "KINDS", "OPEN", "SENT", "SOFT_BOUNCE", "UNDEFINED", "UNDELIVERED", "UNIQUE_CLICK",
           "UNIQUE_OPEN", "UNSUBSCRIBED", "EventKind", "kind_for", "normalise_reason"]

EventKind = Literal["send_sms", "deliv_sms", "undeliv_sms", "click_sms", "uclick_sms",
                    "unsub_sms", "send", "deliv", "undeliv", "click", "uclick", "unsub",
                    "open", "uopen", "hbounce", "sbounce", "complain"]

#: Recorded ``sent`` (its gateway took it).
SENT: Final = "send_sms"
#: A receipt said delivered.
DELIVERED: Final = "deliv_sms"
#: A receipt said undelivered (``error``: the provider's reason).
UNDELIVERED: Final = "undeliv_sms"
#: A click on a short link, by a person (bots are recorded, never as events).
CLICK: Final = "click_sms"
#: The first click of that recipient on that link (after its ``click_sms``).
UNIQUE_CLICK: Final = "uclick_sms"
#: An unsubscribe: the link's confirmed POST, or a STOP reply.
UNSUBSCRIBED: Final = "unsub_sms"

KINDS: Final = (SENT, DELIVERED, UNDELIVERED, CLICK, UNIQUE_CLICK, UNSUBSCRIBED)

#: An email channel's events, as Altcraft names them: the SMS kinds without ``_sms``,
#: and those only email has.
EMAIL_KINDS: Final = {SENT: "send", DELIVERED: "deliv", UNDELIVERED: "undeliv",
                      CLICK: "click", UNIQUE_CLICK: "uclick", UNSUBSCRIBED: "unsub"}
#: An email's open (its pixel fetched by a person), and the first of its message.
OPEN: Final = "open"
UNIQUE_OPEN: Final = "uopen"
#: A hard bounce (the subscription becomes ``hardbounced``), a soft one, a complaint
#: (``complainer``, the address suppressed).
HARD_BOUNCE: Final = "hbounce"
SOFT_BOUNCE: Final = "sbounce"
COMPLAINT: Final = "complain"
ALL_KINDS: Final = (*KINDS, *EMAIL_KINDS.values(), OPEN, UNIQUE_OPEN, HARD_BOUNCE,
                    SOFT_BOUNCE, COMPLAINT)


def kind_for(kind: str, channel: str) -> str:
    """The event kind ``kind`` (an SMS one: ``send_sms``...) on ``channel``."""
    return EMAIL_KINDS.get(kind, kind) if channel == "email" else kind

#: The reason of an undelivery whose gateway gave none (as Altcraft shows it).
UNDEFINED: Final = "undefined"
_SPACE = re.compile(r"\s+")


def normalise_reason(error: str | None) -> str:
    """The report's form of a provider's reason: trimmed, lower case, inner whitespace as
    one space, at most 200 characters; ``undefined`` when there is none."""
    if error is None:
        return UNDEFINED
    text = _SPACE.sub(" ", error).strip().lower()[:200].rstrip()
    return text or UNDEFINED

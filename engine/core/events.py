"""The names of recipients' events (Altcraft's), and how an undelivery's reason is kept.

Every event of a recipient is one row of the store's event record (``EventStore``), in
the order it happened; reports count them and action hooks deliver them.
"""

from __future__ import annotations

import re
from typing import Final, Literal

__all__ = ["CLICK", "DELIVERED", "KINDS", "SENT", "UNDEFINED", "UNDELIVERED", "UNIQUE_CLICK",
           "UNSUBSCRIBED", "EventKind", "normalise_reason"]

EventKind = Literal["send_sms", "deliv_sms", "undeliv_sms", "click_sms", "uclick_sms",
                    "unsub_sms"]

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

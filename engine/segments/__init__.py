"""Segments: named subsets of a profile database.

A **static** segment is a list of profiles (the result of an import, a file of ids). A
**dynamic** segment is a condition in the template language's expression syntax, evaluated
each time the segment is read, so a launch sends to whoever matches at that moment::

    lead._city equal "Paris" and lead.age greater 18
    lead.tags contains "vip" or not (lead._country in "FR BE")
    within_days(lead.last_order 30) and birthday_within(lead._bdate 7)

Conditions read ``lead.*`` only: custom and standard fields of the profile, and
``lead._id``, ``lead.phone``, ``lead.email`` from its columns. They mean exactly what
``{if ...}`` means in a template (same truthiness, numeric comparison of numbers and numeric
strings, ``contains``/``in`` as list membership or substring, missing = ``""``). This
package holds no SQL: each store judges what its dialect can reproduce faithfully and
leaves the rest to :meth:`Condition.residual`, row by row, streamed (``SegmentStore``). The
date helpers (``dates.py``) take ``now`` as an argument. The ``herald segment`` commands are
in ``engine.commands.segments``.
"""

from __future__ import annotations

from engine.segments.condition import Condition, compile_condition, evaluate, lead_view
from engine.segments.dates import DATE_FUNCTIONS, Now
from engine.segments.ops import (
    Member,
    Segment,
    SegmentInfo,
    condition_of,
    count_segment,
    create_segment,
    get_segment,
    read_profile_ids,
    show_segment,
)

__all__ = [
    "DATE_FUNCTIONS",
    "Condition",
    "Member",
    "Now",
    "Segment",
    "SegmentInfo",
    "compile_condition",
    "condition_of",
    "count_segment",
    "create_segment",
    "evaluate",
    "get_segment",
    "lead_view",
    "read_profile_ids",
    "show_segment",
]

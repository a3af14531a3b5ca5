"""Reports over the store's counters: channel (SMS or email), undeliveries, clicks.

The store keeps counters per (run, sender, hour) as events arrive (``ReportStore``), so a
report reads a few rows per hour of the mailing, however many recipients it had. This
package is the layer above: ``query`` turns what a person typed into a ``ReportFilter``,
``tables`` turns the store's counters into rows with rates, ``output`` writes them as a
table, JSON, CSV or xlsx. ``herald report`` and ``GET /api/v1/reports/*`` share all three.
"""

from engine.reports.output import FORMATS, MEDIA_TYPES, Format, render, table
from engine.reports.query import (
    CHANNELS,
    GROUPINGS,
    Channel,
    Grouping,
    is_email,
    parse_time,
    report_filter,
    unknown_name,
)
from engine.reports.tables import Report, channel_report, clicks_report, undeliveries_report

__all__ = [
    "CHANNELS",
    "FORMATS",
    "GROUPINGS",
    "MEDIA_TYPES",
    "Channel",
    "Format",
    "Grouping",
    "Report",
    "channel_report",
    "clicks_report",
    "is_email",
    "parse_time",
    "render",
    "report_filter",
    "table",
    "undeliveries_report",
    "unknown_name",
]

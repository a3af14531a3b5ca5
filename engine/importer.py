"""The importer's former home, kept so ``from engine.importer import import_csv`` works.

New code imports from ``engine.importing``.
"""

from __future__ import annotations

from engine.importing import MAX_ERRORS, MODES, ImportReport, RowError, import_csv, import_file

__all__ = ["MAX_ERRORS", "MODES", "ImportReport", "RowError", "import_csv", "import_file"]

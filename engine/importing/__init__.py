"""``herald import profiles``: CSV, TXT and XLSX files, or ZIP and TAR.GZ archives of them.

::

    sources.py    what a path holds (format by extension, else magic bytes) -> Sources
    archives.py   which archive members to import; refuses unsafe archives
    text.py       CSV/TXT reader: encoding (UTF-8, BOM, cp1251) and delimiter detection
    xlsx.py       XLSX reader: the first sheet via openpyxl's read-only mode
    rows.py       header + cells -> ImportRecord (no I/O)
    run.py        import_file: rows to the store, a transaction per chunk; the report

Every reader streams: memory stays flat however long the file is.
"""

from __future__ import annotations

from engine.importing.rows import MODES
from engine.importing.run import MAX_ERRORS, ImportReport, RowError, import_csv, import_file

__all__ = ["MAX_ERRORS", "MODES", "ImportReport", "RowError", "import_csv", "import_file"]

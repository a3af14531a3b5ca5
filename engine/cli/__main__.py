"""``python -m engine.cli``: the ``herald`` command."""

from engine.cli import main

raise SystemExit(main())

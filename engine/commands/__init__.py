"""Sub-commands of ``herald`` that live apart from ``engine/cli.py``."""

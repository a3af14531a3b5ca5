"""The ``herald`` command line.

Exit codes (also in ``herald --help``): 0 success; 1 the work failed (a run that did not
finish, an internal error); 2 bad usage or input (an unknown name, a bad file, config or
template). Output meant for files and pipes goes to stdout; progress and problems to stderr.

One module per command group; each registers its parsers with ``add_*_parser(s)`` and opens
the workspace through :mod:`engine.cli.workspace`, whose ``run_command`` maps Herald's errors
to exit codes. Every event loop runs through :func:`engine.backends.run` ($HERALD_BACKEND).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from engine.cli.cluster import add_cluster_parsers
from engine.cli.config import add_config_parsers
from engine.cli.demo import add_demo_parser
from engine.cli.gallery import add_gallery_parsers
from engine.cli.hooks import add_hooks_parsers
from engine.cli.imports import add_import_parsers
from engine.cli.mailings import add_mailing_parsers
from engine.cli.report import add_report_parsers
from engine.cli.segments import add_segment_parsers
from engine.cli.send import add_run_parsers, add_send_parser
from engine.cli.serve import add_serve_parser
from engine.cli.simulate import add_simulate_parser
from engine.cli.suppression import add_suppression_parsers
from engine.cli.templates import add_template_parsers
from engine.cli.tokens import add_token_parsers
from engine.cli.worker import add_worker_parser
from engine.cli.workspace import run_command

__all__ = ["EXIT_CODES", "build_parser", "main"]

EXIT_CODES = """\
exit codes:
  0  success (a run that finished, even if the gateway refused some messages:
     its log counts them)
  1  the work failed: a run that did not finish (interrupted, failed), an internal error
  2  bad usage or input: an unknown name (database, segment, resource, run...), a file
     that cannot be read or is wrong, a bad config, a template error
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="herald", description="High-throughput SMS mailings.",
        epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--config", metavar="PATH",
        help="config file (default: $HERALD_CONFIG, else ./herald.toml)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_demo_parser(sub)
    add_config_parsers(sub)
    add_import_parsers(sub)
    add_suppression_parsers(sub)
    add_send_parser(sub)
    add_mailing_parsers(sub)
    add_template_parsers(sub)
    add_simulate_parser(sub)
    add_serve_parser(sub)
    add_worker_parser(sub)
    add_token_parsers(sub)
    add_segment_parsers(sub)
    add_gallery_parsers(sub)
    add_run_parsers(sub)
    add_cluster_parsers(sub)
    add_report_parsers(sub)
    add_hooks_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return run_command(build_parser().parse_args(argv))

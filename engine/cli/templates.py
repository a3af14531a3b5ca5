"""``herald template check|render``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import msgspec

from engine.cli.workspace import print_json
from engine.errors import InputError
from engine.plugins import load_plugins

__all__ = ["add_template_parsers", "read_template"]


def read_template(path: str | Path) -> str:
    """The template in file ``path``, line breaks read as ``\\n``, without the file's final
    line break: an editor adds one, and it is not meant to end every SMS. Only one goes, so
    a template that ends with a blank line still does."""
    try:
        text = Path(path).read_text(encoding="utf-8")  # \r\n and \r read as \n
    except OSError as err:
        raise InputError(f"{path}: cannot read the template ({err.strerror})") from err
    except UnicodeDecodeError as err:
        raise InputError(f"{path}: not UTF-8 text ({err.reason})") from err
    return text.removesuffix("\n")


def _functions(args: argparse.Namespace) -> dict[str, Any]:
    return load_plugins().template_functions()


def _limits(args: argparse.Namespace) -> Any:
    """The workspace's ``[limits]`` for templates when there is a config (``--config``,
    ``$HERALD_CONFIG`` or ``./herald.toml``), else the defaults: a template that checks here
    is one ``herald send`` and the API take."""
    from engine.config import find_config_path, load_config
    from engine.core.templates.limits import DEFAULT_LIMITS, TemplateLimits

    path = find_config_path(getattr(args, "config", None))
    if not path.is_file():
        return DEFAULT_LIMITS
    return TemplateLimits.of(load_config(path, drivers=load_plugins().drivers).limits)


def _tracking_host(args: argparse.Namespace) -> str:
    """The tracking domain gallery images are served from (``localhost`` without one)."""
    from engine.config import find_config_path, load_config

    path = find_config_path(getattr(args, "config", None))
    if not path.is_file():
        return "localhost"
    return load_config(path, drivers=load_plugins().drivers).tracking.host


def _image_warnings(source: str, args: argparse.Namespace) -> list[str]:
    """An HTML template's images that are not served from the tracking domain's gallery:
    mail clients may block them, and they leave the sender's domain."""
    if "<img" not in source.lower():
        return []
    from engine.core.email_html import external_images

    host = _tracking_host(args)
    found = external_images(source, {host.partition(":")[0], host})
    if not found:
        return []
    shown = ", ".join(found[:5]) + (f" and {len(found) - 5} more" if len(found) > 5 else "")
    return [f"{len(found)} external image{'s' if len(found) != 1 else ''} not in the gallery"
            f" ({shown}): copy them into it with  herald gallery localize {args.file}"]


def cmd_template_check(args: argparse.Namespace) -> int:
    from engine.core.templates import check_template

    source = read_template(args.file)
    report = check_template(source, functions=_functions(args), limits=_limits(args))
    report.warnings.extend(_image_warnings(source, args))
    if args.json:
        print_json({
            "ok": not report.errors,
            "errors": [{"line": e.line, "col": e.col, "message": e.message}
                       for e in report.errors],
            "warnings": report.warnings,
            "variables": report.variables,
            "urls": report.urls,
        })
        return 2 if report.errors else 0
    for err in report.errors:
        print(f"{args.file}:{err}", file=sys.stderr)
    for warning in report.warnings:
        print(f"{args.file}: warning: {warning}", file=sys.stderr)
    if not report.errors:
        print("ok")
    if report.variables:
        print("variables: " + ", ".join(report.variables))
    if report.urls:
        print("urls: " + ", ".join(report.urls))
    return 2 if report.errors else 0


def _load_data(spec: str) -> dict[str, Any]:
    if spec.startswith("@"):
        try:
            raw = Path(spec[1:]).read_bytes()
        except OSError as err:
            raise InputError(f"{spec[1:]}: cannot read --data ({err.strerror})") from err
        where = spec[1:]
    else:
        raw, where = spec.encode(), "--data"
    try:
        data = msgspec.json.decode(raw)
    except msgspec.DecodeError as err:
        raise InputError(f"{where}: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise InputError(f"{where}: expected a JSON object like "
                         '{"lead": {...}, "subscription": {...}, "json": {...}}')
    return data


def cmd_template_render(args: argparse.Namespace) -> int:
    from engine.core.sms import measure
    from engine.core.templates import compile_template, refuse_blank

    template = refuse_blank(compile_template(read_template(args.file),
                                             functions=_functions(args), name=args.file,
                                             limits=_limits(args)))
    text = template.render(_load_data(args.data) if args.data else {})
    info = measure(text)
    if args.json:
        print_json({"text": text, "encoding": info.encoding, "length": info.length,
                     "segments": info.segments})
    else:
        print(text)
        print(f"-- {info.encoding}, {info.length} characters, {info.segments} segment"
              f"{'s' if info.segments != 1 else ''}", file=sys.stderr)
    return 0


def add_template_parsers(sub: Any) -> None:
    p = sub.add_parser("template", help="check or render a message template")
    tsub = p.add_subparsers(dest="what", required=True, metavar="ACTION")
    pp = tsub.add_parser("check", help="list a template's problems and the variables it uses")
    pp.add_argument("file")
    pp.add_argument("--json", action="store_true")
    pp.set_defaults(func=cmd_template_check)
    pp = tsub.add_parser("render", help="render a template with sample data")
    pp.add_argument("file")
    pp.add_argument("--data", metavar="JSON|@FILE",
                    help='{"lead":{...},"subscription":{...},"apicontent":{...},"json":{...}}')
    pp.add_argument("--json", action="store_true")
    pp.set_defaults(func=cmd_template_render)


"""The ``[limits]`` bounds of JSON a client sends, checked on the raw bytes before decoding.

Decoding is the expensive part: msgspec builds a million-key object in about 0.35 s and holds
the GIL meanwhile, so a worker thread would not spare the event loop. The routes decode the
body's big parts as ``msgspec.Raw`` first (skipping them costs ~1 ms per MB), and ``shape``
counts the keys and nesting of a raw part without building it: a scan of its tokens in
Python, run in a worker thread where it gives the loop the GIL every few milliseconds, and
that stops as soon as a bound is passed. Deep JSON elsewhere in a body makes msgspec raise
``RecursionError`` at about 1000 levels, which ``engine.api.errors`` answers with a 400.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import anyio.to_thread

from engine.api.errors import ApiError
from engine.config import LimitsConfig

__all__ = ["Shape", "check_document", "deep_error", "shape", "shape_async"]

#: A string (with what follows it: ``:`` makes it a key), or a bracket.
_TOKEN = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"[ \t\r\n]*(:)?|[\[{]|[\]}]')


@dataclass(frozen=True)
class Shape:
    """Keys (at every level) and depth of a JSON value, counted up to the first bound
    passed (``stopped``: the figures are then lower bounds)."""

    keys: int
    depth: int
    stopped: bool = False


def shape(raw: bytes, *, max_keys: int | None = None, max_depth: int | None = None) -> Shape:
    """The keys and depth of the JSON ``raw`` (valid JSON: msgspec decoded it as Raw)."""
    if max_keys is not None and raw.count(b":") <= max_keys \
            and max_depth is not None and raw.count(b"[") + raw.count(b"{") <= max_depth:
        return Shape(raw.count(b":"), 0)  # an upper bound, under both bounds: no scan
    keys = depth = level = 0
    for m in _TOKEN.finditer(raw):
        token = m[0][:1]
        if token == b'"':
            if m[1] is not None:
                keys += 1
                if max_keys is not None and keys > max_keys:
                    return Shape(keys, depth, stopped=True)
        elif token in b"[{":
            level += 1
            if level > depth:
                depth = level
                if max_depth is not None and depth > max_depth:
                    return Shape(keys, depth, stopped=True)
        else:
            level -= 1
    return Shape(keys, depth)


async def shape_async(raw: bytes, *, max_keys: int | None = None,
                      max_depth: int | None = None) -> Shape:
    """``shape`` in a worker thread (a few kB are not worth the hop)."""
    if len(raw) < 4096:
        return shape(raw, max_keys=max_keys, max_depth=max_depth)
    return await anyio.to_thread.run_sync(
        lambda: shape(raw, max_keys=max_keys, max_depth=max_depth))


def deep_error(limits: LimitsConfig, where: str = "body") -> ApiError:
    """The 400 of JSON nested deeper than ``[limits] json_depth``."""
    return ApiError(400, f"{where}: JSON nested too deep; [limits] json_depth is"
                    f" {limits.json_depth}", None if where == "body" else where)


async def check_document(raw: bytes, limits: LimitsConfig) -> None:
    """A mailing's raw ``document`` within ``document_bytes``, ``document_keys`` and
    ``json_depth``, or the 413/422/400 naming the bound."""
    if len(raw) > limits.document_bytes:
        raise ApiError(413, f"document: {len(raw):,} bytes; [limits] document_bytes is"
                       f" {limits.document_bytes}", "document")
    # exact counts (the bytes bound keeps the scan short): the answer says how far over
    found = await shape_async(raw, max_depth=limits.json_depth)
    if found.depth > limits.json_depth:
        raise deep_error(limits, "document")
    if found.keys > limits.document_keys:
        raise ApiError(422, f"document: {found.keys:,} keys; [limits] document_keys is"
                       f" {limits.document_keys}", "document")

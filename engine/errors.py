"""Every exception Herald raises on purpose.

::

    HeraldError                     base; ``str(err)`` is a message meant for a person
    ├── ConfigError                 a config file is wrong; carries one ConfigProblem per fault
    ├── InputError                  user data is wrong (CSV row, JSON field, CLI option)
    ├── TemplateError               a template does not compile; carries line and col
    ├── StoreError                  the store refused an operation (unknown run, name, ...)
    │   └── NotFound                a named object (run, database, resource, ...) does not exist
    ├── PluginError                 a plugin is broken or two plugins claim one name
    └── GatewayError                a gateway driver could not submit (raised by drivers)
        ├── TransientGatewayError   retry later; may carry ``retry_after`` seconds
        └── PermanentGatewayError   do not retry; carries the provider's ``code``

Drivers translate their vendor's exceptions into the two ``GatewayError`` kinds at their
boundary; the engine never sees a vendor exception.

A message never shows a URL's credentials: ``redact`` turns ``https://user:pass@host/`` into
``https://***@host/``, and a ``ConfigProblem`` is redacted as it is made.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

#: Why an attempt may or may not have reached its gateway (the reason its messages get when
#: they end ``unknown``).
Ambiguity = Literal["timeout", "connection_lost"]

__all__ = [
    "Ambiguity",
    "ConfigError",
    "ConfigProblem",
    "GatewayError",
    "HeraldError",
    "InputError",
    "LeaseLost",
    "NotFound",
    "PermanentGatewayError",
    "PluginError",
    "StoreError",
    "TemplateError",
    "TransientGatewayError",
    "redact",
    "secret_values",
]

#: Keys whose values are secrets, wherever they are nested (``receipt_secret``,
#: ``headers.Authorization``, ``password``, ``api_key``, ``token``...).
SECRET_KEY = re.compile(r"secret|passw|pwd|token|api[-_]?key|auth|credential|cookie|private",
                        re.I)

#: A word that may hold a URL's userinfo: an opening quote or bracket, ``scheme://`` or
#: ``//`` (a scheme-less ``user:pass@host`` too), everything up to the last ``@`` before
#: the path.
_USERINFO = re.compile(
    r"(?P<lead>['\"(<\[]*)(?P<scheme>(?:[A-Za-z][A-Za-z0-9+.-]*:)?//)?(?P<user>[^\s/?#]*)@"
)
_WORD = re.compile(r"\S+")


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` without URL credentials (``scheme://***@host``) and with each of
    ``secrets`` (of 4 characters or more: shorter ones would blot out the message) as
    ``***``. An address like ``bob@example.com`` (no scheme, no ``:``) is left alone."""
    for secret in sorted(secrets, key=len, reverse=True):
        if len(secret) >= 4:
            text = text.replace(secret, "***")
    return _WORD.sub(_redact_word, text) if "@" in text else text


def secret_values(value: object, secret: bool = False) -> Iterable[str]:
    """The strings under keys named like a secret (``SECRET_KEY``) in a decoded TOML
    value, at any depth: what ``redact`` must keep out of a message about it."""
    if isinstance(value, str):
        if secret:
            yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from secret_values(item, secret or bool(SECRET_KEY.search(str(key))))
    elif isinstance(value, list | tuple):
        for item in value:
            yield from secret_values(item, secret)


def _redact_word(m: re.Match[str]) -> str:
    word = m.group()
    u = _USERINFO.match(word)
    if u is None or (u["scheme"] is None and ":" not in u["user"]):
        return word
    return f"{u['lead']}{u['scheme'] or ''}***@{word[u.end():]}"


class HeraldError(Exception):
    """Base class of the errors Herald raises on purpose."""


@dataclass(frozen=True)
class ConfigProblem:
    """One fault in a config file: where it is and what is wrong."""

    file: str
    path: str
    message: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "message", redact(self.message))

    def __str__(self) -> str:
        where = f"{self.file}: {self.path}" if self.path else self.file
        return f"{where}: {self.message}"


class ConfigError(HeraldError):
    """A config file is missing, malformed or inconsistent."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class InputError(HeraldError):
    """User-supplied data (a CSV row, a JSON field, a CLI option) is wrong."""


class TemplateError(HeraldError):
    """A template does not compile.

    ``line`` and ``col`` are 1-based; ``source_line`` is the offending line of the template.
    """

    def __init__(
        self, message: str, *, line: int = 0, col: int = 0, source_line: str = ""
    ) -> None:
        self.message = message
        self.line = line
        self.col = col
        self.source_line = source_line
        text = f"{line}:{col}: {message}" if line else message
        if source_line:
            shown, caret = _clip(source_line, max(col - 1, 0))
            text += f"\n    {shown}\n    {' ' * caret}^"
        super().__init__(text)


#: Characters of a template's line an error shows around its column (a one-line template
#: of 100 KB must not come back whole in every error).
_SHOWN = 120


def _clip(line: str, at: int) -> tuple[str, int]:
    """``line`` cut to about ``_SHOWN`` characters around index ``at``, and where ``at``
    is in what is shown."""
    if len(line) <= _SHOWN:
        return line, at
    start = max(0, min(at - _SHOWN // 2, len(line) - _SHOWN))
    shown = line[start : start + _SHOWN]
    caret = at - start
    if start > 0:
        shown, caret = "…" + shown, caret + 1
    if start + _SHOWN < len(line):
        shown += "…"
    return shown, caret


class StoreError(HeraldError):
    """The store refused an operation."""


class LeaseLost(StoreError):
    """A worker's lease on a chunk was taken over (it missed its heartbeats): what it
    would write is refused, and it must drop the chunk without recording anything more."""


class NotFound(StoreError):
    """A named object (run, database, resource, segment, ...) does not exist."""


class PluginError(HeraldError):
    """A plugin is broken, or two plugins register the same name."""


class GatewayError(HeraldError):
    """A driver could not submit a batch. Raised by drivers, handled by the engine."""


class TransientGatewayError(GatewayError):
    """Not taken this time: 5xx, throttling, no connection, or an answer that never came.

    What the gateway may have done with the batch is said by exactly one of three cases:

    - ``unsent=True``: it certainly did not take it (the connection was refused, nothing
      of the request was written): safe to send again, through another gateway too.
    - ``ambiguous="timeout"`` or ``"connection_lost"``: the request was written (or may
      have been) and no complete answer came: the gateway *may* have it. The engine retries
      it only where the sender's ``on_ambiguous`` says so (by default, where the driver
      declares idempotent submission); otherwise its messages end ``unknown`` with that
      reason.
    - neither: the gateway answered that it did not take it (a 5xx, a 429): worth retrying
      on the same gateway.

    ``retry_after``: seconds the gateway asked us to wait (a throttling answer).
    """

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        unsent: bool = False,
        ambiguous: Ambiguity | None = None,
    ) -> None:
        if unsent and ambiguous is not None:
            raise ValueError("a request cannot be both surely unsent and ambiguous")
        self.retry_after = retry_after
        self.unsent = unsent
        self.ambiguous: Ambiguity | None = ambiguous
        super().__init__(message)


class PermanentGatewayError(GatewayError):
    """Never worth retrying: the provider refused for good. ``code`` is the provider's."""

    def __init__(self, message: str, *, code: str | None = None) -> None:
        self.code = code
        super().__init__(message)

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
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "ConfigError",
    "ConfigProblem",
    "GatewayError",
    "HeraldError",
    "InputError",
    "NotFound",
    "PermanentGatewayError",
    "PluginError",
    "StoreError",
    "TemplateError",
    "TransientGatewayError",
]


class HeraldError(Exception):
    """Base class of the errors Herald raises on purpose."""


@dataclass(frozen=True)
class ConfigProblem:
    """One fault in a config file: where it is and what is wrong."""

    file: str
    path: str
    message: str

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
            text += f"\n    {source_line}\n    {' ' * max(col - 1, 0)}^"
        super().__init__(text)


class StoreError(HeraldError):
    """The store refused an operation."""


class NotFound(StoreError):
    """A named object (run, database, resource, segment, ...) does not exist."""


class PluginError(HeraldError):
    """A plugin is broken, or two plugins register the same name."""


class GatewayError(HeraldError):
    """A driver could not submit a batch. Raised by drivers, handled by the engine."""


class TransientGatewayError(GatewayError):
    """Worth retrying later: timeouts, 5xx, throttling.

    ``retry_after``: seconds the gateway asked us to wait (a throttling answer).
    ``unsent``: the gateway certainly did not take the batch (the connection was refused,
    it answered 429 or 503): safe to send through another gateway. Leave it False when
    it may have (a timeout, a connection lost mid-request).
    """

    def __init__(
        self, message: str, *, retry_after: float | None = None, unsent: bool = False
    ) -> None:
        self.retry_after = retry_after
        self.unsent = unsent
        super().__init__(message)


class PermanentGatewayError(GatewayError):
    """Never worth retrying: the provider refused for good. ``code`` is the provider's."""

    def __init__(self, message: str, *, code: str | None = None) -> None:
        self.code = code
        super().__init__(message)

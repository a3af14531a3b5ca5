"""The ``file`` driver: appends one JSON line per message to a file.

Each line holds ``id``, ``to``, ``from``, ``text`` and ``segments``. Useful to look at what a
mailing would send, and as the demo's gateway. Lines are flushed per batch, so what the engine
records as accepted is on disk.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Annotated

import msgspec

from engine.drivers import Capabilities, Driver, DriverConfig, OutboundMessage, SendResult
from engine.errors import PermanentGatewayError
from engine.hookspecs import hookimpl

__all__ = ["FileDriver"]


class FileConfig(DriverConfig):
    #: Where to append; relative paths are relative to the config file.
    path: Annotated[str, msgspec.Meta(min_length=1)]
    #: fsync after each batch (slower; survives power loss, not just a crash).
    fsync: bool = False


class _Line(msgspec.Struct):
    id: str
    to: str
    text: str
    segments: int
    from_: str = msgspec.field(name="from")


class FileDriver(Driver):
    name = "file"
    Config = FileConfig
    capabilities = Capabilities(max_batch=10_000)

    def __init__(
        self, config: FileConfig, *, gateway: str = "", base_dir: Path | None = None
    ) -> None:
        super().__init__(config, gateway=gateway, base_dir=base_dir)
        path = Path(config.path).expanduser()
        self.path = path if path.is_absolute() else self.base_dir / path
        self._file: IO[bytes] | None = None
        self._encoder = msgspec.json.Encoder()

    async def send_batch(self, messages: Sequence[OutboundMessage]) -> list[SendResult]:
        if self._file is None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._file = self.path.open("ab")
            except OSError as err:
                raise PermanentGatewayError(f"cannot open {self.path}: {err.strerror}") from err
        buf = bytearray()
        for m in messages:
            self._encoder.encode_into(_Line(m.id, m.to, m.text, m.segments, m.sender), buf, -1)
            buf += b"\n"
        try:
            self._file.write(buf)
            self._file.flush()
            if self.config.fsync:
                os.fsync(self._file.fileno())
        except OSError as err:
            raise PermanentGatewayError(f"cannot write {self.path}: {err.strerror}") from err
        return [SendResult(m.id, "accepted") for m in messages]

    async def aclose(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


@hookimpl
def herald_drivers() -> list[type[Driver]]:
    return [FileDriver]

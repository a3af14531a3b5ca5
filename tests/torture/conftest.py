"""Fixtures of the torture tests: sinks that are always shut down."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import pytest

from tests.torture.sink import Sink


@pytest.fixture
def open_sink() -> Iterator[Callable[..., Sink]]:
    """``open_sink(**options)``: a started ``Sink``, stopped at the end of the test."""
    with ExitStack() as stack:

        def factory(**options: Any) -> Sink:
            return stack.enter_context(Sink(**options))

        yield factory

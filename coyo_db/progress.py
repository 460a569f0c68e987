"""How long jobs report progress without knowing who renders it.

The library calls a :class:`Progress`; the CLI passes one that draws a bar with rows/s, tests
and Python users get :class:`NullProgress` unless they pass their own.
"""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    def start(self, description: str, total: int | None = None) -> None:
        """A new phase begins; `total` is in the unit `advance` counts (rows, images)."""

    def advance(self, n: int) -> None:
        """`n` more units are done."""

    def finish(self) -> None:
        """The phase is over."""


class NullProgress:
    """Reports nothing."""

    def start(self, description: str, total: int | None = None) -> None:
        pass

    def advance(self, n: int) -> None:
        pass

    def finish(self) -> None:
        pass

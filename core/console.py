"""Progress for people and for logs: redrawn bars on a terminal, plain lines everywhere else.

Piped to a file, a tqdm bar writes a carriage-return redraw per update; :func:`progress_bar` gives a
bar only when standard error is a terminal, and otherwise a :class:`PlainProgress` that writes one
line when it finishes (nothing for the short-lived inner bars, ``leave=False``).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import Generic, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def notice(message: str) -> None:
    """One line for the person running the command (standard error, flushed): what a stage
    decided on its own, such as redoing stale or unreadable work."""
    print(message, file=sys.stderr, flush=True)


def interactive() -> bool:
    """Whether progress goes to a terminal (where redrawn bars are readable)."""
    return sys.stderr.isatty()


class PlainProgress(Generic[T]):
    """The subset of tqdm's interface the project uses, writing one closing line instead of redraws."""

    def __init__(
        self, iterable: Iterable[T] | None, total: int | None, desc: str, unit: str, leave: bool, enabled: bool
    ) -> None:
        self.iterable = iterable
        self.total = total if total is not None else _length(iterable)
        self.desc = desc
        self.unit = unit
        self.leave = leave and enabled
        self.n = 0
        self.postfix = ""
        self._start = time.perf_counter()
        self._closed = False

    def __iter__(self) -> Iterator[T]:
        assert self.iterable is not None
        try:
            for item in self.iterable:
                yield item
                self.n += 1
        finally:
            self.close()

    def __enter__(self) -> PlainProgress[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        self.n += n

    def set_postfix(self, *args: object, **kwargs: object) -> None:
        return None

    def set_postfix_str(self, text: str) -> None:
        self.postfix = text

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.leave:
            count = f"{self.n}/{self.total}" if self.total is not None else str(self.n)
            seconds = time.perf_counter() - self._start
            print(f"{self.desc}: {count} {self.unit}(s) in {seconds:.1f} s", file=sys.stderr, flush=True)


def _length(iterable: Iterable[object] | None) -> int | None:
    try:
        return len(iterable)  # type: ignore[arg-type]
    except TypeError:
        return None


def progress_bar(
    iterable: Iterable[T] | None = None,
    *,
    total: int | None = None,
    desc: str = "",
    unit: str = "it",
    enabled: bool = True,
    leave: bool = True,
    initial: int = 0,
) -> tqdm | PlainProgress[T]:
    """A tqdm bar on a terminal; elsewhere a :class:`PlainProgress` (one line at the end, or none
    when ``leave`` is False). ``enabled=False`` prints nothing at all."""
    if interactive():
        return tqdm(iterable, total=total, desc=desc, unit=unit, disable=not enabled, leave=leave, initial=initial)
    bar: PlainProgress[T] = PlainProgress(iterable, total, desc, unit, leave, enabled)
    bar.n = initial
    return bar

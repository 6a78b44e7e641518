"""A minimal progress line on stderr, shown only when stderr is a terminal."""

from __future__ import annotations

import io
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TextIO

from .errors import one_line

# what masks key text in the names a progress line shows (the CLI's `_cli_streams.KeyMask`); None: nothing
_MASK: ContextVar[Callable[[str], str] | None] = ContextVar("_MASK", default=None)


@contextmanager
def hiding(mask: Callable[[str], str]) -> Iterator[None]:
    """Progress lines started meanwhile (in this context) mask the names they show with ``mask``.

    The program's other lines mask key text (`_cli_streams.quoted`, its warning lines): key text typed as OUT,
    also a tensor's name, was shown on the progress line alone.
    """
    token = _MASK.set(mask)
    try:
        yield
    finally:
        _MASK.reset(token)


def hide_in_this_thread(mask: Callable[[str], str] | None) -> None:
    """From now on, progress lines started in this thread's context mask with ``mask``: a worker process's, for good."""
    _MASK.set(mask)


class Progress:
    """Counts named steps; prints ``label: step i/n`` on a terminal, nothing otherwise."""

    def __init__(self, label: str, total: int, stream: TextIO | None = None, enabled: bool | None = None) -> None:
        self.label, self.total, self.i = label, max(1, total), 0
        err = stream or sys.stderr  # None: a standard error closed (`2>&-`), as Python gives it: no progress line
        self.stream: TextIO = io.StringIO() if err is None else err
        self.enabled = err is not None and (err.isatty() if enabled is None else enabled)
        self.t0 = time.monotonic()
        self._lock = threading.Lock()  # steps may come from worker threads
        self._mask = _MASK.get()  # taken here: a worker thread does not share the context that set it

    @classmethod
    def null(cls) -> Progress:
        """A progress that prints nothing."""
        return cls("", 1, enabled=False)

    def expect(self, more: int) -> None:
        """From now on, ``more`` steps remain (for work whose step count is known only once it starts)."""
        with self._lock:
            self.total = max(1, self.i + more)

    def step(self, what: str) -> None:
        """Advance by one step named ``what``."""
        with self._lock:
            self.i += 1
            if self.enabled:
                frac = min(1.0, self.i / self.total)
                bar = "#" * int(30 * frac)
                # ``what`` names a tensor of the model: escaped and masked as in every line (`_cli_streams.KeyMask`),
                # masked before it is cut: a cut key would no longer match the words masked
                shown = one_line(self._mask(what) if self._mask else what)[:40]
                self.stream.write(f"\r{self.label} [{bar:<30}] {self.i}/{self.total} {shown:<40}")
                self.stream.flush()

    def done(self) -> None:
        """Finish the line."""
        if self.enabled:
            self.stream.write(f"\r{self.label} done in {time.monotonic() - self.t0:.1f}s{' ' * 60}\n")
            self.stream.flush()

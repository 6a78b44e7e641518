"""A minimal progress line on stderr, shown only when stderr is a terminal."""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO

from .errors import one_line


class Progress:
    """Counts named steps; prints ``label: step i/n`` on a terminal, nothing otherwise."""

    def __init__(self, label: str, total: int, stream: TextIO | None = None, enabled: bool | None = None) -> None:
        self.label, self.total, self.i = label, max(1, total), 0
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.t0 = time.monotonic()
        self._lock = threading.Lock()  # steps may come from worker threads

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
                # ``what`` names a tensor of the model: its control characters escaped, as in every line
                self.stream.write(f"\r{self.label} [{bar:<30}] {self.i}/{self.total} {one_line(what)[:40]:<40}")
                self.stream.flush()

    def done(self) -> None:
        """Finish the line."""
        if self.enabled:
            self.stream.write(f"\r{self.label} done in {time.monotonic() - self.t0:.1f}s{' ' * 60}\n")
            self.stream.flush()

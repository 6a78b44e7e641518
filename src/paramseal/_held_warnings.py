"""Warnings raised while the program's modules load, held until they can be shown as its ``warning:`` lines.

A library warns as it loads (numpy, numba or cryptography under a version it finds old), and the module that
imports it may quote a path or a name in one: Python's own handler printed those raw, before the program's handler
(`_cli_streams.warnings_escaped`, which escapes them and masks key text) was in place. The program's entry
(`__main__.main`) and each worker process of a sharded command (`_shard_pool._start_worker`) hold them while they
load, and show them once that handler is there. Only the standard library is imported here: this module loads first.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

# each held warning, as Python's filters let it through: showwarning's arguments
_HELD: list[tuple[Any, ...]] = []
# the handler `hold` replaced, to put back
_PYTHONS: list[Callable[..., None]] = []


def hold() -> None:
    """From now on, the warnings Python's filters show are held (in order) until `show_held`, not printed."""
    _PYTHONS.append(warnings.showwarning)
    warnings.showwarning = _keep


def _keep(
    message: Warning | str, category: type[Warning], filename: str, lineno: int, file: Any = None, line: Any = None
) -> None:
    _HELD.append((message, category, filename, lineno, file, line))


def stop_holding() -> None:
    """The handler `hold` found is in place again; what was held waits for `show_held`."""
    if _PYTHONS:
        shown = _PYTHONS.pop()
        if warnings.showwarning is _keep:  # not replaced meanwhile by what loaded
            warnings.showwarning = shown


def show_held(show: Callable[..., None]) -> None:
    """Show each warning held with ``show`` (a `warnings.showwarning`), in the order raised; none is held after."""
    while _HELD:
        show(*_HELD.pop(0))

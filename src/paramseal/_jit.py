"""numba kernels compiled on their first call, and numba itself imported only then.

With the compiled library built (`_native`), no command calls a numba kernel, yet importing numba
took about 0.3 s of every command's start-up (``python -X importtime -c "import paramseal.cli"``).
The kernel modules decorate with `njit` and loop with `prange`; both become numba's own on the
first call of any kernel of the module.
"""

from __future__ import annotations

import importlib.util
import os
import threading
from collections.abc import Callable
from typing import Any

prange = range  # in a kernel module's globals until its first compile, which puts numba.prange there

_LOCK = threading.RLock()  # re-entrant: making one kernel makes the kernels its module holds


def available() -> bool:
    """Whether the numba kernels can run: numba installed, and not turned off with ``PARAMSEAL_NO_NUMBA``."""
    if os.environ.get("PARAMSEAL_NO_NUMBA"):
        return False
    try:
        return importlib.util.find_spec("numba") is not None
    except (ImportError, ValueError):  # a broken install: the numpy paths serve
        return False


class Kernel:
    """A function numba compiles on first use; attributes not its own are the numba dispatcher's."""

    def __init__(self, fn: Callable[..., Any], opts: dict[str, Any]) -> None:
        self.py_func = fn
        self._opts = opts
        self._made: Any = None
        self.__name__ = fn.__name__
        self.__doc__ = fn.__doc__

    def dispatcher(self) -> Any:
        """Numba's dispatcher for the function (made, not yet compiled, on first use)."""
        if self._made is None:
            with _LOCK:
                if self._made is None:
                    import numba

                    # A kernel compiles against the names in its module's globals: prange must be numba's
                    # before the dispatcher is visible (another thread may compile it at once), and a kernel
                    # it calls numba's dispatcher (a Kernel met meanwhile is typed by its `_numba_type_`).
                    scope = self.py_func.__globals__
                    scope["prange"] = numba.prange
                    self._made = numba.njit(**self._opts)(self.py_func)
                    for name, value in list(scope.items()):
                        if isinstance(value, Kernel):
                            scope[name] = value.dispatcher()
        return self._made

    def __call__(self, *args: Any) -> Any:
        return self.dispatcher()(*args)

    def __getattr__(self, name: str) -> Any:
        # not set yet (a copy being made), or a probe such as inspect's for __wrapped__: no numba import for those
        if name in ("py_func", "_opts", "_made") or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.dispatcher(), name)


def njit(**opts: Any) -> Callable[[Callable[..., Any]], Kernel]:
    """``numba.njit(**opts)``, deferred to the kernel's first call."""
    return lambda fn: Kernel(fn, opts)


__all__ = ["Kernel", "available", "njit", "prange"]

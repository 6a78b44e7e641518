"""Threads for the kernels: one pool per process, spread over the cores, and the rules numba's parallel kernels need.

`parallel_map` runs nogil kernels on one thread per core; `task_map` runs whole pieces of work
(superblocks, batches) side by side; `halves` cuts rows into one range per core. Separate from
`_kernels` (the numba kernels themselves): these pools run compiled C, numba and Python work alike.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from typing import TypeVar, cast

#: Held while a numba ``parallel=True`` kernel runs. numba's workqueue threading layer (where neither
#: OpenMP nor TBB is found) aborts the process when a second thread enters one: two threads of the
#: caller's, each sealing or verifying a model, must take turns. Each such kernel fills the cores itself.
PARALLEL_LOCK = threading.Lock()


_T = TypeVar("_T")
_R = TypeVar("_R")
_POOL: ThreadPoolExecutor | None = None
_TASKS: ThreadPoolExecutor | None = None  # whole pieces of work that may call parallel_map themselves
_POOL_LOCK = threading.Lock()
_IN_TASK = threading.local()  # .task: in a task_map task; .on: its parallel_map calls run inline
_IN_POOL = threading.local()  # .on: running a parallel_map item (a nested parallel_map runs inline)
TASKS_MAX = 4  # task_map items in flight, each with its buffers (a seal's superblock: about 44 MiB)


def _cores() -> int:
    """The cores this process may run on (its affinity mask where the platform has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _inline() -> bool:
    """Whether `parallel_map` runs its items in turn on this thread.

    So it does in a task_map task whose peers fill the cores, and in an item of its own pool (it would wait on itself).
    """
    return bool(getattr(_IN_TASK, "on", False) or getattr(_IN_POOL, "on", False))


def parallel_map(fn: Callable[[_T], _R], items: Iterable[_T]) -> list[_R]:
    """``[fn(x) for x in items]`` on one thread per core, for work that releases the GIL (nogil kernels).

    The first exception raised by ``fn`` propagates, once the items already running have finished
    (as in `task_map`): a kernel left running after Ctrl-C wrote into arrays freed as the caller
    unwound, and the process ended in a segfault. One process-wide pool, made on first use; a
    `parallel_map` inside ``fn`` runs inline on its thread.
    """
    global _POOL
    items = list(items)
    # (inline asked first: the cores are a system call, made by every kernel of a seal's superblocks)
    if len(items) <= 1 or _inline() or _cores() <= 1:
        return [fn(x) for x in items]
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max_workers=_cores(), thread_name_prefix="paramseal")

    def run(x: _T) -> _R:
        _IN_POOL.on = True
        try:
            return fn(x)
        finally:
            _IN_POOL.on = False

    return _run_all(_POOL, run, items)


def task_map(fn: Callable[[_T], _R], items: Iterable[_T]) -> list[_R]:
    """``[fn(x) for x in items]``, one per core (at most ``TASKS_MAX``) at a time: steps that mix kernels and Python.

    Unlike `parallel_map`, ``fn`` may itself call `parallel_map`: these tasks run on a pool of their
    own, so they never wait on threads they occupy; where they fill every core, those calls run
    inline. A nested `task_map` runs inline. ``fn`` must not call numba's ``parallel=True``
    kernels: numba's workqueue threading layer aborts the process when two threads enter them.
    After a failure no further item starts; the first exception in item order propagates once
    the tasks already running have finished (none is left writing behind the caller's back,
    even through a second Ctrl-C). Memory: ``TASKS_MAX`` items' worth.
    """
    global _TASKS
    items = list(items)
    workers = min(_cores(), TASKS_MAX)
    if min(len(items), workers) <= 1 or getattr(_IN_TASK, "task", False):  # nested: its pool is busy with us
        return [fn(x) for x in items]
    with _POOL_LOCK:
        if _TASKS is None or _TASKS._max_workers != workers:
            if _TASKS is not None:
                _TASKS.shutdown(wait=False)
            _TASKS = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="paramseal-task")
        pool = _TASKS
    inline = workers >= _cores()  # the tasks fill every core: splitting their kernels would only add waits

    def run(x: _T) -> _R:
        _IN_TASK.task, _IN_TASK.on = True, inline
        try:
            return fn(x)
        finally:
            _IN_TASK.task = _IN_TASK.on = False

    return _run_all(pool, run, items)


def in_turn(fn: Callable[[_T], _R], items: Iterable[_T]) -> list[_R]:
    """`task_map`'s contract, one item after another (where ``fn`` enters numba's parallel kernels)."""
    return [fn(x) for x in items]


def _run_all(pool: ThreadPoolExecutor, run: Callable[[_T], _R], items: list[_T]) -> list[_R]:
    """``run`` on each item in ``pool``; after a failure or an interrupt none starts, and those running finish.

    Which items run is `_Gate`'s, not the futures': a Ctrl-C inside ``submit`` (while it starts a
    thread) leaves an item queued whose future the caller never got, and it ran behind its back.
    """
    gate = _Gate()
    futures: list[Future[_R | None]] = []
    try:
        for x in items:
            futures.append(pool.submit(gate.run, run, x))
        wait(futures, return_when=FIRST_EXCEPTION)
    finally:
        gate.stop()
        for f in futures:  # items start in order, so every cancelled one comes after the failed one
            f.cancel()
    return [cast(_R, f.result()) for f in futures]


class _Gate:
    """Lets the items of one `_run_all` start until `stop`, and knows when those started have finished."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open, self._running = True, 0
        self._idle = threading.Event()
        self._idle.set()

    def run(self, fn: Callable[[_T], _R], x: _T) -> _R | None:
        with self._lock:
            if not self._open:  # stopped: not run (its result is never read)
                return None
            self._running += 1
            self._idle.clear()
        try:
            return fn(x)
        finally:
            with self._lock:
                self._running -= 1
                if not self._running:
                    self._idle.set()

    def stop(self) -> None:
        """Start no more items; wait for those running, through repeated KeyboardInterrupts too (re-raised after)."""
        stopped: KeyboardInterrupt | None = None
        while True:
            try:
                with self._lock:
                    self._open = False
                self._idle.wait()
                break
            except KeyboardInterrupt as e:
                stopped = e
        if stopped is not None:
            raise stopped


def _wake_pools() -> None:
    """At interpreter exit, before its threads are waited for: every thread of the pools stops waiting for work.

    concurrent.futures wakes only the threads it registered; one whose ``start()`` a Ctrl-C cut short
    never was, and the interpreter waited for it forever after printing 'interrupted' (SIGTERM: 'terminated').
    """
    for pool in (_POOL, _TASKS):
        if pool is not None:
            pool.shutdown(wait=False)


if hasattr(threading, "_register_atexit"):  # what concurrent.futures uses itself (CPython 3.9+)
    threading._register_atexit(_wake_pools)


def _forget_pool() -> None:
    """In a forked child: the pools' threads were not copied, so work queued there would never run.

    Nor were the threads that held a lock at the fork: ``PARALLEL_LOCK`` taken by one of them would
    never be released, and the child's first parallel kernel would wait forever.
    """
    global _POOL, _TASKS, _POOL_LOCK, PARALLEL_LOCK
    _POOL, _TASKS, _POOL_LOCK, PARALLEL_LOCK = None, None, threading.Lock(), threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def halves(n: int, parts: int | None = None) -> list[tuple[int, int]]:
    """``[a, b)`` ranges that cut ``range(n)`` into one nearly equal part per core (or ``parts``).

    One part where `parallel_map` would run them in turn on this thread: each part is a kernel call with
    its own set-up (a seal's reads, tables and keyed offset), for nothing.
    """
    k = max(1, min(n, parts or (1 if _inline() else _cores())))
    cuts = [n * i // k for i in range(k + 1)]
    return [(cuts[i], cuts[i + 1]) for i in range(k) if cuts[i] < cuts[i + 1]]


__all__ = [
    "PARALLEL_LOCK",
    "TASKS_MAX",
    "halves",
    "in_turn",
    "parallel_map",
    "task_map",
]

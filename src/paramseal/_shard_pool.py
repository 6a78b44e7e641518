"""A pool of worker processes for a sharded checkpoint's shards, one shard per job.

`_map` runs the jobs on spawned processes that stop with their parent and ignore Ctrl-C (the
parent stops them), and carries each ParamSealError back by value (`_Raised`). Kept apart from
`sharded`, which says what each job does; this is only how the jobs are run.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from ._held_warnings import hold, stop_holding
from ._progress import hide_in_this_thread
from .errors import ParamSealError

if TYPE_CHECKING:
    from ._cli_streams import WorkerMask

# A worker imports this module before `_start_worker` runs: only the standard library and modules that import
# nothing else load here, so that a warning raised as the others load (numpy, cryptography) is held for the
# program's handler. They load in the functions that use them.

T = TypeVar("T")


def _workers(n: int) -> int:
    return max(1, min(n, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))


def _map(fn: Callable[..., T], jobs: list[tuple[Any, ...]], workers: int | None) -> list[T]:
    """Run ``fn(*job)`` for every job on a pool of processes (in order); one job runs inline."""
    from ._cli_streams import worker_mask
    from ._pages import scratch_budget

    w = _workers(len(jobs)) if workers is None else max(1, workers)
    if w == 1 or len(jobs) == 1:
        return [fn(*j) for j in jobs]
    share = (scratch_budget() // w) >> 20  # the workers share the scratch budget (MiB each)
    # spawn, not fork: the parent may already run numba's (or torch's) thread pools, which a forked
    # child inherits half-initialised and can die in
    with ProcessPoolExecutor(
        max_workers=w,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_start_worker,
        initargs=(share, os.getpid(), worker_mask()),
    ) as pool:
        try:
            with _sigint_blocked():  # the workers start here and inherit the mask (see _start_worker)
                futures = [pool.submit(_guarded, fn, *j) for j in jobs]
            out = [f.result() for f in futures]
        except BaseException:  # Ctrl-C, SIGTERM: stop the shards being written, do not wait for them
            for proc in list((getattr(pool, "_processes", None) or {}).values()):  # no public way to
                proc.terminate()  # stop a running job; the caller then removes the half-written folder
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    for r in out:
        if isinstance(r, _Raised):
            r.reraise()
    return out  # type: ignore[return-value]  # no _Raised is left


@contextmanager
def _sigint_blocked() -> Iterator[None]:
    """SIGINT blocked in this thread: a worker it starts keeps it pending, not a traceback from its imports."""
    if not hasattr(signal, "pthread_sigmask"):  # Windows: no masks
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _start_worker(mib: int, parent: int, mask: WorkerMask | None) -> None:
    hold()  # what loads now may warn: held until the handler below is in place
    try:
        from ._cli_streams import KeyMask, worker_streams
    finally:
        stop_holding()
    os.environ["PARAMSEAL_SCRATCH_MIB"] = str(mib)
    # the jobs run in this thread: their progress lines, on the standard error the worker inherits, and their
    # warnings are masked as the parent's (`_progress.hiding`, `_cli_streams.warnings_escaped`), and a failing or
    # closed standard error loses them as the parent's does (`_cli_streams.stderr_kept`); a spawned process starts
    # without any of these
    hide_in_this_thread(None if mask is None else KeyMask(*mask))
    worker_streams(mask)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the parent stops us
    if hasattr(signal, "pthread_sigmask"):  # blocked since spawn: one sent meanwhile is discarded now
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    threading.Thread(target=_exit_without, args=(parent,), name="paramseal-parent", daemon=True).start()


def _exit_without(parent: int) -> None:
    """End this worker once ``parent`` is gone (SIGKILL, the OOM killer): nothing else tells it to stop.

    It would wait on the pool's queue forever, holding its memory, or go on writing a shard nobody reads.
    """
    while os.getppid() == parent:
        time.sleep(1)
    os._exit(1)


@dataclass(frozen=True, slots=True)
class _Raised:
    """A ParamSealError from a worker, carried by value.

    An error whose ``__init__`` takes other arguments than the message (KeyMismatchError)
    does not unpickle, and the pool would break instead of reporting it.
    """

    cls: type[ParamSealError]
    args: tuple[Any, ...]
    attrs: dict[str, Any]

    def reraise(self) -> None:
        e = self.cls.__new__(self.cls)
        e.args = self.args
        e.__dict__.update(self.attrs)
        raise e


def _guarded(fn: Callable[..., T], *job: Any) -> T | _Raised:
    try:
        return fn(*job)
    except ParamSealError as e:
        return _Raised(type(e), e.args, dict(e.__dict__))

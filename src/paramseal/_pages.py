"""Bounded memory over large files: map them, work in chunks, and drop the pages done with.

Pages of a memory-mapped file count towards a process's resident memory while
they stay mapped, so reading a 14 GiB checkpoint through one mapping would
grow RSS to 14 GiB. After each chunk the engine calls :func:`release`, which
tells the kernel (``MADV_DONTNEED``) that the pages are no longer needed: read
pages are simply unmapped, and written pages of a shared file mapping stay in
the page cache to be written back. Arrays that are not mapped are left alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import functools
import mmap
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from numpy.typing import NDArray

from ._parallel import halves, parallel_map
from ._tempname import discard_folder, private_folder
from .errors import InputError, UsageError, cannot_write

CHUNK_BYTES = 16 << 20  # bytes of tensor data the engine handles at a time
_ARENA_BYTES = 4 * CHUNK_BYTES  # a scratch file that holds many arrays smaller than a chunk
_PAGE = mmap.PAGESIZE
_FAULT_AROUND = 64 << 10  # Linux maps up to this much of cached file around a read fault
_MAPS: dict[int, tuple[int, mmap.mmap]] = {}  # base address -> (length, map)
_FDS: dict[int, int] = {}  # base address -> descriptor of the mapped file
_INPUTS: dict[int, Path] = {}  # base address -> path of a file mapped for reading (an input)


class Mapping:
    """A file mapped into memory, registered so that :func:`release` can drop its pages."""

    def __init__(self, path: Path, *, write: bool = False, size: int | None = None, scattered: bool = False) -> None:
        mode = "r+b" if write else "rb"
        if size is not None:
            with open(path, "wb") as f:
                # Reserve the disk now: a full disk must fail here with ENOSPC, not later as SIGBUS on a page write.
                if size:
                    os.posix_fallocate(f.fileno(), 0, size)
        self._file = open(path, mode)  # noqa: SIM115 - closed in close()
        length = os.fstat(self._file.fileno()).st_size
        self.size = length
        if length == 0:
            self._mm: mmap.mmap | None = None
            self.buf: NDArray[np.uint8] = np.zeros(0, np.uint8)
            return
        access = mmap.ACCESS_WRITE if write else mmap.ACCESS_READ
        self._mm = mmap.mmap(self._file.fileno(), length, access=access)
        if scattered:  # no read-ahead or fault-around: a scattered read would map 16 pages per page touched
            self._mm.madvise(mmap.MADV_RANDOM)
        self.buf = np.frombuffer(self._mm, dtype=np.uint8)
        _MAPS[self.buf.ctypes.data] = (length, self._mm)
        _FDS[self.buf.ctypes.data] = self._file.fileno()
        if not write:
            _INPUTS[self.buf.ctypes.data] = path

    def fileno(self) -> int:
        """The mapped file's descriptor."""
        return self._file.fileno()

    def array(self, offset: int, dtype: np.dtype[Any], shape: tuple[int, ...]) -> NDArray[Any]:
        """A view of ``shape`` and ``dtype`` at byte ``offset`` (no copy, no page touched)."""
        n = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        return self.buf[offset : offset + n].view(dtype).reshape(shape)

    def flush(self) -> None:
        """Write dirty pages back to the file."""
        if self._mm is not None:
            self._mm.flush()

    def close(self) -> None:
        """Unmap and close; views must not be used afterwards."""
        if self._mm is not None:
            _MAPS.pop(self.buf.ctypes.data, None)
            _FDS.pop(self.buf.ctypes.data, None)
            _INPUTS.pop(self.buf.ctypes.data, None)
            self.buf = np.zeros(0, np.uint8)
            try:
                self._mm.close()
            except BufferError:  # a view still refers to it: it is freed with the last view
                pass
            self._mm = None
        self._file.close()


def release(*arrays: NDArray[Any]) -> None:
    """Drop the resident pages of any mapped ``arrays`` (a no-op for ordinary arrays)."""
    if not _MAPS:
        return
    for a in arrays:
        if a.size == 0:
            continue
        lo = a.ctypes.data
        hi = lo + (a.nbytes if a.flags.c_contiguous else _span(a))
        for base, (length, mm) in list(_MAPS.items()):  # a copy: another thread may map or close meanwhile
            if base <= lo < base + length:
                # Reach back one fault-around window: reading the next chunk maps up to 64 KiB of
                # cached pages around each fault, some of them behind it, already released once.
                start = max(0, (lo - base) // _PAGE * _PAGE - _FAULT_AROUND)
                stop = min(length, -(-(hi - base) // _PAGE) * _PAGE)
                if stop > start:
                    mm.madvise(mmap.MADV_DONTNEED, start, stop - start)
                break


def write_behind(a: NDArray[Any]) -> bool:
    """Start writing a finished stretch of a mapped output file to disk now, without waiting for it.

    The final flush then finds most pages already written: the disk works while the engine
    computes. Linux ``sync_file_range(SYNC_FILE_RANGE_WRITE)``, a hint: True when it was taken.
    Elsewhere, or for an array not in a mapped file, nothing (the final flush writes it all).
    """
    where = file_span(a)
    if where is None or a.size == 0:
        return False
    return start_writing(where[0], where[1], a.nbytes)


def start_writing(fd: int, offset: int, nbytes: int) -> bool:
    """`write_behind` of bytes ``[offset, offset + nbytes)`` of an open file: its dirty pages not yet being written."""
    fn = _sync_file_range()
    return fn is not None and nbytes > 0 and bool(fn(fd, offset, nbytes, _SYNC_FILE_RANGE_WRITE) == 0)


_SYNC_FILE_RANGE_WRITE = 2


def _sync_file_range() -> Any:
    """The C library's ``sync_file_range``, or None where there is none."""
    return _libc_function("sync_file_range", (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint))


@functools.lru_cache(maxsize=4)
def _libc_function(name: str, argtypes: tuple[Any, ...]) -> Any:
    """Linux's C library's function ``name`` (returning an int), or None: not Linux, not glibc, or too old."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = getattr(ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6"), name)
    except (OSError, AttributeError):
        return None
    fn.argtypes = list(argtypes)
    fn.restype = ctypes.c_int
    return fn


def _span(a: NDArray[Any]) -> int:
    """Bytes from the first to one past the last element of a strided view."""
    last = int(sum((n - 1) * s for n, s in zip(a.shape, a.strides, strict=True) if s > 0))
    return last + a.itemsize


def _steady_malloc() -> None:
    """Stop glibc from keeping freed chunk buffers (a model too big for memory is being streamed).

    glibc raises its mmap threshold after freeing a large block, so the next chunk-sized
    buffers come from the heap and stay resident after they are freed; over a long stream
    that drift adds hundreds of MiB. A fixed threshold returns every such buffer at once.
    Process-wide but harmless: only allocations of 1 MiB or more are affected.
    """
    global _MALLOC_SET
    if _MALLOC_SET:
        return
    _MALLOC_SET = True
    mallopt = _libc_function("mallopt", (ctypes.c_int, ctypes.c_int))
    if mallopt is not None:  # else not glibc: nothing to tune
        mallopt(_M_MMAP_THRESHOLD, 1 << 20)


_M_MMAP_THRESHOLD = -3
_MALLOC_SET = False


def trim_heap() -> bool:
    """Give the C heap's free pages back to the system (glibc's ``malloc_trim``): True where it gave some.

    Tables built from numpy temporaries of half a MiB (under glibc's mmap threshold) leave their freed
    pages in the heap, resident: built before the seal's superblock pass, they raised its peak by 9-16 MiB.
    """
    fn = _malloc_trim()
    return fn is not None and bool(fn(0))


def _malloc_trim() -> Any:
    return _libc_function("malloc_trim", (ctypes.c_size_t,))


def scratch_budget() -> int:
    """Bytes of scratch (the lane stores) an operation on files may keep in memory before using disk.

    ``PARAMSEAL_SCRATCH_MIB`` sets it (default 1024). Scratch on disk costs a page fault per
    block scattered to it, so sealing a model whose stores fit in the budget is about twice as fast.
    """
    raw = os.environ.get("PARAMSEAL_SCRATCH_MIB", "").strip()
    try:
        mib = int(raw) if raw else DEFAULT_SCRATCH_MIB
    except ValueError:
        mib = -1
    if mib < 0:  # a typo ('0MB', meant to force disk) must not pass as the 1 GiB default, as PARAMSEAL_NATIVE's
        raise UsageError(
            f"PARAMSEAL_SCRATCH_MIB={raw!r} is not a setting: give a whole number of MiB (0 keeps scratch on disk), "
            f"or leave it unset ({DEFAULT_SCRATCH_MIB} MiB)"
        )
    return mib << 20


DEFAULT_SCRATCH_MIB = 1024


class Workspace:
    """Scratch arrays for one operation: in memory up to a budget, then in temporary files.

    ``folder=None`` keeps everything in memory (the in-memory API, whose model is in memory anyway).
    """

    def __init__(self, folder: Path | None = None, budget: int | None = None) -> None:
        self.folder = folder  # None: keep everything in memory
        self.budget = scratch_budget() if budget is None else budget
        self.in_memory = 0  # bytes of scratch held in memory so far
        self._maps: list[Mapping] = []
        self._dir: Path | None = None  # a `private_folder`: its files are opened by name
        self._arena: Mapping | None = None  # the scratch file small arrays are cut from
        self._arena_used = 0

    def _in_memory(self, n: int) -> bool:
        # Small arrays count too: the rebuilt blocks of heavy damage are many small ones, one per tensor.
        if self.folder is None or self.in_memory + n <= self.budget:
            self.in_memory += n
            return True
        return False

    def zeros(self, shape: tuple[int, ...], dtype: type[np.generic]) -> NDArray[Any]:
        """A zero-filled scratch array (a sparse temporary file once the memory budget is spent)."""
        n = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        if self._in_memory(n):
            return np.zeros(shape, dtype=dtype)
        return self._on_disk(shape, dtype)

    def _on_disk(self, shape: tuple[int, ...], dtype: type[np.generic]) -> NDArray[Any]:
        assert self.folder is not None
        try:
            return self._scratch(shape, dtype)
        except OSError as e:  # a full disk or a size limit: exit 3 naming the folder, not a traceback
            what = f"scratch files in '{self.folder}' (used past PARAMSEAL_SCRATCH_MIB of memory)"
            raise cannot_write(self.folder / ".paramseal-scratch", e, what=what) from e

    def _scratch(self, shape: tuple[int, ...], dtype: type[np.generic]) -> NDArray[Any]:
        assert self.folder is not None
        n = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        if self._dir is None:
            self._dir = private_folder("paramseal-scratch", self.folder)  # '.paramseal-scratch.XXXXXXXX.tmp'
            _steady_malloc()
        if n >= CHUNK_BYTES:
            return self._new_file(n).array(0, np.dtype(dtype), shape)
        # Small arrays share scratch files: one file (and map: two descriptors) each ran a model of
        # a few hundred tensors out of descriptors when heavy damage rebuilt a little of every one.
        at = -(-self._arena_used // _PAGE) * _PAGE
        if self._arena is None or at + n > self._arena.size:
            self._arena, at = self._new_file(_ARENA_BYTES), 0
        self._arena_used = at + n
        return self._arena.array(at, np.dtype(dtype), shape)

    def _new_file(self, n: int) -> Mapping:
        assert self._dir is not None
        m = Mapping(self._dir / f"scratch{len(self._maps)}", write=True, size=max(n, 1), scattered=True)
        self._maps.append(m)
        return m

    def lanes_array(self, nshards: int, lanes: int, *, lane_major: bool = True) -> NDArray[np.uint32]:
        """A zeroed ``[nshards, lanes]`` uint32 lane store.

        On disk it is stored lane-major (a transposed view) by default, so one batch of lanes
        is one contiguous range of pages: coding a batch touches only that batch's pages.
        ``lane_major=False`` keeps it shard-major, for a store read in file order.
        """
        if self._in_memory(4 * nshards * lanes):
            return np.zeros((nshards, lanes), dtype=np.uint32)
        if not lane_major:
            shard_major: NDArray[np.uint32] = self._on_disk((nshards, lanes), np.uint32)
            return shard_major
        by_lane: NDArray[np.uint32] = self._on_disk((lanes, nshards), np.uint32)
        store: NDArray[np.uint32] = by_lane.T
        return store

    def close(self) -> None:
        """Delete the temporary files."""
        for m in self._maps:
            m.close()
        self._maps.clear()
        self._arena = None
        if self._dir is not None:
            discard_folder(self._dir)
            self._dir = None


#: Blocks a chunk may hold when it scatters to or gathers from a lane store on disk. Every block
#: lies in another lane there, so each one touches its own page, and the kernel maps up to 16
#: cached neighbours with it (fault-around, 64 KiB): 2048 blocks keep that near 128 MiB.
SCATTERED_BLOCKS = 2048


def chunks(nblocks: int, itemsize: int, first_block: int, lanes: int, *, scattered: int = 0) -> list[tuple[int, int]]:
    """Row ranges of about CHUNK_BYTES covering ``nblocks`` blocks, cut on stripe boundaries where possible.

    ``scattered``: the chunk also touches a lane store on disk, so it holds at most that
    many blocks unless whole stripes are that small (reads: ``SCATTERED_BLOCKS``; writes,
    which fault in no neighbours, may take more).
    """
    step = max(lanes, (CHUNK_BYTES // (64 * itemsize)) // lanes * lanes)
    if scattered and lanes > scattered:
        step, first = scattered, 0
    else:
        first = (-first_block) % lanes  # rows up to the first stripe boundary
    out = []
    r0 = 0
    if first and nblocks > first:
        out.append((0, first))
        r0 = first
    while r0 < nblocks:
        out.append((r0, min(nblocks, r0 + step)))
        r0 += step
    return out or [(0, nblocks)]


def pwrite_all(fd: int, buf: Any, at: int) -> None:
    """Write all of ``buf`` at offset ``at``: pwrite may write less than asked, and a 0 would spin forever."""
    view = memoryview(buf).cast("B")
    done = 0
    while done < len(view):
        n = os.pwrite(fd, view[done:], at + done)
        if n == 0:
            raise OSError(errno.EIO, "the file took no more bytes")
        done += n


def file_span(a: NDArray[Any]) -> tuple[int, int] | None:
    """``(descriptor, byte offset)`` of a C-contiguous array that lies in a mapped file, else None."""
    if not a.flags.c_contiguous:
        return None
    fds, offs = file_spans(np.array([a.ctypes.data], np.int64), np.array([a.nbytes], np.int64))
    return None if fds[0] < 0 else (int(fds[0]), int(offs[0]))


def file_spans(addrs: NDArray[np.int64], nbytes: NDArray[np.int64]) -> tuple[NDArray[np.int32], NDArray[np.int64]]:
    """`file_span` of many C-contiguous arrays, by address and length: descriptors (-1: none) and byte offsets.

    One pass per mapped file, not a Python call per array (a seal asks it twice a superblock for every tensor).
    """
    fds, offs = np.full(addrs.size, -1, np.int32), np.zeros(addrs.size, np.int64)
    for base, (length, _) in list(_MAPS.items()):
        inside = (addrs >= base) & (addrs + nbytes <= base + length)
        fds[inside] = _FDS[base]
        offs[inside] = addrs[inside] - base
    return fds, offs


def read(a: NDArray[Any], buf: NDArray[np.uint8] | None = None) -> NDArray[Any]:
    """The values of ``a``: read with ``pread`` into a new array when ``a`` lies in an input file mapped here.

    Touching a map of a file another process cut short kills the process (SIGBUS); a read call
    returns short instead, which is raised as an `InputError` naming the file. Anything else
    (an ordinary array, a view of an output or of scratch) is returned as it is. ``buf``: bytes
    to read into instead of a new array, when large enough (a loop's reused chunk: no page faults).
    Large reads are split over the cores (the copy out of the page cache is most of their cost).
    """
    where = _input_span(a)
    if where is None:
        return a
    raw = buf[: a.nbytes] if buf is not None and buf.size >= a.nbytes else np.empty(a.nbytes, np.uint8)
    fd, at, path = where
    if a.nbytes < _SPLIT_READ:
        _pread_all(fd, raw, at, path)
    else:
        parallel_map(lambda r: _pread_all(fd, raw[r[0] : r[1]], at + r[0], path), halves(a.nbytes))
    return raw.view(a.dtype).reshape(a.shape)


_SPLIT_READ = 4 << 20  # bytes from which a read is split over the cores


def check_inputs() -> None:
    """Raise `InputError` if an input file mapped here is now shorter than its map (cut short meanwhile).

    For code about to touch an input's map directly: a page past the new end would kill the process.
    """
    for base, path in list(_INPUTS.items()):
        length = _MAPS.get(base, (0, None))[0]
        fd = _FDS.get(base)
        if fd is not None and os.fstat(fd).st_size < length:
            raise changed_meanwhile(path)


def _input_span(a: NDArray[Any]) -> tuple[int, int, Path] | None:
    """``(descriptor, byte offset, path)`` of a C-contiguous array in an input file mapped here, else None."""
    if not _INPUTS or not a.flags.c_contiguous or a.size == 0:
        return None
    lo = a.ctypes.data
    for base, path in list(_INPUTS.items()):
        length = _MAPS.get(base, (0, None))[0]
        if base <= lo and lo + a.nbytes <= base + length:
            return _FDS[base], lo - base, path
    return None


def _pread_all(fd: int, view: NDArray[np.uint8], at: int, path: Path) -> None:
    done = 0
    while done < view.size:
        try:
            got = os.preadv(fd, [view[done:].data], at + done)
        except OSError as e:
            raise InputError(f"cannot read '{path}': {e.strerror or e}") from None
        if got <= 0:
            raise changed_meanwhile(path)
        done += got


def changed_meanwhile(path: Path) -> InputError:
    """The error for an input file cut short while it was read."""
    return InputError(
        f"'{path}' changed while it was read: it was cut short by another program; nothing was written. "
        "Read it again once nothing else writes to it"
    )


def copy_range(src: int, src_off: int, dst: int, dst_off: int, n: int) -> bool:
    """Copy ``n`` bytes between files inside the kernel (no page faults, shared extents where supported).

    Returns False, having copied nothing usable, where ``copy_file_range`` is unavailable.
    """
    done = 0
    try:
        while done < n:
            got = os.copy_file_range(src, dst, n - done, src_off + done, dst_off + done)
            if got <= 0:
                return False
            done += got
    except (OSError, AttributeError):  # old kernel, odd file system or no os.copy_file_range (not Linux)
        return False
    return True


def is_mapped(a: NDArray[Any]) -> bool:
    """Whether ``a`` lives in a mapped file (so that touching it costs resident pages until released)."""
    lo = a.ctypes.data
    return any(base <= lo < base + length for base, (length, _) in list(_MAPS.items()))


_T = TypeVar("_T")
_R = TypeVar("_R")


def read_ahead(read: Callable[[_T], _R], items: Iterable[_T]) -> Iterator[tuple[_T, _R]]:
    """``(item, read(item))`` in order, the next item's read running on a thread of its own meanwhile.

    For reads (``pread``: no GIL held) that would otherwise wait between chunks of compute.
    Memory: one chunk more. ``read`` must not enter numba's parallel kernels (see `_parallel.task_map`).
    """
    todo = list(items)
    if not todo:
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="paramseal-read") as pool:
        ahead = pool.submit(read, todo[0])
        for i, item in enumerate(todo):
            got = ahead.result()
            if i + 1 < len(todo):
                ahead = pool.submit(read, todo[i + 1])
            yield item, got


__all__ = [
    "CHUNK_BYTES",
    "changed_meanwhile",
    "check_inputs",
    "read",
    "read_ahead",
    "SCATTERED_BLOCKS",
    "Mapping",
    "Workspace",
    "chunks",
    "copy_range",
    "scratch_budget",
    "file_span",
    "is_mapped",
    "pwrite_all",
    "release",
    "trim_heap",
]

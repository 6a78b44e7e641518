"""The irs4 seal's block tags, written where a block lies whole in a staged stratum row.

`_strata.Strata.scatter` stages each batch's float strata, rows of consecutive stream words,
before it writes them. A block (64 values of one tensor) that lies whole in one such row is final
there but for its tag, so it is tagged there (`InPass.tag`, ``ps_tag_runs``): the sealed file is
then not read back and written again to be tagged, a pass that took about a fifth of a GiB's seal
(docs/performance.md). A block a row cuts (its values in two or more rows, most often the end of
one batch's row and the start of the next's) is tagged once its last part is staged, from the
parts' staged words, and its tag goes in as each batch writes, under the seal's write lock
(`_seal_cuts`, `InPass.writes`). Once a batch is written (`InPass.written`) its file ranges are
handed to the disk (as the tag pass did chunk by chunk, so that the final flush finds little to
write) by a thread of its own (`_Sender`), a few batches at a time, but for the pages of cut
blocks whose tags are still to come; the rest when the pass ends (`InPass.send_ready`), before the
tag pass. `InPass.rest` tags what is left after the pass:

* each tensor's reserved blocks (their identity record is written after the code) and its short
  last block (zero-padded when tagged, and perhaps too short to hold its tag);
* a cut block some part of which no staged row holds (none in a seal's usual layout);
* tensors the strata do not stage (integer and data tensors), chunk by chunk as before.

Until 2026-12-05 cut blocks were read back from the output, tagged and written again as soon as
both batches around them were written; about one seal in 250 of the MiniLM model (random keys, two
seals at a time) then kept zeros in a few of such a block's values, tagged as they were (verify:
intact), by a race not pinned down. Until 2026-12-06 they were then tagged after the pass, read
back: their pages (about 16,000 a GiB, scattered) written twice, 0.13-0.16 s of the final flush.
Nothing is read back now.
"""

from __future__ import annotations

import contextlib
import mmap
import queue
import threading
from collections.abc import Iterator

import numpy as np
from numpy.typing import NDArray

from . import _embed, _model, _native, _native_strata, _seal_cuts
from ._bits import tag_mask, tag_words
from ._layout import TensorSpec
from ._mac import BlockMac
from ._pages import file_span, start_writing
from ._strata import Strata
from .levels import BLOCK, TAG_BITS

_SEND_BATCHES = 8  # batches whose file ranges go to the disk together
_PAGE = mmap.PAGESIZE
_Edges = tuple[NDArray[np.int64], NDArray[np.int64]]  # (tensor, block) pairs


class InPass:
    """Which blocks the superblock pass tags, the tagging of them, and of the rest after it."""

    def __init__(self, st: Strata, specs: list[TensorSpec], outs: list[NDArray[np.unsignedinteger]], mac: BlockMac,
                 salt: bytes) -> None:  # fmt: skip
        self._st, self._specs, self._outs, self._mac, self._salt = st, specs, outs, mac, salt
        ts = st.flat_words(outs)
        self.ts = ts or []
        n = len(specs)
        self.staged = np.zeros(n, np.bool_)  # the tensors whose whole blocks are tagged in the pass
        ks = {specs[t].k for t in self.ts}
        if ts and len(ks) == 1 and _native.portable() and st.free_strata > 0:
            k = ks.pop()
            self._wm, self._sh = tag_words(tag_mask(k, 32), 2, k)
            probe = np.zeros(BLOCK, np.uint32)  # no runs: True exactly where the kernel runs here
            if k > 0 and BLOCK * k >= TAG_BITS and mac.tag_runs(probe, np.zeros((0, 4), np.int64), self._wm, self._sh):
                self.staged[self.ts] = True
        self._nonce = np.array([mac.pad_nonce(salt, t) if self.staged[t] else 0 for t in range(n)], np.int64)
        self._reserved = np.array([s.reserved for s in specs], np.int64)
        self._short = np.array([s.nblocks - 1 if s.numel % BLOCK else -1 for s in specs], np.int64)
        self._late_of: _Edges | None = None  # the cut blocks `_cuts` left, by tensor, made by `rest`
        spans = [file_span(outs[t]) for t in self.ts]
        fds = {sp[0] for sp in spans if sp is not None}
        self._fd = fds.pop() if len(fds) == 1 and all(sp is not None for sp in spans) else None
        # each staged tensor's file and byte offset there, or -1 and its address (then `_fd` is None)
        fd, self._base = np.full(n, -1, np.int32), np.zeros(n, np.int64)
        for t, sp in zip(self.ts, spans, strict=True):
            fd[t], self._base[t] = (-1, outs[t].ctypes.data) if sp is None else sp
        self._cuts = _seal_cuts.Cuts(self._tag_blocks, fd, self._base)
        # each staged batch's file ranges by first group, until it is written (then the disk's, a few batches at a time)
        self._lock = threading.Lock()
        self._ranges: dict[int, NDArray[np.int64]] = {}
        self._held = np.zeros((0, 2), np.int64)  # written ranges whose pages a cut block's tag will write again
        self._ready: list[NDArray[np.int64]] = []
        self._sender = None if self._fd is None else _Sender(self._fd)

    @property
    def active(self) -> bool:
        return bool(self.staged.any())

    def tag(self, wt: NDArray[np.uint32], g0: int, ng: int) -> None:
        """Tag the blocks lying whole in the staged strata ``wt`` (``[F, ld]``; rows ``[0, ng)``: groups ``g0...``)."""
        assert wt.flags.c_contiguous and wt.shape[1] >= ng
        rj, row0, row1, s0, owner, padding = self._st.piece_table(self.ts, g0, ng)
        t = np.asarray(self.ts, np.int64)[owner]
        live = ~padding & self.staged[t]
        t, rj, row0, row1, s0 = t[live], rj[live], row0[live], row1[live], s0[live]
        lo = s0 - self._st.start[t]  # the row's first value in its tensor
        b0 = np.maximum(-(-lo // BLOCK), self._reserved[t])
        b1 = (lo + row1 - row0) // BLOCK  # a tensor's short last block ends no row whole
        go = b1 > b0
        at = rj * wt.shape[1] + row0 + BLOCK * b0 - lo
        self._tag(wt, np.stack([at[go], self._nonce[t[go]], b0[go], (b1 - b0)[go]], axis=1))
        self._cuts.add(g0, wt, self._cut_parts(wt.shape[1], g0, t, rj, row0, row1, lo))
        if self._fd is not None:
            with self._lock:
                self._ranges[g0] = np.stack([self._base[t] + 4 * lo, 4 * (row1 - row0)], axis=1)

    def _cut_parts(
        self, ld: int, g0: int, t: NDArray[np.int64], rj: NDArray[np.int64], row0: NDArray[np.int64],
        row1: NDArray[np.int64], lo: NDArray[np.int64],
    ) -> _seal_cuts.Parts:  # fmt: skip
        """The pieces' parts of the blocks they cut (not whole in them): a piece's first and last, if cut."""
        end = lo + row1 - row0
        hb, tb = lo // BLOCK, (end - 1) // BLOCK
        head = lo % BLOCK != 0
        tail = (end % BLOCK != 0) & ~(head & (tb == hb))  # a piece inside one block is its head part
        sel = np.r_[np.flatnonzero(head), np.flatnonzero(tail)]
        pt, blk = t[sel], np.r_[hb[head], tb[tail]]
        v0 = np.r_[lo[head], BLOCK * tb[tail]]
        v1 = np.r_[np.minimum(end, BLOCK * hb + BLOCK)[head], end[tail]]
        src = (rj * ld + row0 - lo)[sel] + v0  # the part's first word in the strata
        # `rest` tags the reserved blocks (their record is written after the code) and the short last ones
        keep = (blk >= self._reserved[pt]) & (blk != self._short[pt])
        n = int(keep.sum())
        slot, owner, row = (v0 - BLOCK * blk)[keep], np.full(n, g0, np.int64), np.arange(n, dtype=np.int64)
        return _seal_cuts.Parts(pt[keep], blk[keep], slot, (v1 - v0)[keep], owner, src[keep], row,
                                np.zeros((n, BLOCK), np.uint32))  # fmt: skip

    @contextlib.contextmanager
    def writes(self, lock: threading.Lock, g0: int) -> Iterator[None]:
        """Held around batch ``g0``'s writes: ``lock`` (one batch's writes at a time), and its cut blocks' tags.

        Before the writes, the tagged parts of its cut blocks go into its strata; after them, it writes
        the tagged parts its `tag` completed of batches written before it (`_seal_cuts`).
        """
        with lock:
            self._cuts.take(g0)
            yield
            self._cuts.after(g0)

    def written(self, g0: int, g1: int) -> None:
        """Batch ``[g0, g1)`` is written: start the disk on its file ranges (and on those kept back now final)."""
        if self._fd is None:  # arrays, or outputs in several files: the final flush writes them
            return
        with self._lock:
            self._ready.append(self._ranges.pop(g0))
            if len(self._ready) < _SEND_BATCHES:  # the last few: `send_ready`
                return
            # not the pages of parts of cut blocks whose tags are still to come: each page written once
            ranges, self._held = _minus(np.concatenate([self._held, *self._ready]), _pages(self._cuts.open_spans()))
            self._ready = []
        assert self._sender is not None  # a call a stratum for several batches: one a piece cost 0.2 s a GiB
        self._sender.send(_joined(ranges))

    def send_ready(self) -> None:
        """After the superblock pass: hand the disk the written batches `written` kept back (the last few)."""
        with self._lock:
            ready = [*self._ready, self._held]  # with the pages of cut blocks left to `rest`
            self._ready, self._held = [], np.zeros((0, 2), np.int64)
        if ready and self._sender is not None:
            self._sender.send(_joined(np.concatenate(ready)))

    def close(self) -> None:
        """After the tag pass (or a failure): the ranges handed to the disk are all asked for."""
        if self._sender is not None:
            self._sender.close()

    def _late_blocks(self, t: int) -> NDArray[np.int64]:
        """Tensor ``t``'s cut blocks the pass did not tag (a part never staged; sorted by tensor once)."""
        with self._lock:
            if self._late_of is None:
                self._late_of = self._cuts.incomplete()
            tt, bb = self._late_of
        return bb[np.searchsorted(tt, t) : np.searchsorted(tt, t, side="right")]

    def _tag_blocks(self, ub: NDArray[np.uint32], tensors: NDArray[np.int64], blocks: NDArray[np.int64]) -> None:
        self._tag_rows(ub, np.arange(tensors.size), tensors, blocks)

    def _tag_rows(
        self, ub: NDArray[np.uint32], rows: NDArray[np.int64], tensors: NDArray[np.int64], blocks: NDArray[np.int64]
    ) -> None:
        """Tag rows ``rows`` of ``ub`` (``[n, 64]``), each block ``blocks[i]`` of tensor ``tensors[i]``."""
        one = np.ones(rows.size, np.int64)
        self._tag(ub, np.stack([BLOCK * rows, self._nonce[tensors], blocks, one], 1))

    def _tag(self, buf: NDArray[np.uint32], runs: NDArray[np.int64]) -> None:
        if not self._mac.tag_runs(buf.reshape(-1), runs, self._wm, self._sh):
            raise AssertionError("the compiled tag kernel ran for the probe but not for these blocks")

    def rest(self, t: int, plain: bytes, record: bool) -> NDArray[np.uint64]:
        """Tag tensor ``t``'s blocks the pass left (a staged tensor); return the tags kept in the header."""
        spec, flat = self._specs[t], self._outs[t]
        late = self._late_blocks(t)
        short = self._short[t : t + 1]  # its short last block, if it has one (-1 if not)
        at = np.unique(np.concatenate([np.arange(spec.reserved), late, short[short >= 0]]).astype(np.int64))
        if not at.size:
            return np.zeros(0, np.uint64)
        ub = _read_at(flat, spec, at)
        inside = spec.tag_inside(at)  # not an array of every block: 0.07 s a GiB's tensors
        if record and spec.reserved:  # rows 0 .. reserved - 1 are blocks 0 .. reserved - 1
            _embed.write_reserved(ub, spec, plain, np.arange(spec.reserved), 0)
        rows = np.flatnonzero(inside)
        self._tag_rows(ub, rows, np.full(rows.size, t), at[rows])
        ext = np.zeros(0, np.uint64)
        if not inside.all():  # a short last block too short for its tag
            ext = _model.compute_tags(
                self._mac, self._salt, t, spec, ub[~inside], spec.block_storage()[1], at=at[~inside]
            )
        _write_at(flat, spec, at, ub)
        return ext


class _Sender:
    """`start_writing` of file ranges from a thread of its own, in the order sent.

    The call waits whenever the disk's queue is full: made by the superblock threads, it took 0.53 s of
    their time in a GiB's seal (`benchmarks/seal_phases.py`, for 0.10 CPU-s), while they had work to do.
    """

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._q: queue.SimpleQueue[list[tuple[int, int]] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None  # started by the first range sent

    def send(self, ranges: list[tuple[int, int]]) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="paramseal-write-behind", daemon=True)
                self._thread.start()
        self._q.put(ranges)

    def close(self) -> None:
        """Wait until every range sent has been asked for (the file must stay open until then)."""
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._q.put(None)
            thread.join()

    def _run(self) -> None:
        while (ranges := self._q.get()) is not None:
            for off, n in ranges:
                start_writing(self._fd, off, n)


def _joined(ranges: NDArray[np.int64]) -> list[tuple[int, int]]:
    """``(offset, bytes)`` rows as the fewest ranges covering them (adjacent or overlapping ones joined)."""
    j = _join(ranges)
    return list(zip(j[:, 0].tolist(), j[:, 1].tolist(), strict=True))


def _join(ranges: NDArray[np.int64]) -> NDArray[np.int64]:
    """`_joined` as rows ``[n, 2]``."""
    if not ranges.size:
        return np.zeros((0, 2), np.int64)
    r = ranges[np.argsort(ranges[:, 0], kind="stable")]
    ends = np.maximum.accumulate(r[:, 0] + r[:, 1])
    first = np.flatnonzero(np.r_[True, r[1:, 0] > ends[:-1]])
    last = np.r_[first[1:], r.shape[0]] - 1
    return np.stack([r[first, 0], ends[last] - r[first, 0]], axis=1)


def _pages(spans: NDArray[np.int64]) -> NDArray[np.int64]:
    """``(offset, bytes)`` rows rounded out to whole pages."""
    lo = spans[:, 0] // _PAGE * _PAGE
    return np.stack([lo, -(-(spans[:, 0] + spans[:, 1]) // _PAGE) * _PAGE - lo], axis=1)


def _minus(ranges: NDArray[np.int64], holes: NDArray[np.int64]) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """``(offset, bytes)`` rows: the bytes of ``ranges`` outside ``holes``, and those inside them."""
    a, b = _join(ranges), _join(holes)
    cuts = np.sort(np.r_[a[:, 0], a.sum(1), b[:, 0], b.sum(1)])
    lo, hi = cuts[:-1], cuts[1:]  # pieces each inside or outside each (joined: disjoint) set as a whole

    def inside(r: NDArray[np.int64]) -> NDArray[np.bool_]:
        i = np.searchsorted(r[:, 0], lo, side="right") - 1
        return (i >= 0) & (lo < (r[:, 0] + r[:, 1])[np.maximum(i, 0)]) if r.size else np.zeros(lo.size, np.bool_)

    in_a, in_b = inside(a), inside(b)
    some = in_a & (hi > lo)
    out, held = (_join(np.stack([lo[m], (hi - lo)[m]], axis=1)) for m in (some & ~in_b, some & in_b))
    return out, held


def _read_at(flat: NDArray[np.unsignedinteger], spec: TensorSpec, at: NDArray[np.int64]) -> NDArray[np.uint32]:
    """Blocks ``at`` (sorted) of a staged tensor's flat words, zero-padded: ``[len(at), 64]``.

    Read as `_write_at` writes them (pread from a file: page faults on the mapping, and dropping the
    pages after, took half the tag pass's CPU time).
    """
    ub = np.zeros((at.size, BLOCK), np.uint32)
    _native_strata.get_strata(ub.reshape(1, -1), _pieces(flat, spec, at))
    return ub


def _write_at(
    flat: NDArray[np.unsignedinteger], spec: TensorSpec, at: NDArray[np.int64], ub: NDArray[np.uint32]
) -> None:
    """Write blocks ``at`` back (padding dropped)."""
    _native_strata.put_strata(ub.reshape(1, -1), _pieces(flat, spec, at))


def _pieces(
    flat: NDArray[np.unsignedinteger], spec: TensorSpec, at: NDArray[np.int64]
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.uint64], NDArray[np.int32]]:
    """Blocks ``at`` (sorted) of ``flat`` as one stratum's rows (``ps_put_strata``), a piece a run of blocks."""
    r0 = np.flatnonzero(np.r_[True, np.diff(at) != 1])  # rows of ub that start a run
    ends = np.r_[r0[1:], at.size] * BLOCK
    ends[-1] = min(int(ends[-1]), (at.size - 1) * BLOCK + spec.numel - int(at[-1]) * BLOCK)
    start = (at[r0] - r0) * BLOCK  # the tensor index row 0 of ub would have, run by run
    where = file_span(flat)
    if where is None:
        base, fd = (flat.ctypes.data + 4 * start).astype(np.uint64), np.full(r0.size, -1, np.int32)
    else:
        base, fd = (where[1] + 4 * start).astype(np.uint64), np.full(r0.size, where[0], np.int32)
    return np.array([0, r0.size], np.int64), np.ascontiguousarray(ends, np.int64), base, fd


__all__ = ["InPass"]

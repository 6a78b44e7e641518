"""The blocks the seal's staged stratum rows cut, tagged in its superblock pass (`_seal_tags.InPass`).

A block (64 values of one tensor) whose values lie in two or more staged rows (a row's first word
cuts it, most often where one batch's row ends and the next's begins) is final but for its tag once
every row holding a part of it is staged. `Cuts.add` keeps each part's words until then; the batch
that stages the last part tags the whole block, and each part's tagged words go where that part is
written:

* into its batch's strata before they are written (`Cuts.take`), where that batch is not written yet;
* into the output, by the completing batch right after its own writes (`Cuts.after`), where it is.

`take` and `after` run under the seal's write lock, held for each batch's writes, and a batch is
marked written there: so a part's tagged words always land after its untagged ones, and nothing is
read back from the output. Until 2026-12-06 these blocks were read back, tagged and written again
after the pass: about 16,000 scattered pages of a GiB's output written twice, 0.13-0.16 s of its
final flush (docs/performance.md). A block some part of which is never staged is left to the
tag pass (`incomplete`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np
from numpy.typing import NDArray

from . import _native_strata
from .levels import BLOCK

_Tag = Callable[[NDArray[np.uint32], NDArray[np.int64], NDArray[np.int64]], None]  # (blocks [n, 64], tensors, blocks)
_COLS = ("t", "blk", "slot", "n", "owner", "src", "row")


class Parts:
    """Parts of cut blocks, each in a row of ``words`` (``[rows, 64]``; the parts of a tagged block share one).

    Per part: tensor, block, first slot in the block, values, owner batch, first word in that batch's
    strata (flat), and its row.
    """

    __slots__ = (*_COLS, "words")

    def __init__(self, t: NDArray[np.int64], blk: NDArray[np.int64], slot: NDArray[np.int64], n: NDArray[np.int64],
                 owner: NDArray[np.int64], src: NDArray[np.int64], row: NDArray[np.int64],
                 words: NDArray[np.uint32]) -> None:  # fmt: skip
        self.t, self.blk, self.slot, self.n, self.owner, self.src, self.row = t, blk, slot, n, owner, src, row
        self.words = words

    @staticmethod
    def empty() -> Parts:
        z = np.zeros(0, np.int64)
        return Parts(z, z, z, z, z, z, z, np.zeros((0, BLOCK), np.uint32))

    @property
    def size(self) -> int:
        return int(self.t.size)

    def __getitem__(self, sel: NDArray[np.bool_] | NDArray[np.int64]) -> Parts:
        t, blk, slot, n, owner, src, row = (getattr(self, c)[sel] for c in _COLS)
        return Parts(t, blk, slot, n, owner, src, row, self.words)

    def held_in(self, row: NDArray[np.int64], words: NDArray[np.uint32]) -> Parts:
        """The same parts, in rows ``row`` of ``words``."""
        return Parts(self.t, self.blk, self.slot, self.n, self.owner, self.src, row, words)

    def compact(self) -> Parts:
        """The same parts with only the rows of ``words`` they use."""
        rows, row = np.unique(self.row, return_inverse=True)
        return self.held_in(row.astype(np.int64), self.words[rows])

    def key(self) -> NDArray[np.int64]:
        return self.t << 40 | self.blk  # tensors < 2^23, blocks < 2^40


def _concat(ps: list[Parts]) -> Parts:
    """The parts of ``ps``, one after another, with their words."""
    if len(ps) == 1:
        return ps[0]
    base = np.cumsum([0] + [p.words.shape[0] for p in ps[:-1]])
    t, blk, slot, n, owner, src = (np.concatenate([getattr(p, c) for p in ps]) for c in _COLS[:-1])
    row = np.concatenate([p.row + b for p, b in zip(ps, base, strict=True)])
    return Parts(t, blk, slot, n, owner, src, row, np.concatenate([p.words for p in ps]))


class Cuts:
    """Cut blocks' parts, kept until their block is whole, then tagged and handed to their batches' writes.

    ``tag``: tags whole blocks in place. ``fd`` and ``base``: per tensor, the descriptor of the file
    it lies in (or -1) and the byte offset (or address) of its value 0, where ``after`` writes.
    """

    def __init__(self, tag: _Tag, fd: NDArray[np.int32], base: NDArray[np.int64]) -> None:
        self._tag, self._fd, self._base = tag, fd, base
        self._lock = threading.Lock()
        self._pending = Parts.empty()  # parts of blocks not whole yet
        self._bufs: dict[int, NDArray[np.uint32]] = {}  # each batch's staged strata, from `add` to `take`
        self._patches: dict[int, list[Parts]] = {}  # tagged parts for a batch's strata, before its writes
        self._writes: dict[int, list[Parts]] = {}  # tagged parts of written batches, for a batch to write
        self._written: set[int] = set()
        self.tagged = 0  # blocks tagged

    def add(self, g0: int, buf: NDArray[np.uint32], parts: Parts) -> None:
        """Batch ``g0``'s parts (their words read from ``buf``, its strata); tag the blocks they complete."""
        flat = buf.reshape(-1)
        _native_strata.move_parts(flat, parts.src, parts.row, parts.slot, parts.n, parts.words, to_rows=True)
        with self._lock:
            self._bufs[g0] = buf
            every = _concat([self._pending, parts])
            key = every.key()
            order = np.argsort(key, kind="stable")
            every, key = every[order], key[order]
            first = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
            filled = np.add.reduceat(every.n, first) == BLOCK if first.size else np.zeros(0, np.bool_)
            whole = np.repeat(filled, np.diff(np.r_[first, key.size]))
            self._pending, done = every[~whole].compact(), every[whole]
        if not done.size:
            return
        key = key[whole]
        first = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
        group = np.repeat(np.arange(first.size), np.diff(np.r_[first, key.size]))
        blocks = np.bitwise_or.reduceat(done.words[done.row], first, axis=0)  # disjoint slots: OR joins the parts
        self._tag(blocks, done.t[first], done.blk[first])
        done = done.held_in(group, blocks)
        with self._lock:
            self.tagged += first.size
            for owner in np.unique(done.owner).tolist():
                # written already: this batch writes them after its own writes, under the same lock
                to = self._writes.setdefault(g0, []) if owner in self._written else self._patches.setdefault(owner, [])
                to.append(done[done.owner == owner])

    def take(self, g0: int) -> None:
        """Under the write lock, before batch ``g0``'s writes: its tagged parts into its strata; mark it written."""
        with self._lock:
            self._written.add(g0)
            buf = self._bufs.pop(g0, None)
            patches = self._patches.pop(g0, [])
        if buf is None or not patches:
            return
        p = _concat(patches)
        _native_strata.move_parts(buf.reshape(-1), p.src, p.row, p.slot, p.n, p.words, to_rows=False)

    def after(self, g0: int) -> None:
        """Under the write lock, after batch ``g0``'s writes: the tagged parts of batches written before it."""
        with self._lock:
            writes = self._writes.pop(g0, [])
        if not writes:
            return
        p = _concat(writes)
        ends = np.cumsum(p.n)
        row = np.zeros(int(ends[-1]), np.uint32)  # the parts one after another, as they are written
        _native_strata.move_parts(row, ends - p.n, p.row, p.slot, p.n, p.words, to_rows=False)
        at = self._at(p) - 4 * (ends - p.n)  # where column 0 would lie
        pieces = (np.array([0, p.size], np.int64), ends.astype(np.int64), at.astype(np.uint64), self._fd[p.t].copy())
        _native_strata.put_strata(row.reshape(1, -1), pieces)

    def open_spans(self) -> NDArray[np.int64]:
        """``[n, 2]`` (byte offset, bytes) of the parts not yet written tagged (their pages will be written again)."""
        with self._lock:
            ps = [self._pending, *(p for q in (self._patches, self._writes) for ps in q.values() for p in ps)]
        return np.concatenate([np.stack([self._at(p), 4 * p.n], axis=1) for p in ps])

    def _at(self, p: Parts) -> NDArray[np.int64]:
        """Each part's byte offset in its file (or its address)."""
        return self._base[p.t] + 4 * (BLOCK * p.blk + p.slot)

    def incomplete(self) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        """After the pass: (tensor, block) of the blocks left for the tag pass, sorted by tensor."""
        with self._lock:
            key = np.unique(self._pending.key())
        return key >> 40, key & ((1 << 40) - 1)


__all__ = ["Cuts", "Parts"]

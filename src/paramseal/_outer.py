"""The outer code of irs4: an erasure code across the groups of a superblock.

A group that the inner decoder cannot correct (its share of scattered damage is past the
radius) is known, so it is an erasure here. A group's content (its words without free
bits) is cut into 64-byte columns; in each superblock of up to ``SUPER_MAX`` consecutive
groups every column is one Reed–Solomon code over GF(2^16) (leopard) with ``R`` parity
shards of 64 bytes. The parity lives in `host_for` free bytes per codeword of the superblock's
own groups (8 bytes a group at 2), which the inner code protects as data. A failed
group costs every column one data shard but only the one parity shard it hosts, so a
superblock recovers while its failed groups number a little under R.

The rate is fixed by the hosting, so R grows with the superblock: R / S = 4 * host / shard
bytes, about 1% of the groups at 2 bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import reed_solomon_leopard as rsl
from numpy.typing import NDArray

from . import _irs, _irs_consts, _native, _rs16
from ._jit import njit
from ._kernels import rows_as_bytes as _shards
from ._parallel import halves, parallel_map

SUPER_MAX = 16384  # groups per superblock: [16384, 255] words (16 MiB) at a time when sealing
# Free bytes per codeword given to the outer code, per k: each costs the inner code one parity
# byte per codeword (radius -4/5 word, erasure bound -1 word per group) and buys S * 4 / shard
# parity shards. Strong (k=12) takes 3: at its 20% scattered point a 1M-parameter model's single
# superblock had failed groups within a few of what 2 bytes repair (docs/results.md).
HOSTS = {8: 2, 12: 3}
KNOWN_HOSTS = (2, 3)  # what recover reads: every value this or an earlier release wrote


def host_for(k: int) -> int:
    """Free bytes per codeword that carry the outer code at ``k`` free bits (2 unless ``HOSTS`` says)."""
    return HOSTS.get(k, 2)


MIN_PARITY = 4  # fewer parity shards than this are not worth the inner radius they cost


@dataclass(frozen=True, slots=True)
class Outer:
    """The superblocks of one model and the shape of their shards."""

    k: int
    free_strata: int
    host: int
    sb_start: NDArray[np.int64]  # (superblocks + 1,) first group of each superblock, then G
    shard: int  # bytes per shard: a group's content, padded to a multiple of 64

    @property
    def superblocks(self) -> int:
        """Number of superblocks."""
        return int(self.sb_start.size - 1)

    def span(self, s: int) -> tuple[int, int]:
        """Groups ``[a, b)`` of superblock ``s``."""
        return int(self.sb_start[s]), int(self.sb_start[s + 1])

    def parity_count(self, s: int) -> int:
        """Parity shards of superblock ``s`` (what its groups can host)."""
        a, b = self.span(s)
        return (b - a) * 4 * self.host // self.shard if self.host else 0

    def content(self, w: NDArray[np.uint32], out: NDArray[np.uint8] | None = None) -> NDArray[np.uint8]:
        """Each group's content bytes (free bits left out), one padded shard per row.

        Into ``out`` if given (``[ng, shard]``), else a new array.
        """
        fast = _native.content(w, self.free_strata, self.k, self.shard, out)
        if fast is not None:
            return fast
        if out is None:
            out = np.zeros((w.shape[0], self.shard), np.uint8)
        else:  # the numba kernel writes the content bytes, not the padding after them
            assert out.shape == (w.shape[0], self.shard) and out.dtype == np.uint8
            out.fill(0)
        sf, k = self.free_strata, self.k
        parallel_map(lambda r: _content_nb(w[r[0] : r[1]], sf, k, out[r[0] : r[1]]), halves(w.shape[0]))
        return out

    def words(self, content: NDArray[np.uint8]) -> NDArray[np.uint32]:
        """Inverse of ``content``: words with free bits zero (hosted bytes zero too)."""
        ng = content.shape[0]
        by = np.zeros((ng, _irs_consts.N_POS, 4), np.uint8)
        lo = self.k // 8
        nf = self.free_strata * (4 - lo)
        by[:, : self.free_strata, lo:] = content[:, :nf].reshape(ng, self.free_strata, 4 - lo)
        by[:, self.free_strata :] = content[:, nf : nf + 4 * (_irs_consts.N_POS - self.free_strata)].reshape(ng, -1, 4)
        return by.view(np.uint32).reshape(ng, _irs_consts.N_POS)

    @property
    def columns(self) -> int:
        """64-byte columns of a shard; each column is its own code, so a failed group costs each little parity."""
        return self.shard // 64

    def parity(self, content: NDArray[np.uint8], s: int) -> NDArray[np.uint8]:
        """Parity of superblock ``s``: ``[columns, R, 64]`` bytes, from its groups' content ``[S, shard]``."""
        r = self.parity_count(s)
        fast = _rs16.parity(content, r) if r else None
        if fast is not None:  # the compiled encoder: the same bytes (tested), without the GIL
            return fast
        out = np.zeros((self.columns, r, 64), np.uint8)

        # A code over GF(2^16) acts on each 2-byte symbol position alike, so one leopard call on
        # whole shards gives every column's parity (tested). One call on one thread: leopard holds
        # the GIL for much of a call, and two threads calling it were slower than one making both.
        if r:
            par = np.frombuffer(b"".join(rsl.encode(_shards(content), r)), np.uint8)
            out[:] = par.reshape(r, self.columns, 64).transpose(1, 0, 2)
        return out

    @staticmethod
    def put_hosted(rows: NDArray[np.uint32], hosted: tuple[NDArray[np.uint8], NDArray[np.int16]]) -> None:
        """Write `hosted_bytes`'s rows (as many as ``rows``) into ``rows``, in place."""
        rows.view(np.uint8).reshape(rows.shape[0], 4 * _irs_consts.N_POS)[:, hosted[1]] = hosted[0]

    def can_repair(self, failed: NDArray[np.bool_], s: int) -> bool:
        """Whether `repair` has the shards to rebuild the ``failed`` groups of superblock ``s``.

        Every column loses one data shard per failed group, and the parity shards that failed
        groups host; it needs as many parity shards left as data shards lost.
        """
        r = self.parity_count(s)
        nf = int(np.count_nonzero(failed))
        if nf == 0:
            return True
        if r == 0 or nf > r:
            return False
        lost = self._lost_parity(failed, r)
        return bool(np.all(nf + lost.sum(axis=1) <= r))

    def _lost_parity(self, failed: NDArray[np.bool_], r: int) -> NDArray[np.bool_]:
        """``[columns, R]``: parity shards with a byte in a failed group (shard (c, j) is at byte 64 (c R + j))."""
        host_failed = np.repeat(failed, 4 * self.host)[: self.columns * r * 64]
        return np.asarray(host_failed.reshape(self.columns, r, 64).any(axis=2), dtype=np.bool_)

    def repair(
        self, code: _irs.Code, w: NDArray[np.uint32], failed: NDArray[np.bool_], s: int
    ) -> NDArray[np.uint32] | None:
        """Rows of the failed groups, rebuilt from the others' content and the parity they host.

        ``w``: the superblock's words as decoded (failed rows are ignored). Returns the failed
        rows' full codewords (free bits, hosted bytes and all), or None when too much is lost.
        """
        r = self.parity_count(s)
        lost = np.flatnonzero(failed)
        if r == 0 or not self.can_repair(failed, s):
            return None
        content = self.content(w)
        stream = w.view(np.uint8).reshape(w.shape[0], _irs_consts.N_POS, 4)[:, code.hosted.reshape(-1), 0].reshape(-1)
        gone = self._lost_parity(failed, r)
        for c in range(self.columns):
            have = {}
            for j in range(r):
                at = 64 * (c * r + j)
                if not gone[c, j]:
                    have[j] = stream[at : at + 64].tobytes()
            if lost.size > len(have):
                return None
            col = _shards(content[:, 64 * c : 64 * (c + 1)])
            orig = {int(i): col[i] for i in np.flatnonzero(~failed)}
            try:
                got = rsl.decode(w.shape[0], r, orig, have)
            except (ValueError, RuntimeError):
                return None
            for i in lost:
                content[i, 64 * c : 64 * (c + 1)] = np.frombuffer(got[int(i)], np.uint8)
        rows = self.words(content[lost])
        self.put_rows(code, rows, lost, self.parity(content, s), w.shape[0])
        _irs.encode(code, rows)
        return rows

    def put_rows(
        self, code: _irs.Code, rows: NDArray[np.uint32], which: NDArray[np.int64], parity: NDArray[np.uint8], ng: int
    ) -> None:
        """Write the hosted bytes of superblock rows ``which`` (of ``ng``) into ``rows``: parity column by column."""
        stream, at = self.hosted_bytes(code, parity, ng)
        self.put_hosted(rows, (stream[which], at))

    def hosted_bytes(
        self, code: _irs.Code, parity: NDArray[np.uint8], ng: int
    ) -> tuple[NDArray[np.uint8], NDArray[np.int16]]:
        """The parity as a superblock of ``ng`` groups hosts it: ``[ng, n]`` bytes, and the byte each takes."""
        stream = np.zeros(ng * 4 * self.host, np.uint8)
        stream[: parity.size] = parity.reshape(-1)
        return stream.reshape(ng, -1), (4 * code.hosted.reshape(-1)).astype(np.int16)  # byte 0 of each hosting word


@njit(cache=True, nogil=True)
def _content_nb(w, sf, k, out):  # type: ignore[no-untyped-def]
    """Each row's content: float words (positions < ``sf``) less their free bits, then data words whole.

    A float word's k free bits are zeroed and its whole free bytes (k // 8) dropped.
    """
    keep = np.uint32(~((1 << k) - 1) & 0xFFFFFFFF)
    lo = k // 8
    for g in range(w.shape[0]):
        at = 0
        for j in range(w.shape[1]):
            x = w[g, j]
            b0 = 0
            if j < sf:
                x &= keep
                b0 = lo
            for b in range(b0, 4):
                out[g, at] = (x >> np.uint32(8 * b)) & np.uint32(255)
                at += 1


def plan(G: int, k: int, free_strata: int, host: int) -> Outer:
    """Superblocks of at most SUPER_MAX groups, as even as possible; ``host`` 0 gives plain batches."""
    n = -(-G // SUPER_MAX)
    sb = np.array([round(i * G / n) for i in range(n + 1)], np.int64)
    content = free_strata * (4 - k // 8) + 4 * (_irs_consts.N_POS - free_strata)
    return Outer(k, free_strata, host, sb, -(-content // 64) * 64)


def choose_host(G: int, k: int, free_strata: int) -> int:
    """`host_for` k when every superblock gets at least MIN_PARITY shards (and k has whole free bytes), else 0."""
    host = host_for(k)
    if k < 8 or free_strata < 4 * host:
        return 0
    o = plan(G, k, free_strata, host)
    return host if min(o.parity_count(s) for s in range(o.superblocks)) >= MIN_PARITY else 0


__all__ = ["HOSTS", "KNOWN_HOSTS", "SUPER_MAX", "Outer", "choose_host", "host_for", "plan"]

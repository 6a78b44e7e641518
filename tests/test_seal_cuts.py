"""The blocks staged rows cut, tagged in the seal's pass (`_seal_cuts`), in every order batches stage and write."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from paramseal import _native, _seal_cuts, _seal_tags
from paramseal.levels import BLOCK

needs_lib = pytest.mark.skipif(_native._lib() is None, reason="compiled library not built")

# One tensor of 4 blocks in memory; 3 batches. Block 1 is cut in three (batch 0: 20 values, 1: 30, 2: 14),
# block 2 in two (batch 2: 40 values, batch 0: 24), blocks 0 and 3 are whole in batch 1 and never cut.
_PARTS = {  # batch -> [(block, first slot, values)]
    0: [(1, 0, 20), (2, 40, 24)],
    1: [(1, 20, 30)],
    2: [(1, 50, 14), (2, 0, 40)],
}


def _fake_tag(blocks: np.ndarray, tensors: np.ndarray, ids: np.ndarray) -> None:
    """A stand-in for the MAC: every word of a block changed by its block and its slot, so a part tagged
    from a block that was not whole, or put in the wrong slots, differs."""
    blocks ^= ((ids[:, None] + 1) << 20 | np.arange(BLOCK)[None, :] << 8).astype(np.uint32)


class _Run:
    def __init__(self) -> None:
        rng = np.random.default_rng(0)
        self.values = rng.integers(0, 2**32, 4 * BLOCK, dtype=np.uint64).astype(np.uint32)  # what each batch stages
        self.out = np.zeros(4 * BLOCK, np.uint32)  # the output tensor the batches write
        fd, base = np.array([-1], np.int32), np.array([self.out.ctypes.data], np.int64)
        self.cuts = _seal_cuts.Cuts(_fake_tag, fd, base)
        self.bufs = {g: np.zeros((2, 128), np.uint32) for g in _PARTS}  # each batch's strata: its parts in row 1
        self.where: dict[int, list[tuple[int, int, int]]] = {}  # batch -> (value, strata index, count)

    def stage(self, g: int) -> None:
        t, blk, slot, n, src = [], [], [], [], []
        at = 128  # row 1 of the batch's strata
        for b, s, m in _PARTS[g]:
            v = BLOCK * b + s
            self.bufs[g].reshape(-1)[at : at + m] = self.values[v : v + m]
            self.where.setdefault(g, []).append((v, at, m))
            t, blk, slot, n, src = t + [0], blk + [b], slot + [s], n + [m], src + [at]
            at += m + 3
        a = [np.array(x, np.int64) for x in (t, blk, slot, n)]
        parts = _seal_cuts.Parts(*a, np.full(len(t), g, np.int64), np.array(src, np.int64),
                                 np.arange(len(t), dtype=np.int64), np.zeros((len(t), BLOCK), np.uint32))  # fmt: skip
        self.cuts.add(g, self.bufs[g], parts)

    def write(self, g: int) -> None:
        """As `InPass.writes` around `ps_put_strata`: take, the batch's own words, after."""
        self.cuts.take(g)
        for v, at, m in self.where[g]:
            self.out[v : v + m] = self.bufs[g].reshape(-1)[at : at + m]
        self.cuts.after(g)


def _expected() -> np.ndarray:
    r = _Run()
    want = r.values.reshape(4, BLOCK).copy()
    _fake_tag(want[1:3], np.zeros(2, np.int64), np.array([1, 2], np.int64))
    return want.reshape(-1)


def _orders() -> list[tuple[tuple[str, int], ...]]:
    """Every order of three batches' stage and write events, each batch staged before it writes (90)."""
    events = [(e, g) for e in "SW" for g in range(3)]
    return [o for o in itertools.permutations(events) if all(o.index(("S", g)) < o.index(("W", g)) for g in range(3))]


@needs_lib
@pytest.mark.parametrize("order", _orders(), ids=lambda o: "".join(f"{e}{g}" for e, g in o))
def test_cut_blocks_end_tagged_whatever_order_the_batches_stage_and_write(order: tuple[tuple[str, int], ...]) -> None:
    """Stage (add) and write (take, the batch's own words, after) in any order the two seal threads allow."""
    r = _Run()
    for e, g in order:
        r.stage(g) if e == "S" else r.write(g)
    want = _expected()
    for b in (1, 2):  # the cut blocks: each part where its batch wrote it, tagged from the whole block
        assert np.array_equal(r.out[BLOCK * b : BLOCK * b + BLOCK], want[BLOCK * b : BLOCK * b + BLOCK]), b
    assert r.cuts.tagged == 2
    assert r.cuts.incomplete()[0].size == 0
    assert r.cuts.open_spans().size == 0  # every part where it is written: no page held back


@needs_lib
def test_a_block_missing_a_part_is_left_untagged_for_the_tag_pass() -> None:
    r = _Run()
    r.stage(0)
    r.stage(1)  # batch 2 never stages: block 1 lacks 14 values, block 2 its 40
    r.write(0)
    r.write(1)
    assert r.cuts.tagged == 0
    tt, bb = r.cuts.incomplete()
    assert tt.tolist() == [0, 0] and bb.tolist() == [1, 2]
    assert np.array_equal(r.out[BLOCK : BLOCK + 50], r.values[BLOCK : BLOCK + 50])  # written as staged, untagged
    spans = r.cuts.open_spans()
    assert sorted((spans[:, 1] // 4).tolist()) == [20, 24, 30]  # their pages wait


def test_pages_and_minus_split_ranges_at_page_bounds() -> None:
    P = _seal_tags._PAGE
    spans = np.array([[P + 904, 10], [2 * P - 2, 4]], np.int64)  # the second crosses into the next page
    assert _seal_tags._pages(spans).tolist() == [[P, P], [P, 2 * P]]
    ranges = np.array([[0, 5 * P], [8 * P, 100]], np.int64)
    out, held = _seal_tags._minus(ranges, _seal_tags._pages(spans))
    assert out.tolist() == [[0, P], [3 * P, 2 * P], [8 * P, 100]]
    assert held.tolist() == [[P, 2 * P]]
    out, held = _seal_tags._minus(ranges, np.zeros((0, 2), np.int64))
    assert out.tolist() == [[0, 5 * P], [8 * P, 100]] and held.size == 0
    out, held = _seal_tags._minus(np.zeros((0, 2), np.int64), spans)
    assert out.size == 0 and held.size == 0

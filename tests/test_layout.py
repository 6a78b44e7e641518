"""The lane layout: its key-derived permutations are exactly the ones every sealed file was made with."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from paramseal._layout import stable_argsort_rows


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_the_fast_row_sort_is_the_stable_argsort_even_with_ties(data: st.DataObject) -> None:
    rows, cols = data.draw(st.integers(1, 6)), data.draw(st.integers(1, 40))
    small = data.draw(st.booleans())  # few distinct keys: ties in most rows
    hi = 4 if small else 2**64 - 1
    keys = data.draw(
        st.lists(st.integers(0, hi), min_size=rows * cols, max_size=rows * cols).map(
            lambda v: np.array(v, dtype=np.uint64).reshape(rows, cols)
        )
    )
    np.testing.assert_array_equal(stable_argsort_rows(keys), np.argsort(keys, axis=1, kind="stable"))


def test_random_keys_as_the_layout_draws_them() -> None:
    keys = np.random.default_rng(0).integers(0, 2**64 - 1, (50, 6600), dtype=np.uint64)
    keys[7, 100] = keys[7, 5000]  # one forced tie
    np.testing.assert_array_equal(stable_argsort_rows(keys), np.argsort(keys, axis=1, kind="stable"))


def test_block_scatter_and_gather_match_fancy_indexing_in_both_store_orders() -> None:
    """The compiled per-block store access (partial stripes) against plain numpy indexing."""
    from paramseal import _kernels

    rng = np.random.default_rng(1)
    n, w, shards, lanes = 300, 15, 400, 37
    offs = rng.integers(0, shards - w, n).astype(np.int64)
    lane = rng.integers(0, lanes, n).astype(np.int64)
    counts = rng.integers(0, w + 1, n).astype(np.int64)
    x = rng.integers(0, 2**32, (n, w), dtype=np.uint32)
    keep = np.unique(np.stack([offs // w, lane], axis=1), axis=0, return_index=True)[1]  # no overlapping blocks
    offs, lane, counts, x = (offs // w) * w, lane, counts, x
    offs, lane, counts, x = offs[keep], lane[keep], counts[keep], x[keep]
    ref = np.zeros((shards, lanes), np.uint32)
    for b in range(offs.size):  # the reference, element by element
        ref[offs[b] : offs[b] + counts[b], lane[b]] = x[b, : counts[b]]
    for store in (np.zeros((shards, lanes), np.uint32), np.zeros((lanes, shards), np.uint32).T):
        _kernels.scatter_blocks(store, offs, lane, counts, x)
        np.testing.assert_array_equal(store, ref)
        back = _kernels.gather_blocks(store, offs, lane, counts, w)
        np.testing.assert_array_equal(back, np.where(np.arange(w)[None, :] < counts[:, None], x, 0))


def test_a_stripe_window_fed_unaligned_chunks_fills_the_store_like_a_direct_gather() -> None:
    """Chunks that start mid-stripe make the window keep a started stripe when it slides."""
    from paramseal import Key, SealConfig, _bits, _model, _pages
    from paramseal._layout import build_layout

    rng = np.random.default_rng(4)
    tensors = {
        "a": rng.standard_normal(64 * 41 + 9).astype(np.float32),
        "ids": np.arange(64 * 9, dtype=np.int64),
        "h": rng.standard_normal(64 * 23).astype(np.float16),
    }
    specs = SealConfig().specs(tensors)
    layout = build_layout(specs, Key.generate(), bytes(16), lanes=7)
    blocks = [_bits.to_blocks(_bits.uint_view(tensors[s.name])) for s in specs]
    direct = np.zeros((layout.K, layout.lanes), np.uint32)
    for t, (spec, ub) in enumerate(zip(specs, blocks, strict=True)):
        _model.gather_chunk(direct, layout, t, spec, ub)
    store = np.zeros((layout.lanes, layout.K), np.uint32).T  # lane-major, as on disk
    window = _model.StripeWindow(store, layout, max_chunk_blocks=5, budget=0)
    assert window.T < layout.nstripes  # it must slide
    for t, (spec, ub) in enumerate(zip(specs, blocks, strict=True)):
        first = int(layout.block_start[t])
        for r0, r1 in _pages.chunks(spec.nblocks, ub.dtype.itemsize, first, layout.lanes, scattered=5):
            window.gather(t, spec, ub[r0:r1], r0)
    window.finish()
    np.testing.assert_array_equal(store, direct)


def test_stripe_and_block_kernels_take_read_only_sources() -> None:
    """A memory-mapped model's blocks (or store) are read-only: the kernels that read them must compile for that."""
    from paramseal import _kernels

    rng = np.random.default_rng(3)
    ns, g, d = 3, 8, 5
    perm = np.stack([rng.permutation(g) for _ in range(ns)]).astype(np.int64)
    x = rng.integers(0, 2**32, (ns, g, d), dtype=np.uint64).astype(np.uint32)
    x.flags.writeable = False
    store = np.zeros((2 + ns * d, g), np.uint32)
    _kernels.scatter_stripes(store, 2, perm, x)
    store.flags.writeable = False
    assert np.array_equal(_kernels.gather_stripes(store, 2, perm, d), x)
    offs, lanes, counts = np.array([0, 4], np.int64), np.array([1, 6], np.int64), np.array([3, 2], np.int64)
    blocks = rng.integers(0, 2**32, (2, 3), dtype=np.uint64).astype(np.uint32)
    blocks.flags.writeable = False
    into = np.zeros((8, g), np.uint32)
    _kernels.scatter_blocks(into, offs, lanes, counts, blocks)
    into.flags.writeable = False
    back = _kernels.gather_blocks(into, offs, lanes, counts, 3)
    assert np.array_equal(back[0], blocks[0]) and np.array_equal(back[1, :2], blocks[1, :2]) and back[1, 2] == 0


def _lanes_model() -> tuple[list, object]:
    from paramseal import Key, SealConfig
    from paramseal._layout import build_layout

    rng = np.random.default_rng(11)
    tensors = {
        "a": rng.standard_normal(64 * 300 + 9).astype(np.float32),
        "ids": np.arange(64 * 40, dtype=np.int64),
        "h": rng.standard_normal(64 * 230 + 1).astype(np.float16),
        "z": rng.standard_normal(5).astype(np.float16),
    }
    specs = SealConfig().specs(tensors)
    return specs, lambda: build_layout(specs, Key.from_text("11" * 32), bytes(range(16)), lanes=13)


def test_every_lane_lookup_path_gives_the_lanes_of_the_keyed_permutations(monkeypatch) -> None:
    """The whole-model cache, the sparse per-stripe memo (and its eviction) and range generation agree."""
    from paramseal import _layout

    _, make = _lanes_model()
    ref_layout = make()
    g = ref_layout.lanes
    every = np.arange(ref_layout.nblocks, dtype=np.int64)
    # the definition: block j of stripe s is in lane argsort(stripe s's AES-CTR keys)[j]
    keys = np.concatenate([ref_layout._keys(s, s + 1) for s in range(ref_layout.nstripes)])
    ref = np.argsort(keys, axis=1, kind="stable").reshape(-1)[every]
    rng = np.random.default_rng(5)
    picks = [
        every,
        rng.choice(every, 7, replace=False),
        np.array([5, 5, 5 + g, ref_layout.nblocks - 1]),
        every[g : 3 * g],
    ]
    for entries, stripe_entries in [(1 << 24, 1 << 22), (0, 1 << 22), (0, 2 * g)]:
        monkeypatch.setattr(_layout, "_CACHE_ENTRIES", entries)
        monkeypatch.setattr(_layout, "_STRIPE_ENTRIES", stripe_entries)
        lay = make()
        for b in picks + [rng.choice(every, 40).reshape(8, 5)]:
            got = lay.lane[b]
            assert got.dtype == np.int64 and got.shape == b.shape
            np.testing.assert_array_equal(got, ref[b])
        np.testing.assert_array_equal(lay.perm[0 : lay.nstripes].reshape(-1)[every], ref)
        assert ("perm" in lay._cache) == (entries > 0)


def test_the_irregular_stripes_are_found_by_the_batched_pass_as_stripe_by_stripe(monkeypatch) -> None:
    """Lanes that store less than their share (tensor edges, reserved blocks, the short last stripe)."""
    from paramseal import _layout

    _, make = _lanes_model()
    lay = make()
    g, nb = lay.lanes, lay.nblocks
    share = np.diff(np.append(lay.stripe_store, lay.M))
    want = []
    for s in range(lay.nstripes):  # every stripe, one at a time: the definition
        b = np.arange(s * g, min((s + 1) * g, nb), dtype=np.int64)
        have = np.zeros(g, dtype=np.int64)
        have[lay.lane[b]] = lay.n_store[b]
        short = np.flatnonzero(have < share[s])
        if short.size:
            want.append((s, short.tolist(), have[short].tolist()))
    assert want  # the model has tensor edges inside stripes
    monkeypatch.setattr(_layout, "_SCAN", 2 * g)  # a few stripes per batch
    got = [(s, short.tolist(), have.tolist()) for s, short, have in make()._irregular()]
    assert got == want


def test_the_blocks_of_chosen_lanes_are_found_with_and_without_the_whole_model_cache(monkeypatch) -> None:
    from paramseal import _layout

    _, make = _lanes_model()
    lay = make()
    chosen = np.zeros(lay.lanes, np.bool_)
    chosen[[0, 4, lay.lanes - 1]] = True
    every = np.arange(lay.nblocks, dtype=np.int64)
    want = every[chosen[lay.lane[every]]]
    assert 0 < want.size < lay.nblocks
    np.testing.assert_array_equal(lay.blocks_in(chosen), want)
    monkeypatch.setattr(_layout, "_CACHE_ENTRIES", 0)
    monkeypatch.setattr(_layout, "_SCAN", 3 * lay.lanes)  # a few stripes per step, the last one short
    np.testing.assert_array_equal(make().blocks_in(chosen), want)


def test_a_few_blocks_past_the_cache_never_generate_a_whole_span_of_lanes(monkeypatch) -> None:
    """A lookup in a model past the cache generates at most 4M lanes at once (int64 keys and lanes: 64 MiB).

    The whole-model cache keeps 16M lanes in 16 bits; a lookup makes 64-bit keys and lanes, so it must
    not take that bound: 300 blocks in 300 of 1,900 stripes of 8,192 lanes made 15.6M of them (240 MB).
    """
    from paramseal import _layout

    g, ns = 8192, 2100  # 17.2M blocks: past the whole-model cache
    z = np.zeros(ns, np.int64)
    lay = _layout.Layout(g, 1, 1, (), np.array([0]), z, z, ns * g, bytes(32), 7)
    rng = np.random.default_rng(2)
    stripes = np.sort(rng.choice(1900, 300, replace=False)).tolist()
    pos = rng.integers(0, g, len(stripes))
    b = np.array(stripes) * g + pos
    want = [np.argsort(lay._keys(s, s + 1)[0], kind="stable")[j] for s, j in zip(stripes, pos, strict=True)]
    made: list[int] = []
    keys = _layout.Layout._keys

    def counted(self: _layout.Layout, s0: int, s1: int) -> np.ndarray:
        made.append((s1 - s0) * self.lanes)
        return keys(self, s0, s1)

    monkeypatch.setattr(_layout.Layout, "_keys", counted)
    np.testing.assert_array_equal(lay.lane[b], want)
    assert made and max(made) <= 1 << 22


def test_the_lane_permutation_is_the_documented_keyed_construction() -> None:
    """Lane of the j-th block of stripe s: argsort (stable) of that stripe's 8-byte words of
    AES-256-CTR under the key's "interleave" subkey, counter starting at the salt's 16 bytes.

    Spelled out here from the construction, not from the code: a changed label or IV would
    still verify (tags do not depend on it) but no longer recover files sealed with several lanes.
    """
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    from paramseal import Key, SealConfig
    from paramseal._layout import build_layout

    rng = np.random.default_rng(5)
    tensors = {f"w{i}": rng.standard_normal(n).astype(np.float32) for i, n in enumerate([5000, 64 * 37, 900])}
    key, salt = Key(bytes(range(32))), bytes(range(100, 116))
    lay = build_layout(SealConfig().specs(tensors), key, salt, lanes=4)
    g, ns = lay.lanes, lay.nstripes
    enc = Cipher(algorithms.AES(key.derive("interleave")), modes.CTR(salt)).encryptor()
    want = np.argsort(np.frombuffer(enc.update(bytes(8 * g * ns)), "<u8").reshape(ns, g), axis=1, kind="stable")
    assert g == 4 and ns > 10
    np.testing.assert_array_equal(lay.perm_rows(0, ns), want)
    b = np.arange(lay.nblocks, dtype=np.int64)
    np.testing.assert_array_equal(lay._sparse(b), want.reshape(-1)[: lay.nblocks])  # the per-stripe path too


def test_stripe_maxima_from_runs_equal_the_block_by_block_definition() -> None:
    """The stripes' shard counts fix every lane's K and M: the run-wise form must equal the per-block one."""
    from paramseal import _layout

    rng = np.random.default_rng(5)
    for _ in range(500):
        n = int(rng.integers(1, 8))
        nbt = rng.integers(1, 12, n).astype(np.int64)
        tab = {
            "nblocks": nbt,
            "reserved": rng.integers(0, 14, n).astype(np.int64) * (rng.random(n) < 0.5),  # some past nblocks
            "full": rng.integers(0, 9, n).astype(np.int64),
            "last": rng.integers(0, 9, n).astype(np.int64),
            "data": rng.integers(1, 40, n).astype(np.int64),
        }
        start = np.concatenate([[0], np.cumsum(nbt)[:-1]]).astype(np.int64)
        nb = int(nbt.sum())
        g = int(rng.integers(1, nb + 3))
        b = np.arange(nb, dtype=np.int64)
        t = np.searchsorted(start, b, side="right") - 1
        data, store = tab["data"][t], _layout._store_of(tab, t, b - start[t])
        want_d = [int(data[s : s + g].max()) for s in range(0, nb, g)]
        want_s = [int(store[s : s + g].max()) for s in range(0, nb, g)]
        ds, ss = _layout._stripe_maxima(tab, start, nb, g)
        assert ds.tolist() == want_d and ss.tolist() == want_s

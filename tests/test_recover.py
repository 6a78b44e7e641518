"""Recovery through the Python API: bit-exact within capacity, honest beyond it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import helpers
import numpy as np
import pytest

import paramseal


def test_recover_intact_model_returns_it_unchanged(sealed: paramseal.SealedModel, key: paramseal.Key) -> None:
    res = paramseal.recover(sealed.tensors, key, sealed.header_json)
    assert res.report.status == "intact" and res.report.exit_code == 0
    assert res.report.restored_count == 0
    helpers.assert_model_equal(res.tensors, sealed.tensors)
    assert res.metadata == {"author": "tests", "license": "apache-2.0"}


@pytest.mark.parametrize("name", list(helpers.small_model(0)))
def test_single_bit_flip_in_each_tensor_is_restored_and_reported(
    sealed: paramseal.SealedModel, key: paramseal.Key, name: str
) -> None:
    a = sealed.tensors[name]
    w = helpers.width(a.dtype)
    idx, bit = a.size - 1, (w - 2 if a.dtype != np.bool_ else 0)
    t = helpers.flip_bit(sealed.tensors, name, idx, bit)
    v = paramseal.verify(t, key, sealed.header_json)
    assert v.status == "tampered" and v.recoverable and v.exit_code == 1
    assert v.tampered_tensors == [name] and v.tensors[name].tampered_blocks == (idx // 64,)
    res = paramseal.recover(t, key, sealed.header_json)
    assert res.report.status == "recovered" and res.report.kind == "recover"
    f = res.report.tensors[name]
    assert f.restored_indices == (idx,) and f.restored_xor == (1 << bit,)
    helpers.assert_model_equal(res.tensors, sealed.tensors)
    assert paramseal.verify(res.tensors, key, sealed.header_json).status == "intact"


@pytest.mark.parametrize(
    "level, frac",
    [("light", 0.05), ("standard", 0.10), ("strong", 0.20)],
)
@pytest.mark.parametrize("where", ["start", "middle", "end"])
def test_contiguous_destruction_within_capacity_is_recovered_bit_exactly(
    key: paramseal.Key, level: str, frac: float, where: str
) -> None:
    # About 100k parameters over several tensors: enough for several lanes.
    m = helpers.fp32_model(100_000, seed=1, tensors=4)
    s = paramseal.seal(m, key, level=level)
    blocks = helpers.block_list(s.tensors)
    nb = len(blocks)
    run = int(nb * frac)
    b0 = {"start": 0, "middle": (nb - run) // 2, "end": nb - run}[where]
    t = helpers.randomize_blocks(s.tensors, blocks[b0 : b0 + run], seed=2)
    v = paramseal.verify(t, key, s.header_json)
    assert v.status == "tampered" and v.recoverable
    assert v.tampered_block_count == run
    res = paramseal.recover(t, key, s.header_json)
    assert res.report.status == "recovered", (level, frac, where, res.report.lanes_failed)
    helpers.assert_model_equal(res.tensors, s.tensors)
    helpers.assert_honest_recovery(res, t, s.tensors)


def test_model_uses_several_lanes_and_a_layer_wipe_is_spread_over_them(key: paramseal.Key) -> None:
    m = helpers.fp32_model(100_000, seed=3, tensors=8)
    s = paramseal.SealConfig(code="lanes").seal(m, key)
    assert s.header.lanes >= 2, "a 100k-parameter model should be coded as several codewords"
    # Zero one whole tensor (12.5% of the model): recoverable only if spread over every lane.
    t = helpers.copy_model(s.tensors)
    t["layer3.weight"] = np.zeros_like(t["layer3.weight"])
    res = paramseal.recover(t, key, s.header_json)
    assert res.report.status == "recovered"
    helpers.assert_model_equal(res.tensors, s.tensors)


@pytest.mark.parametrize("frac", [0.3, 0.6, 1.0])
def test_beyond_capacity_contiguous_never_claims_success(key: paramseal.Key, frac: float) -> None:
    m = helpers.fp32_model(20_000, seed=4)
    s = paramseal.seal(m, key)
    t = helpers.copy_model(s.tensors)
    a = t["layer0.weight"]
    n = int(a.size * frac)
    a[:n] = np.random.default_rng(5).standard_normal(n).astype(np.float32)
    v = paramseal.verify(t, key, s.header_json)
    assert v.status == "tampered" and not v.recoverable and v.exit_code == 2
    res = paramseal.recover(t, key, s.header_json)
    helpers.assert_honest_recovery(res, t, s.tensors)
    assert res.report.status == "unrecoverable"


@pytest.mark.parametrize(("code", "p"), [("lanes", 0.01), ("lanes", 0.05), ("lanes", 0.3), ("irs", 0.3), ("irs", 0.5)])
def test_scattered_tampering_beyond_capacity_never_claims_success(key: paramseal.Key, code: str, p: float) -> None:
    m = helpers.fp32_model(30_000, seed=6, tensors=2)
    s = paramseal.SealConfig(code=code).seal(m, key)
    rng = np.random.default_rng(7)
    t = helpers.copy_model(s.tensors)
    for a in t.values():
        u = a.reshape(-1).view(np.uint32)
        idx = rng.choice(u.size, size=int(u.size * p), replace=False)
        u[idx] ^= np.uint32(1) << rng.integers(0, 32, size=idx.size).astype(np.uint32)
    res = paramseal.recover(t, key, s.header_json)
    helpers.assert_honest_recovery(res, t, s.tensors)
    assert res.report.status == "unrecoverable"
    assert paramseal.verify(t, key, s.header_json).recoverable is False


def test_partial_recovery_restores_what_it_can_and_names_the_rest(key: paramseal.Key) -> None:
    m = helpers.fp32_model(100_000, seed=8, tensors=4)
    s = paramseal.SealConfig(code="lanes").seal(m, key)
    assert s.header.lanes >= 2
    rng = np.random.default_rng(9)
    t = helpers.copy_model(s.tensors)
    # Damage random blocks around the bound: some lanes decode, some do not.
    nb_all = [(n, b) for n, a in t.items() for b in range(-(-a.size // 64))]
    pick = rng.choice(len(nb_all), size=int(0.24 * len(nb_all)), replace=False)
    for i in pick:
        n, b = nb_all[i]
        t[n].reshape(-1)[b * 64 + 3] += np.float32(1.0)
    res = paramseal.recover(t, key, s.header_json)
    helpers.assert_honest_recovery(res, t, s.tensors)
    rep = res.report
    if rep.status == "unrecoverable":
        assert rep.lanes_failed >= 1
        assert rep.lanes_failed < s.header.lanes or rep.restored_count == 0
        assert paramseal.verify(res.tensors, key, s.header_json).tampered_block_count > 0


def test_recover_restores_tags_and_parity_too(sealed: paramseal.SealedModel, key: paramseal.Key) -> None:
    # Overwrite only the low (watermark) bits of a block: the weights barely change, yet the
    # block is flagged and recovery puts back the exact sealed low bits.
    t = helpers.copy_model(sealed.tensors)
    u = t["fc.weight"].reshape(-1).view(np.uint32)
    u[64:128] ^= np.uint32(0xFF)
    v = paramseal.verify(t, key, sealed.header_json)
    assert v.tensors["fc.weight"].tampered_blocks == (1,)
    res = paramseal.recover(t, key, sealed.header_json)
    assert res.report.status == "recovered"
    assert res.report.tensors["fc.weight"].restored_indices == tuple(range(64, 128))
    assert set(res.report.tensors["fc.weight"].restored_xor) == {0xFF}
    helpers.assert_model_equal(res.tensors, sealed.tensors)


def test_recover_never_modifies_its_input_and_is_repeatable(sealed: paramseal.SealedModel, key: paramseal.Key) -> None:
    t = helpers.copy_model(sealed.tensors)
    t["embed.weight"][3] = 0.0
    snap = helpers.copy_model(t)
    r1 = paramseal.recover(t, key, sealed.header_json)
    r2 = paramseal.recover(t, key, sealed.header_json)
    helpers.assert_model_equal(t, snap)
    helpers.assert_model_equal(r1.tensors, r2.tensors)
    assert r1.report.to_dict() == r2.report.to_dict()


def test_recovered_report_summary_names_indices_and_bits(sealed: paramseal.SealedModel, key: paramseal.Key) -> None:
    t = helpers.flip_bit(sealed.tensors, "head.weight", 7, 62)
    res = paramseal.recover(t, key, sealed.header_json)
    text = res.report.summary()
    assert "head.weight" in text and "[7] bits 62" in text
    d = res.report.to_dict()
    r = d["tensors"]["head.weight"]["restored"]
    assert r["indices"] == [7] and r["bits_changed"] == [[62]] and r["xor_bits"] == [hex(1 << 62)]
    assert d["restored_parameters"] == 1 and d["unrecoverable_parameters"] == 0


@pytest.mark.parametrize("where", [0.0, 0.3, 0.62, 0.95])
def test_contiguous_run_in_a_mixed_dtype_multi_lane_model_is_recovered(key: paramseal.Key, where: float) -> None:
    """Lanes mix blocks of different sizes (fp32, bf16, fp16, int64): a 5% run anywhere is well within capacity."""
    rng = np.random.default_rng(11)
    m = {
        "a.weight": helpers.random_tensor(rng, np.float32, (300, 200)),
        "b.weight": helpers.random_tensor(rng, helpers.BF16, (100, 200)),
        "c.ids": helpers.random_tensor(rng, np.int64, (10_000,)),
        "d.weight": helpers.random_tensor(rng, np.float16, (10_000,)),
    }
    s = paramseal.seal(m, key)
    assert s.header.lanes >= 2
    blocks = helpers.block_list(s.tensors)
    run = len(blocks) // 20
    b0 = min(int(len(blocks) * where), len(blocks) - run)
    t = helpers.randomize_blocks(s.tensors, blocks[b0 : b0 + run], seed=12)
    v = paramseal.verify(t, key, s.header_json)
    assert v.tampered_block_count == run and v.recoverable
    res = paramseal.recover(t, key, s.header_json)
    assert res.report.status == "recovered"
    helpers.assert_model_equal(res.tensors, s.tensors)


def test_default_lane_count_keeps_one_lost_block_recoverable(key: paramseal.Key) -> None:
    """Splitting into lanes must not starve each lane below one block's worth of parity.

    2048 fp32 values at level light carry 224 parity shards in all; one int64 block needs 128.
    With one codeword a flipped bit in the int64 tensor is recovered; the default layout must
    not make it unrecoverable by halving the parity per lane.
    """
    rng = np.random.default_rng(0)
    m = {
        "carrier": rng.standard_normal(2048).astype(np.float32),
        "u": rng.integers(0, 2**63, (11, 12, 23), dtype=np.uint64),
        "scale": np.array(1.5),
        "v": rng.integers(0, 100, 1000, dtype=np.int64),
    }
    one = paramseal.SealConfig(level="light", lanes=1).seal(m, key)
    t = helpers.flip_bit(one.tensors, "v", 0, 0)
    assert paramseal.recover(t, key, one.header_json).report.status == "recovered"
    s = paramseal.seal(m, key, level="light")
    t = helpers.flip_bit(s.tensors, "v", 0, 0)
    assert paramseal.verify(t, key, s.header_json).recoverable, f"{s.header.lanes} lanes"
    assert paramseal.recover(t, key, s.header_json).report.status == "recovered"


def test_verify_predicts_recovery_across_a_lane_s_capacity_counting_unstored_parity(
    key: paramseal.Key, monkeypatch: pytest.MonkeyPatch
) -> None:
    """verify's "recoverable" is recover's outcome, block by block across one lane's capacity.

    The lane damaged has parity shards that no block stores (holes): they count as lost. Leaving
    them out, verify calls 28 blocks lost here recoverable, and recover fails. The salt is fixed
    so that the layout, and with it where the capacity falls, is the same every run.
    """
    import os

    from paramseal.verify import check

    real = os.urandom
    monkeypatch.setattr(os, "urandom", lambda n: bytes(range(16)) if n == 16 else real(n))
    s = paramseal.SealConfig(code="lanes", lanes=2).seal(helpers.fp32_model(15_000, seed=4), key)
    lay = check(s.tensors, key, s.header_json).layout
    lane = int(np.argmax(lay.holes))
    assert (~lay.stored(np.array([lane]))).sum() == lay.holes[lane] > 0
    blocks = np.flatnonzero(lay.lane[np.arange(-(-15_000 // 64))] == lane)
    outcomes = []
    for n in range(24, 32):
        t = helpers.copy_model(s.tensors)
        for b in blocks[:n]:
            t["layer0.weight"][b * 64 : b * 64 + 64] = 1.0
        predicted = paramseal.verify(t, key, s.header_json).recoverable
        res = paramseal.recover(t, key, s.header_json)
        helpers.assert_honest_recovery(res, t, s.tensors)
        outcomes.append((n, predicted, res.report.status == "recovered"))
    assert all(p == r for _, p, r in outcomes), outcomes
    assert outcomes[0][2] and not outcomes[-1][2], outcomes  # the capacity lies in the range


def test_recovery_from_a_partial_check_is_refused_clearly(key: paramseal.Key) -> None:
    """A check of some tensors only (verify's selection) cannot drive a recovery: a usage error, not a crash."""
    import importlib

    from paramseal.verify import check

    rng = np.random.default_rng(1)
    m = {"a": rng.standard_normal(4096).astype(np.float32), "b": rng.standard_normal(4096).astype(np.float32)}
    s = paramseal.seal(m, key)
    bad = {n: a.copy() for n, a in s.tensors.items()}
    bad["a"][5] = 0.0
    chk = check(bad, key, s.header_json, select="a")
    recover_mod = importlib.import_module("paramseal.recover")
    with pytest.raises(paramseal.UsageError, match="every tensor"):
        recover_mod.recover_from(chk)


def test_a_report_keeps_its_index_lists_in_arrays(key: paramseal.Key) -> None:
    """A replaced layer of an LLM restores millions of values: the report holds them as arrays, not tuples of ints."""
    import json

    from paramseal.report import Ints

    rng = np.random.default_rng(4)
    sealed = paramseal.seal({"w": (0.02 * rng.standard_normal((1000, 1000))).astype(np.float32)}, key)
    bad = {"w": sealed.tensors["w"].copy()}
    bad["w"][:200] = (0.02 * rng.standard_normal((200, 1000))).astype(np.float32)  # 20%: within standard's bound
    res = paramseal.recover(bad, key, sealed.header_json)
    f = res.report.tensors["w"]
    n = len(f.restored_indices)
    assert res.report.status == "recovered" and n > 190_000
    for v in (f.tampered_blocks, f.restored_indices, f.restored_xor, f.unrecoverable_blocks):
        assert isinstance(v, Ints) and v.array.itemsize == 8 and not v.array.flags.writeable
    want = np.flatnonzero(bad["w"].view(np.uint32).reshape(-1) != sealed.tensors["w"].view(np.uint32).reshape(-1))
    assert f.restored_indices == tuple(want.tolist()) and np.array_equal(f.restored_indices.array, want)
    assert json.loads(json.dumps(f.to_dict()))["restored"]["indices"] == want.tolist()
    assert hash(f) == hash(dataclasses.replace(f, restored_indices=tuple(f.restored_indices)))


def test_ints_behaves_as_a_tuple_of_ints() -> None:
    from paramseal.report import Ints

    a = Ints([3, 1, 2**64 - 1])
    assert a == (3, 1, 2**64 - 1) and a == [3, 1, 2**64 - 1] and a != (3, 1) and tuple(a) == (3, 1, 2**64 - 1)
    assert a[0] == 3 and a[-1] == 2**64 - 1 and a[1:] == (1, 2**64 - 1) and len(a) == 3 and 1 in a
    assert (
        Ints() == ()
        and not Ints()
        and Ints(np.arange(5)) == Ints(range(5))
        and hash(Ints((1, 2))) == hash(Ints([1, 2]))
    )
    with pytest.raises(ValueError):
        a.array[0] = 7  # read-only
    with pytest.raises(TypeError):
        Ints([0.5])
    src = np.arange(4)
    b = Ints(src)
    src[0] = 9  # the caller's array may change; the report does not
    assert b == (0, 1, 2, 3)


def _big_report() -> paramseal.Report:
    from paramseal.report import Report, TensorFinding

    rng = np.random.default_rng(8)
    n = 5000
    idx = np.sort(rng.choice(10 * n, n, replace=False))
    xor = rng.integers(1, 2**63, n, dtype=np.uint64) | np.uint64(1 << 63)
    xor[:3] = [1, 2**64 - 1, 0x80]
    numel = 64 * 300 + 5
    lost = np.array([0, 1, 2, 7, 9, 10, 299, 300])  # runs, a gap, and the short last block
    odd = 'a "quoted" name\\ with ünïcode'
    return Report(
        "recover",
        "unrecoverable",
        False,
        {
            odd: TensorFinding(odd, tuple(np.unique(idx // 64)), ("an issue",), idx, xor, lost, numel),
            "clean": TensorFinding("clean", (), (), (), (), (), 64),
            "blocks only": TensorFinding("blocks only", (3, 4), (), (), (), (), 640),
        },
        metadata_issues=("m",),
        total_blocks=1000,
    )


def test_the_streamed_json_is_the_report_s_document(monkeypatch: pytest.MonkeyPatch) -> None:
    """write_json (what --json prints) parses to to_dict, with lists cut into many slices."""
    import io
    import json

    from paramseal import report as report_mod

    monkeypatch.setattr(report_mod, "_CHUNK", 7)  # many slices per list, the last one short
    rep = _big_report()
    want = rep.to_dict()
    f = want["tensors"]['a "quoted" name\\ with ünïcode']
    xor = [int(x, 16) for x in f["restored"]["xor_bits"]]
    assert f["restored"]["bits_changed"] == [[b for b in range(64) if x >> b & 1] for x in xor]  # the definition
    assert f["restored"]["bits_changed"][:3] == [[0], list(range(64)), [7]]
    out = io.StringIO()
    rep.write_json(out)
    assert json.loads(out.getvalue()) == want == json.loads(rep.to_json())
    assert "clean" not in want["tensors"]
    assert want["tensors"]["blocks only"] == {  # a recover report's every entry has them, empty or not
        "tampered_blocks": [3, 4],
        "issues": [],
        "moved_how": None,
        "restored": {"indices": [], "xor_bits": [], "bits_changed": []},
        "unrecoverable_ranges": [],
        "unrecoverable_count": 0,
    }


def test_unrecoverable_ranges_merge_consecutive_blocks_and_stop_at_the_last_value() -> None:
    f = _big_report().tensors['a "quoted" name\\ with ünïcode']
    assert f.unrecoverable_ranges == [(0, 192), (448, 512), (576, 704), (19136, 19205)]
    assert f.unrecoverable_count == 192 + 64 + 128 + 69  # block 300 lies past the last value: nothing
    assert f.unrecoverable_indices[:2] == (0, 1) and len(f.unrecoverable_indices) == f.unrecoverable_count


def test_unrecoverable_masks_name_single_values_of_their_blocks_and_whole_blocks_elsewhere() -> None:
    """irs4's partly decoded blocks: bit j of a block's mask names its value j; an all-ones mask is the block."""
    from paramseal.report import TensorFinding

    ones = (1 << 64) - 1
    f = TensorFinding(
        "w", unrecoverable_blocks=(3, 1, 2), unrecoverable_masks=(1 << 63 | 1, ones, 0b1011), numel=64 * 3 + 2
    )
    assert f.unrecoverable_ranges == [(64, 130), (131, 132), (192, 193)]  # block 3's value 63 lies past the end
    assert f.unrecoverable_count == 66 + 1 + 1 and f.to_dict(True)["unrecoverable_count"] == 68


@pytest.mark.parametrize("seed", range(20))
def test_the_mask_of_the_named_ranges_is_the_values_in_them(seed: int) -> None:
    """`ranges_mask` (the eval's localisation reads millions of ranges with it) marks exactly the ranges' values."""
    from paramseal._lost_ranges import lost_ranges, ranges_mask

    rng = np.random.default_rng(seed)
    numel = int(rng.integers(1, 64 * 40))
    nb = -(-numel // 64)
    blocks = rng.choice(nb, size=int(rng.integers(0, nb + 1)), replace=False)
    masks = rng.integers(0, 1 << 63, size=blocks.size, dtype=np.uint64) * np.uint64(2) | rng.integers(
        0, 2, blocks.size, dtype=np.uint64
    )
    masks[rng.random(blocks.size) < 0.3] = np.uint64((1 << 64) - 1)  # whole blocks among them
    lo, hi = lost_ranges(blocks, masks, numel)
    want = np.zeros(numel, np.bool_)
    for a, b in zip(lo.tolist(), hi.tolist(), strict=True):
        want[a:b] = True
    assert np.array_equal(ranges_mask(lo, hi, numel), want)


def test_the_json_writer_never_holds_a_whole_long_list(monkeypatch: pytest.MonkeyPatch) -> None:
    """A replaced layer of an LLM names tens of millions of values: --json writes them a slice at a time."""
    from paramseal import report as report_mod

    monkeypatch.setattr(report_mod, "_CHUNK", 100)
    sizes: list[int] = []

    class Sink:
        def write(self, s: str) -> int:
            sizes.append(len(s))
            return len(s)

    _big_report().write_json(Sink())  # type: ignore[arg-type]
    assert sum(sizes) > 500_000 and max(sizes) < 20_000  # 5,000 values and their bits: many short writes


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_rebuilt_blocks_live_in_the_workspace_past_its_budget(tmp_path: Path, key: paramseal.Key, dtype: str) -> None:
    """Both codes keep the blocks they rebuild under the scratch budget (README: past it, in scratch files).

    The lane code copied a tensor's damaged blocks into one array in memory, outside the budget.
    """
    import ml_dtypes

    from paramseal import _pages
    from paramseal.recover import plan_recovery, recover_from_plan
    from paramseal.verify import check

    dt = ml_dtypes.bfloat16 if dtype == "bfloat16" else np.float32
    rng = np.random.default_rng(3)
    m = {f"l{i}": (rng.standard_normal(1 << 17) * 0.02).astype(dt) for i in range(4)}
    s = paramseal.seal(m, key, level="strong")
    t = {n: a.copy() for n, a in s.tensors.items()}
    t["l1"][:4096] = 0  # a run of blocks, rebuilt by either code
    ws = _pages.Workspace(tmp_path, budget=0)
    try:
        chk = check(t, key, s.header_json)
        rec = plan_recovery(chk, ws)
        assert rec.report.status == "recovered" and set(rec.patches) == {1}
        assert _pages.is_mapped(rec.patches[1].new)  # in a scratch file beside the output, not in memory
        got = recover_from_plan(chk, rec).tensors
        assert all(helpers.same_bytes(got[n], s.tensors[n]) for n in s.tensors)
    finally:
        ws.close()


def _subset_summing_to(sizes: np.ndarray, target: int) -> list[int]:
    """Indices of ``sizes`` whose sum is ``target`` (a subset sum, by dynamic programming)."""
    reach: dict[int, list[int]] = {0: []}
    for i, x in enumerate(sizes.tolist()):
        for total, pick in list(reach.items()):
            if total + x <= target and total + x not in reach:
                reach[total + x] = [*pick, i]
        if target in reach:
            return reach[target]
    raise AssertionError(f"no blocks of the lane add up to {target} shards")


def test_lane_damage_of_exactly_its_parity_is_recoverable_and_one_shard_more_is_not(key: paramseal.Key) -> None:
    """The lane code rebuilds a lane that lost as many shards (data, parity, never stored) as it has parity.

    Verify's ``recoverable`` must agree with what recover does on both sides of that edge.
    """
    from paramseal.verify import check

    rng = np.random.default_rng(1)
    model = {
        "a": rng.standard_normal((256, 256)).astype(np.float16),
        "b": rng.standard_normal((128, 128)).astype(helpers.BF16),
        "c": rng.standard_normal((64, 64)),
        "d": rng.standard_normal((64, 64)).astype(np.float32),
    }
    s = paramseal.seal(model, key)
    assert not s.header.irs  # the lane code
    lay = check(s.tensors, key, s.header_json).layout
    lane0 = np.flatnonzero(lay.lane[np.arange(lay.nblocks)] == 0)
    sizes = lay.n_data[lane0] + lay.n_store[lane0]
    for more, ok in ((0, True), (1, False)):
        t = helpers.copy_model(s.tensors)
        for g in lane0[_subset_summing_to(sizes, lay.M - int(lay.holes[0]) + more)]:
            ti = int(np.searchsorted(lay.block_start, g, side="right")) - 1
            t = helpers.flip_bit(t, lay.specs[ti].name, (int(g) - int(lay.block_start[ti])) * 64, 12)
        v = paramseal.verify(t, key, s.header_json)
        res = paramseal.recover(t, key, s.header_json)
        assert v.status == "tampered" and v.recoverable is ok, more
        assert (res.report.status == "recovered") is ok, more
        if ok:
            helpers.assert_model_equal(res.tensors, s.tensors)


def _forge_block(t: dict[str, np.ndarray], key: paramseal.Key, header_json: str, name: str, row: int) -> None:
    """Change a value of block ``row`` and give the block its valid tag: a forgery only a key holder makes."""
    from paramseal import _model
    from paramseal._bits import write_tags
    from paramseal.verify import check

    t[name].reshape(-1)[row * 64 + 5] += np.float32(0.5)
    chk = check(t, key, header_json)
    ti = [s.name for s in chk.specs].index(name)
    spec = chk.specs[ti]
    internal = spec.block_storage()[1]
    at = np.array([row])
    sub = chk.blocks[ti][at].copy()
    write_tags(sub, _model.compute_tags(chk.mac, chk.header.salt, ti, spec, sub, internal, at=at), spec.k)
    t[name].reshape(-1).view(np.uint32)[row * 64 : row * 64 + 64] = sub.reshape(-1)


def test_lanes_recovery_refuses_decoded_data_that_the_surviving_parity_contradicts(key: paramseal.Key) -> None:
    """The last guard of the lane code: a block that verifies but was forged (a key holder's, or a tag
    collision) feeds the decoder wrong data; the surviving parity disagrees, so its lane is not restored."""
    from paramseal.verify import check

    s = paramseal.SealConfig(code="lanes", lanes=2).seal(helpers.fp32_model(15_000, seed=4), key)
    lay = check(s.tensors, key, s.header_json).layout
    blocks = np.flatnonzero(lay.lane[np.arange(-(-15_000 // 64))] == 0)
    t = helpers.copy_model(s.tensors)
    _forge_block(t, key, s.header_json, "layer0.weight", int(blocks[0]))
    assert paramseal.verify(t, key, s.header_json).status == "intact"  # the forgery verifies
    t["layer0.weight"][blocks[1] * 64 + 7] += np.float32(1.0)  # and a block of the same lane is tampered
    res = paramseal.recover(t, key, s.header_json)
    assert res.report.status == "unrecoverable" and res.report.lanes_failed == 1
    assert res.report.tensors["layer0.weight"].unrecoverable_blocks == (blocks[1],)
    assert helpers.same_bytes(res.tensors["layer0.weight"], t["layer0.weight"])  # nothing rebuilt from it


def test_lanes_recovery_counts_the_lanes_that_failed(key: paramseal.Key) -> None:
    from paramseal.verify import check

    s = paramseal.SealConfig(code="lanes", lanes=3).seal(helpers.fp32_model(15_000, seed=4), key)
    lay = check(s.tensors, key, s.header_json).layout
    lanes = lay.lane[np.arange(-(-15_000 // 64))]
    t = helpers.copy_model(s.tensors)
    t["layer0.weight"][int(np.flatnonzero(lanes == 1)[0]) * 64] += np.float32(1.0)
    res = paramseal.recover(t, key, s.header_json)
    assert res.report.status == "recovered" and res.report.lanes_failed == 0
    for b in np.flatnonzero(lanes == 2):  # every block of one lane of three: beyond its parity
        t["layer0.weight"][b * 64 : b * 64 + 64] = 1.0
    res = paramseal.recover(t, key, s.header_json)
    assert res.report.status == "unrecoverable" and res.report.lanes_failed == 1
    helpers.assert_honest_recovery(res, t, s.tensors)


def test_tags_of_chosen_blocks_derive_only_the_pads_of_their_span(
    key: paramseal.Key, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`compute_tags(at=rows)` (each rebuilt batch's tags) asks the MAC for the pads of rows' span, not the
    whole tensor's (heavy damage rebuilds a tensor a batch at a time: every batch paid for all of it); same tags."""
    from paramseal import _mac, _model
    from paramseal._bits import tag_mask
    from paramseal.verify import check

    s = paramseal.seal(helpers.fp32_model(64 * 5000, seed=3), key)
    chk = check(s.tensors, key, s.header_json)
    spec, ub = chk.specs[0], chk.blocks[0]
    internal = spec.block_storage()[1]
    whole = chk.mac.pads(chk.header.salt, 0, spec.nblocks)
    asked: list[tuple[int, int]] = []
    real = _mac.BlockMac.pads

    def spy(self: _mac.BlockMac, salt: bytes, t: int, n: int, start: int = 0, **kw: object) -> np.ndarray:
        asked.append((start, n))
        return real(self, salt, t, n, start, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(_mac.BlockMac, "pads", spy)
    at = np.array([4100, 4096, 4107], np.int64)  # any order
    got = _model.compute_tags(chk.mac, chk.header.salt, 0, spec, ub[at], internal, at=at)
    assert asked == [(4096, 12)]
    mask = tag_mask(spec.k, 32)
    assert np.array_equal(got, chk.mac.tags(np.ascontiguousarray(ub[at]), whole[at], mask, internal[at]))
    assert np.array_equal(got, _model.stored_tags(spec, ub[at], internal[at], None))  # the tags the seal wrote


def test_tags_of_no_chosen_blocks_is_empty(key: paramseal.Key) -> None:
    """`compute_tags` of zero blocks (``at`` or ``rows`` empty) is an empty array, not a ValueError from ``min()``."""
    from paramseal import _model
    from paramseal.verify import check

    s = paramseal.seal(helpers.fp32_model(64 * 10, seed=3), key)
    chk = check(s.tensors, key, s.header_json)
    spec, ub = chk.specs[0], chk.blocks[0]
    internal = spec.block_storage()[1]
    none = np.zeros(0, np.int64)
    for got in (
        _model.compute_tags(chk.mac, chk.header.salt, 0, spec, ub[none], internal, at=none),
        _model.compute_tags(chk.mac, chk.header.salt, 0, spec, ub, internal, rows=none),
        _model.compute_tags(chk.mac, chk.header.salt, 0, spec, ub[:0], internal, r0=3),
    ):
        assert got.dtype == np.uint64 and got.shape == (0,)


@pytest.mark.parametrize(
    ("dtype", "shape", "k"),
    [("F32", (1000,), 8), ("F32", (1001,), 1), ("BF16", (70,), 1), ("F16", (64,), 0), ("F32", (3,), 12)]
    + [("I64", (5,), 0), ("F32", (1000, 7), 1), ("F16", (200,), 0), ("I32", (300,), 0)],
)
def test_which_rebuilt_blocks_keep_their_tag_inside_is_block_storages_answer(dtype: str, shape: tuple, k: int) -> None:
    """`_conclude` asks it of a few blocks, the seal's probe counts them all: as the array says, last block too."""
    from paramseal._layout import TensorSpec

    spec = TensorSpec("w", dtype, shape, k)
    rows = np.arange(spec.nblocks, dtype=np.int64)[::-1]
    np.testing.assert_array_equal(spec.tag_inside(rows), spec.block_storage()[1][rows])
    assert spec.external_count() == int((~spec.block_storage()[1]).sum())  # the seal's header probe counts so

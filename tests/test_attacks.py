"""Every attack kind does exactly what it claims, deterministically, and never touches its input."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import helpers
import numpy as np
import pytest

import paramseal
from paramseal.attacks import KINDS, AttackSpec, attack, attack_file
from paramseal.errors import UsageError
from paramseal.files import read_model, write_model
from paramseal.formats import Loaded
from paramseal.header import METADATA_KEY
from paramseal.levels import FLOATS, dtype_name

uview = helpers.uview


@pytest.fixture(scope="module")
def sealed_model(key: paramseal.Key) -> Loaded:
    """A sealed model with fp32, fp16, bf16, fp64 and integer tensors (two fc tensors share a shape)."""
    t = helpers.small_model(3)
    t["fc2.weight"] = np.random.default_rng(9).standard_normal((40, 33)).astype(np.float32)
    s = paramseal.seal(t, key)
    return Loaded(dict(s.tensors), {METADATA_KEY: s.header_json, "note": "hello"})


def _floats(t: dict[str, np.ndarray]) -> list[str]:
    return [n for n, a in t.items() if dtype_name(a.dtype) in FLOATS]


def _bits_changed(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> dict[str, list[tuple[int, int]]]:
    """Independent oracle: (index, bit) of every differing bit, per tensor."""
    out = {}
    for n in a:
        ua, ub = uview(a[n]), uview(b[n])
        idx = np.flatnonzero(ua != ub)
        out[n] = [
            (int(i), bit) for i in idx for bit in range(ua.dtype.itemsize * 8) if (int(ua[i]) ^ int(ub[i])) >> bit & 1
        ]
    return out


def _snapshot(m: Loaded) -> dict[str, bytes]:
    return {n: a.tobytes() for n, a in m.tensors.items()} | {f"meta:{k}": v.encode() for k, v in m.metadata.items()}


VALUE_SPECS = [
    AttackSpec("bitflip", n=7),
    AttackSpec("random-modify", fraction=0.05),
    AttackSpec("random-modify", fraction=0.05, contiguous=True),
    AttackSpec("noise", sigma=0.1),
    AttackSpec("prune", fraction=0.2),
    AttackSpec("backdoor-row", n=2),
    AttackSpec("replace-tensor"),
    AttackSpec("zero-tensor"),
    AttackSpec("lsb-rewrite", fraction=0.5),
    AttackSpec("swap", mode="blocks", n=2),
    AttackSpec("swap", mode="rows", n=1),
    AttackSpec("swap", mode="tensors"),
    AttackSpec("quantize", mode="int8"),
    AttackSpec("quantize", mode="fp16"),
    AttackSpec("metadata", mode="edit"),
]


@pytest.mark.parametrize("spec", VALUE_SPECS, ids=lambda s: f"{s.kind}-{s.mode_or_default}-{s.contiguous}")
def test_every_kind_is_deterministic_detected_and_leaves_input_alone(
    spec: AttackSpec, sealed_model: Loaded, key: paramseal.Key
) -> None:
    before = _snapshot(sealed_model)
    out1, truth1 = attack(sealed_model, spec)
    out2, truth2 = attack(sealed_model, spec)
    assert _snapshot(sealed_model) == before
    assert _snapshot(out1) == _snapshot(out2)
    assert truth1.to_dict() == truth2.to_dict()
    # the ground truth is exactly the bits that differ
    oracle = _bits_changed(sealed_model.tensors, out1.tensors)
    for ch in truth1.changes:
        got = [(int(i), b) for i, x in zip(ch.indices, ch.xor, strict=True) for b in range(ch.width) if int(x) >> b & 1]
        assert got == oracle[ch.name]
    assert truth1.changed_parameters + len(truth1.metadata_keys) > 0
    if spec.kind == "metadata":
        with pytest.raises(paramseal.ParamSealError):
            paramseal.verify(out1.tensors, key, out1.metadata[METADATA_KEY])
    else:
        rep = paramseal.verify(out1.tensors, key, out1.metadata[METADATA_KEY])
        assert rep.status == "tampered"


def test_seed_changes_the_draw(sealed_model: Loaded) -> None:
    _, a = attack(sealed_model, AttackSpec("random-modify", seed=1, fraction=0.01))
    _, b = attack(sealed_model, AttackSpec("random-modify", seed=2, fraction=0.01))
    assert a.to_dict()["tensors"] != b.to_dict()["tensors"]


@pytest.mark.parametrize("field", ["any", "sign", "exponent", "mantissa", "watermark"])
def test_bitflip_flips_exactly_n_bits_in_the_field(field: str, sealed_model: Loaded) -> None:
    n = 25
    out, truth = attack(sealed_model, AttackSpec("bitflip", seed=4, n=n, field=field))  # type: ignore[arg-type]
    flips = _bits_changed(sealed_model.tensors, out.tensors)
    assert sum(len(v) for v in flips.values()) == n
    assert sum(c.bits_flipped for c in truth.changes) == n
    ks = {t["name"]: t["k"] for t in json.loads(sealed_model.metadata[METADATA_KEY])["tensors"]}
    for name, bits in flips.items():
        a = sealed_model.tensors[name]
        if not bits:
            continue
        fmt = FLOATS.get(dtype_name(a.dtype))
        for _, b in bits:
            match field:
                case "sign":
                    assert fmt is not None and b == fmt.bits - 1
                case "exponent":
                    assert fmt is not None and fmt.mantissa <= b < fmt.mantissa + fmt.exponent
                case "mantissa":
                    assert fmt is not None and b < fmt.mantissa
                case "watermark":
                    assert fmt is not None and b < ks[name]


def test_bitflip_restricted_to_a_tensor(sealed_model: Loaded) -> None:
    out, truth = attack(sealed_model, AttackSpec("bitflip", n=3, tensors=("fc.bias",)))
    assert truth.changed_tensors == ["fc.bias"] and truth.changed_parameters <= 3
    assert sum(c.bits_flipped for c in truth.changes) == 3


def test_bitflip_rejects_more_bits_than_exist(sealed_model: Loaded) -> None:
    with pytest.raises(UsageError, match="only"):
        attack(sealed_model, AttackSpec("bitflip", n=10_000, field="sign", tensors=("fc.bias",)))


def test_random_modify_touches_exactly_the_fraction(sealed_model: Loaded) -> None:
    names = _floats(sealed_model.tensors)
    total = sum(sealed_model.tensors[n].size for n in names)
    for contiguous in (False, True):
        out, truth = attack(sealed_model, AttackSpec("random-modify", seed=5, fraction=0.1, contiguous=contiguous))
        assert truth.changed_parameters == round(0.1 * total)
        assert set(truth.changed_tensors) <= set(names)
        if contiguous:  # 2-5 runs (a run may continue across a tensor boundary)
            assert sum(len(c.ranges()) for c in truth.changes) <= 5 + len(names)
        for c in truth.changes:  # new values stay on the tensor's scale: finite
            assert np.isfinite(out.tensors[c.name].reshape(-1)[c.indices].astype(np.float64)).all()


def test_random_modify_contiguous_at_any_fraction(sealed_model: Loaded) -> None:
    # near fraction 1 a run can be one value longer than total // runs: it must still fit, not crash
    total = sum(sealed_model.tensors[n].size for n in _floats(sealed_model.tensors))
    for seed in range(8):
        for fraction in (0.9, 0.99, 1.0):
            _, truth = attack(sealed_model, AttackSpec("random-modify", seed=seed, fraction=fraction, contiguous=True))
            assert truth.changed_parameters == round(fraction * total)


def test_noise_has_the_requested_relative_sigma(sealed_model: Loaded) -> None:
    out, truth = attack(sealed_model, AttackSpec("noise", seed=1, sigma=0.05, tensors=("embed.weight",)))
    a = sealed_model.tensors["embed.weight"].astype(np.float64)
    d = out.tensors["embed.weight"].astype(np.float64) - a
    assert truth.changed_tensors == ["embed.weight"]
    assert 0.04 < d.std() / a[np.isfinite(a)].std() < 0.06


def test_prune_zeroes_the_smallest_fraction(sealed_model: Loaded) -> None:
    out, _ = attack(sealed_model, AttackSpec("prune", fraction=0.25, tensors=("fc2.weight",)))
    a, b = sealed_model.tensors["fc2.weight"].reshape(-1), out.tensors["fc2.weight"].reshape(-1)
    zeroed = np.flatnonzero(b == 0)
    assert zeroed.size == round(0.25 * a.size)
    assert np.abs(a[zeroed]).max() <= np.abs(np.delete(a, zeroed)).min()


def test_backdoor_row_overwrites_whole_rows_of_the_classifier(sealed_model: Loaded) -> None:
    _, truth = attack(sealed_model, AttackSpec("backdoor-row", seed=2, n=3))
    (c,) = [c for c in truth.changes if c.count]
    a = sealed_model.tensors[c.name]
    assert c.name == "fc2.weight"  # the last 2-D float tensor
    w = a.shape[1]
    rows = np.unique(c.indices // w)
    assert rows.size == 3 and c.count == 3 * w


def test_whole_tensors(sealed_model: Loaded) -> None:
    out, truth = attack(sealed_model, AttackSpec("zero-tensor", tensors=("embed.weight",)))
    assert not out.tensors["embed.weight"].any() and truth.changed_tensors == ["embed.weight"]
    total = sum(a.size for a in sealed_model.tensors.values())
    _, truth = attack(sealed_model, AttackSpec("replace-tensor", seed=3, fraction=0.4))
    assert 0 < truth.changed_parameters <= 0.4 * total
    for c in truth.changes:
        assert c.count in (0, c.numel) or c.count > 0.95 * c.numel  # whole tensors (a random value may repeat)


def test_replace_tensor_changes_every_value() -> None:
    # random bf16/fp16 values on the tensor's scale equal the old one now and then: 74 of 65536 bf16 values stayed
    import ml_dtypes

    for dt in (np.float16, ml_dtypes.bfloat16):
        m = Loaded({"w": np.random.default_rng(0).standard_normal((256, 256)).astype(dt)})
        _, truth = attack(m, AttackSpec("replace-tensor", seed=1))
        assert truth.changed_parameters == 256 * 256, dt


def test_lsb_rewrite_touches_only_low_bits(sealed_model: Loaded) -> None:
    _, truth = attack(sealed_model, AttackSpec("lsb-rewrite", seed=1, fraction=1.0))
    ks = {t["name"]: t["k"] for t in json.loads(sealed_model.metadata[METADATA_KEY])["tensors"]}
    assert truth.changed_parameters > 0
    for c in truth.changes:
        assert all(int(x) < (1 << ks[c.name]) for x in c.xor)
    _, truth = attack(sealed_model, AttackSpec("lsb-rewrite", fraction=1.0, bits=3, tensors=("fc.weight",)))
    assert truth.changed_tensors == ["fc.weight"] and all(int(x) < 8 for x in truth.changes[1].xor)


def test_swap_moves_values_without_changing_them(sealed_model: Loaded) -> None:
    for mode in ("blocks", "rows"):
        out, truth = attack(sealed_model, AttackSpec("swap", seed=6, mode=mode, n=1))
        (name,) = truth.changed_tensors
        a, b = sealed_model.tensors[name], out.tensors[name]
        assert sorted(uview(a).tolist()) == sorted(uview(b).tolist())
    out, truth = attack(sealed_model, AttackSpec("swap", mode="tensors"))
    assert sorted(truth.changed_tensors) == ["fc.weight", "fc2.weight"]
    assert np.array_equal(out.tensors["fc.weight"], sealed_model.tensors["fc2.weight"])


def test_swap_tensors_takes_n_pairs_of_tensors(tmp_path: Path, sealed_model: Loaded) -> None:
    """README lists `swap (--mode blocks|rows|tensors, --n pairs)`; `--mode tensors --n 1` was refused, exit 3."""
    t = {f"w{i}": np.full((3, 5), float(i), np.float32) for i in range(5)}
    t["zeros"] = np.zeros((3, 5), np.float32)  # equal to w0: swapping those two would change nothing
    t["other"] = np.ones((2, 5), np.float32)  # no tensor of its shape
    m = Loaded(t)
    for seed in range(12):
        out, truth = attack(m, AttackSpec("swap", seed=seed, mode="tensors", n=3))
        assert sorted(truth.changed_tensors) == sorted(set(t) - {"other"}), seed  # three pairs, all moved
        assert sorted(a.tobytes() for a in out.tensors.values()) == sorted(a.tobytes() for a in t.values())
        assert truth.options["n"] == 3
    _, truth = attack(m, AttackSpec("swap", seed=1, mode="tensors", n=2))
    assert len(truth.changed_tensors) == 4
    with pytest.raises(UsageError, match="cannot swap 4 distinct pairs of tensors: the chosen tensors make 3"):
        attack(m, AttackSpec("swap", mode="tensors", n=4))
    src = tmp_path / "m.safetensors"  # fc.weight and fc2.weight share a shape
    write_model(src, sealed_model)
    rc, out_text, err = helpers.run_cli(
        ["attack", src, tmp_path / "a.safetensors", "--kind", "swap", "--mode", "tensors", "--n", "1", "--json"]
    )
    assert rc == 0 and len(json.loads(out_text)["changed_tensors"]) == 2, (out_text, err)


def test_swap_n_pairs_are_n_distinct_pairs() -> None:
    # pairs were drawn independently: the same pair drawn twice swapped back, and --n 2 changed nothing
    rows = np.arange(4 * 64, dtype=np.float32).reshape(4, 64)  # four distinct blocks and rows
    m = Loaded({"w": rows})
    for mode in ("blocks", "rows"):
        for seed in range(12):
            out, truth = attack(m, AttackSpec("swap", seed=seed, mode=mode, n=2))
            assert truth.changed_parameters == rows.size, (mode, seed)
            assert sorted(uview(out.tensors["w"]).tolist()) == sorted(uview(rows).tolist())
    with pytest.raises(UsageError, match="cannot swap 3 distinct pairs of blocks: the chosen tensors have 2"):
        attack(m, AttackSpec("swap", n=3))


def test_swap_of_blocks_or_rows_never_pairs_two_equal_ones() -> None:
    """As --mode tensors: two equal blocks or rows were drawn (8 of 20 seeds here), an attack that changed nothing."""
    rng = np.random.default_rng(0)
    t = {"ones": np.ones((4, 64), np.float32), "w": rng.standard_normal((4, 64)).astype(np.float32)}
    t["w"][1] = t["w"][3]  # two equal rows beside two distinct ones
    for mode in ("blocks", "rows"):
        for seed in range(20):
            out, truth = attack(Loaded(t), AttackSpec("swap", seed=seed, mode=mode, n=1))
            assert truth.changed_parameters == 128, (mode, seed)
            assert list(truth.changed_tensors) == ["w"], (mode, seed)
        # 'w' has two equal rows and two others: two pairs of different rows at most, none in 'ones'
        _, truth = attack(Loaded(t), AttackSpec("swap", seed=1, mode=mode, n=2))
        assert truth.changed_parameters == 256
        with pytest.raises(
            UsageError, match="cannot swap 3 distinct pairs of (blocks|rows): the chosen tensors have 2"
        ):
            attack(Loaded(t), AttackSpec("swap", mode=mode, n=3))


def test_swap_of_many_pairs_moves_each_block_once() -> None:
    # 40,000 pairs of 100,000 blocks: each moved block holds another's values, none lost or doubled (no time is
    # asserted: a scan per pair once made this quadratic, about a minute, which the suite's own time would show)
    m = Loaded({"w": np.arange(64 * 100_000, dtype=np.float32)})
    out, truth = attack(m, AttackSpec("swap", seed=3, mode="blocks", n=40_000))
    src = out.tensors["w"].reshape(-1, 64)[:, 0].astype(np.int64) // 64  # the block each block's values came from
    assert truth.changed_parameters == 80_000 * 64
    assert np.array_equal(np.sort(src), np.arange(100_000)) and int((src != np.arange(100_000)).sum()) == 80_000
    assert np.array_equal(src[src], np.arange(100_000))  # pairs: each moved block's partner took its values


def test_quantize_round_trips(sealed_model: Loaded) -> None:
    out, _ = attack(sealed_model, AttackSpec("quantize", mode="int8", tensors=("embed.weight",)))
    assert np.unique(out.tensors["embed.weight"]).size <= 255
    out, _ = attack(sealed_model, AttackSpec("quantize", mode="fp16", tensors=("embed.weight",)))
    v = out.tensors["embed.weight"]
    assert np.array_equal(v.astype(np.float16).astype(np.float32), v)


def test_quantize_int8_keeps_non_finite_values_out_of_the_scale() -> None:
    # one -inf gave an infinite scale: every value became NaN; a NaN gave scale 1 (values rounded to integers)
    w = np.linspace(-0.5, 0.5, 128, dtype=np.float32)
    for bad in (-np.inf, np.nan):
        x = w.copy()
        x[3] = bad
        out = attack(Loaded({"w": x}), AttackSpec("quantize"))[0].tensors["w"]
        want = np.round(w / (0.5 / 127)) * (0.5 / 127)
        assert np.allclose(np.delete(out, 3), np.delete(want, 3)) and uview(out)[3] == uview(x)[3]


def test_metadata_modes(sealed_model: Loaded) -> None:
    out, truth = attack(sealed_model, AttackSpec("metadata", mode="strip"))
    assert METADATA_KEY not in out.metadata and truth.metadata_keys == (METADATA_KEY,)
    out, truth = attack(sealed_model, AttackSpec("metadata", mode="user"))
    assert out.metadata[METADATA_KEY] == sealed_model.metadata[METADATA_KEY] and truth.metadata_keys
    assert truth.changed_parameters == 0


@pytest.mark.parametrize("header", ["not json", "[1, 2]", '"text"'])
def test_cli_metadata_edit_of_a_header_that_is_no_json_object_is_exit_3(tmp_path: Path, header: str) -> None:
    src, dst = tmp_path / "m.safetensors", tmp_path / "a.safetensors"
    write_model(src, Loaded({"w": np.ones((4, 64), np.float32)}, {METADATA_KEY: header}))
    rc, _, err = helpers.run_cli(["attack", src, dst, "--kind", "metadata"])
    assert rc == 3 and "to be a JSON object" in err and "--mode strip" in err, err
    assert not dst.exists()
    rc, _, err = helpers.run_cli(["attack", src, dst, "--kind", "metadata", "--mode", "strip"])
    assert rc == 0 and METADATA_KEY not in read_model(dst).metadata, err


def test_metadata_edit_of_an_empty_salt_edits_the_header() -> None:
    m = Loaded({"w": np.ones((4, 64), np.float32)}, {METADATA_KEY: '{"salt": ""}'})
    out, truth = attack(m, AttackSpec("metadata", seed=3))
    assert truth.metadata_keys == (METADATA_KEY,) and out.metadata[METADATA_KEY] != m.metadata[METADATA_KEY]


def test_options_that_do_not_fit_are_refused(sealed_model: Loaded) -> None:
    with pytest.raises(UsageError, match="kind"):
        AttackSpec("nope")  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="--mode"):
        AttackSpec("noise", mode="int8")
    with pytest.raises(UsageError, match="fraction"):
        AttackSpec("prune", fraction=1.5)
    for bad in (float("nan"), float("inf")):  # NaN slipped past 'sigma < 0' and wrote NaN weights
        with pytest.raises(UsageError, match="--sigma .* must be a finite number, 0 or more"):
            AttackSpec("noise", sigma=bad)
        with pytest.raises(UsageError, match="--lr .* must be a finite number above 0"):
            AttackSpec("finetune", lr=bad)
    with pytest.raises(UsageError, match="--fraction, --contiguous do not apply"):
        AttackSpec("bitflip", fraction=0.1, contiguous=True)
    with pytest.raises(UsageError, match="no tensor named 'ghost'"):
        attack(sealed_model, AttackSpec("noise", tensors=("ghost",)))
    with pytest.raises(UsageError, match="--model"):
        attack(sealed_model, AttackSpec("bfa"))
    plain = Loaded({"w": np.ones(100, np.float32)})
    with pytest.raises(UsageError, match="sealed"):
        attack(plain, AttackSpec("lsb-rewrite"))


def test_a_bad_tuning_setting_is_named_with_its_value() -> None:
    # '--steps -3' was answered "--sigma must be >= 0, --steps >= 1 and --lr > 0": the setting at
    # fault and its value unnamed, and --sigma (which finetune does not take) named first
    for spec, msg in (
        (dict(kind="finetune", steps=-3), "--steps -3 must be at least 1"),
        (dict(kind="finetune", steps=0), "--steps 0 must be at least 1"),
        (dict(kind="finetune", lr=0.0), "--lr 0.0 must be a finite number above 0"),
        (dict(kind="finetune", lr=float("nan")), "--lr nan must be a finite number above 0"),
        (dict(kind="noise", sigma=-1.0), "--sigma -1.0 must be a finite number, 0 or more"),
        (dict(kind="noise", sigma=float("inf")), "--sigma inf must be a finite number, 0 or more"),
    ):
        with pytest.raises(UsageError) as e:
            AttackSpec(**spec)  # type: ignore[arg-type]
        assert str(e.value) == msg
    with pytest.raises(UsageError, match=r"^--sigma does not apply to bitflip"):  # before its value is judged
        AttackSpec("bitflip", sigma=-1.0)


def test_a_model_sealed_without_metadata_gives_k_from_the_header_in_its_weights(key: paramseal.Key) -> None:
    # a sealed .pt or .npy keeps its header in the weights only: lsb-rewrite said it "needs a sealed model"
    s = paramseal.seal({"w": np.random.default_rng(0).standard_normal((256, 256)).astype(np.float32)}, key)
    bare = Loaded(dict(s.tensors), {})
    k = s.header.tensors[0].k
    _, truth = attack(bare, AttackSpec("lsb-rewrite", seed=2, fraction=0.1))
    assert truth.changed_parameters and max(truth.changes[0].bit_counts()) < k
    _, truth = attack(bare, AttackSpec("bitflip", seed=2, n=20, field="watermark"))
    assert sum(c.bits_flipped for c in truth.changes) == 20 and max(truth.changes[0].bit_counts()) < k
    with pytest.raises(UsageError, match="keeps it in its weights only"):  # it said "needs a sealed model"
        attack(bare, AttackSpec("metadata"))


def test_bits_out_of_range_or_unused_is_refused(sealed_model: Loaded) -> None:
    # --bits 0 or -1 fell back to the seal's k or found no tensor; past a value's width it crashed (lsb-rewrite)
    # or flipped fewer bits than --n (bitflip); with another --field it was ignored
    for bits in (0, -1):
        with pytest.raises(UsageError, match=f"--bits {bits} must be at least 1"):
            AttackSpec("lsb-rewrite", bits=bits)
    with pytest.raises(UsageError, match="--field watermark only"):
        AttackSpec("bitflip", field="exponent", bits=3)
    for spec in (
        AttackSpec("lsb-rewrite", bits=40, tensors=("fc.weight",)),
        AttackSpec("bitflip", field="watermark", bits=40, n=5, tensors=("fc.weight",)),
    ):
        with pytest.raises(UsageError, match="--bits 40 is more than the 32 bits"):
            attack(sealed_model, spec)


def test_tensors_an_attack_cannot_use_are_usage_errors() -> None:
    # swap on a 1-D or one-block tensor and random-modify on an empty one raised ZeroDivisionError/ValueError
    m = Loaded({"w": np.ones((4, 64), np.float32), "b": np.ones(50, np.float32), "e": np.zeros((0, 5), np.float32)})
    for spec, msg in (
        (AttackSpec("swap", mode="rows", tensors=("b", "w")), "at least two rows in each tensor; 'b' has fewer"),
        (AttackSpec("swap", tensors=("b",)), "at least two 64-value blocks in each tensor; 'b' has fewer"),
        (AttackSpec("swap", mode="rows", tensors=("e",)), "at least two rows"),
        (AttackSpec("random-modify", tensors=("e",)), r"tensors \('e'\) hold no values"),
        (AttackSpec("random-modify", tensors=("e",), contiguous=True), r"tensors \('e'\) hold no values"),
    ):
        with pytest.raises(UsageError, match=msg):
            attack(m, spec)
    for mode in ("blocks", "rows"):  # four blocks, four rows, all equal: a swap of two changed nothing
        with pytest.raises(UsageError, match=f"no two {'64-value blocks' if mode == 'blocks' else 'rows'} of diff"):
            attack(m, AttackSpec("swap", mode=mode, tensors=("w",)))


def test_ground_truth_options_give_the_fraction_applied(sealed_model: Loaded) -> None:
    # --kind prune without --fraction pruned 10% and recorded "fraction": null
    for kind, want in (("prune", 0.1), ("random-modify", 0.01), ("lsb-rewrite", 1.0), ("truncate", 0.5)):
        assert AttackSpec(kind).options()["fraction"] == want  # type: ignore[arg-type]
        assert AttackSpec(kind, fraction=0.2).options()["fraction"] == 0.2  # type: ignore[arg-type]
    assert AttackSpec("zero-tensor").options()["fraction"] is None  # one tensor, not a fraction
    _, truth = attack(sealed_model, AttackSpec("prune"))
    ref = attack(sealed_model, AttackSpec("prune", fraction=truth.options["fraction"]))[1]
    assert truth.to_dict() == ref.to_dict()


def test_ground_truth_options_give_the_bits_of_a_watermark_bitflip(sealed_model: Loaded) -> None:
    # bitflip --field watermark --bits 2 flipped only bits 0-1 but recorded {"n": 20, "field": "watermark"}
    _, truth = attack(sealed_model, AttackSpec("bitflip", n=20, field="watermark", bits=2))
    assert truth.options["bits"] == 2
    assert all(b < 2 for t in truth.to_dict()["tensors"].values() for bits in t["bits"] for b in bits)
    ref = attack(sealed_model, AttackSpec("bitflip", n=20, field="watermark", bits=truth.options["bits"]))[1]
    assert truth.to_dict() == ref.to_dict()
    assert AttackSpec("bitflip", field="watermark").options()["bits"] is None  # the seal's k per tensor
    assert "bits" not in AttackSpec("bitflip").options()  # other fields take no --bits


def test_a_tensor_named_twice_is_refused(sealed_model: Loaded) -> None:
    # --tensor fc.bias --tensor fc.bias --n 2560 flipped every bit of fc.bias twice: 0 bits changed, reported OK
    with pytest.raises(UsageError, match="--tensor 'fc.bias' given more than once"):
        AttackSpec("bitflip", n=2560, tensors=("fc.bias", "fc.weight", "fc.bias"))
    _, truth = attack(sealed_model, AttackSpec("bitflip", n=1280, tensors=("fc.bias",)))
    assert sum(c.bits_flipped for c in truth.changes) == 1280


def test_attack_file_truncate_and_atomic_output(tmp_path: Path, sealed_model: Loaded) -> None:
    src = tmp_path / "m.safetensors"
    write_model(src, sealed_model)
    raw = src.read_bytes()
    truth = attack_file(src, tmp_path / "cut.safetensors", AttackSpec("truncate", fraction=0.3))
    assert (tmp_path / "cut.safetensors").read_bytes() == raw[: int(len(raw) * 0.3)]
    assert truth.file == {"bytes_before": len(raw), "bytes_after": int(len(raw) * 0.3)}
    # the model's parameter count, not 0 (JSON said total_parameters 0)
    assert truth.total_parameters == sum(a.size for a in sealed_model.tensors.values())
    assert src.read_bytes() == raw
    with pytest.raises(UsageError, match="never modifies"):
        attack_file(src, src, AttackSpec("noise"))


def test_attack_truncate_summary_claims_no_share_of_parameters(tmp_path: Path, sealed_model: Loaded) -> None:
    """It said '0 value(s) in 0 tensor(s), 0 bit(s) changed; 0% of parameters' of a file cut in half."""
    src = tmp_path / "m.safetensors"
    write_model(src, sealed_model)
    rc, out, _ = helpers.run_cli(["attack", src, tmp_path / "cut.safetensors", "--kind", "truncate"])
    head = out.splitlines()[0]
    assert rc == 0 and "the file was cut short; its values are not counted" in head, out
    assert "% of parameters" not in head and "0 value(s)" not in head
    assert f"file truncated from {src.stat().st_size} to {src.stat().st_size // 2} bytes" in out


def test_attack_help_says_truncate_keeps_its_fraction_of_the_file(tmp_path: Path, sealed_model: Loaded) -> None:
    """--help said "fraction of parameters (or of the file, truncate)": --fraction 0.01 kept 1%, not cut 1%."""
    rc, out, _ = helpers.run_cli(["attack", "--help"])
    text = " ".join(out.split())
    assert rc == 0 and "(truncate: fraction of the file's bytes kept, default 0.5)" in text, text
    src = tmp_path / "m.safetensors"
    write_model(src, sealed_model)
    rc, out, err = helpers.run_cli(
        ["attack", src, tmp_path / "cut.safetensors", "--kind", "truncate", "--fraction", "0.25"]
    )
    size = src.stat().st_size
    assert rc == 0 and (tmp_path / "cut.safetensors").stat().st_size == int(size * 0.25), (out, err)


def test_attack_truncate_refuses_a_key_file_and_writes_nothing(tmp_path: Path, key: paramseal.Key) -> None:
    """truncate works on any file: given the key file, it copied half the key into an output others can read."""
    keyfile = paramseal.write_key(tmp_path / "k.key", key)
    rc, out, err = helpers.run_cli(["attack", keyfile, tmp_path / "cut.safetensors", "--kind", "truncate"])
    assert rc == 3 and "key file" in err
    assert key.secret.hex()[:16] not in out + err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k.key"]


def test_attack_file_refuses_an_output_that_would_drop_metadata(tmp_path: Path, sealed_model: Loaded) -> None:
    # metadata --mode user into a .pt claimed "metadata key 'attacker.note' added" and wrote none; a
    # .safetensors -> .pt bitflip dropped the seal header unreported. A .pt keeps metadata now; an .npy cannot
    src = tmp_path / "m.safetensors"
    write_model(src, sealed_model)
    truth = attack_file(src, tmp_path / "out.pt", AttackSpec("metadata", mode="user"))
    assert truth.metadata_keys and read_model(tmp_path / "out.pt").metadata.keys() > sealed_model.metadata.keys()
    one = tmp_path / "one.safetensors"
    write_model(one, Loaded({"w": np.ones(64, np.float32)}, {"note": "kept"}))
    plain = tmp_path / "plain.npy"
    write_model(plain, Loaded({"w": np.ones(64, np.float32)}))
    for s, spec in ((plain, AttackSpec("metadata", mode="user")), (one, AttackSpec("bitflip"))):
        with pytest.raises(UsageError, match="cannot hold metadata"):
            attack_file(s, tmp_path / "out.npy", spec)
        assert not (tmp_path / "out.npy").exists()
    truth = attack_file(plain, tmp_path / "out.npy", AttackSpec("bitflip"))  # nothing to lose: fine
    assert truth.changed_parameters == 1 and not truth.metadata_keys


def test_cli_attack_json_is_ground_truth(tmp_path: Path, sealed_model: Loaded, key: paramseal.Key) -> None:
    src, dst = tmp_path / "m.safetensors", tmp_path / "a.safetensors"
    write_model(src, sealed_model)
    raw = src.read_bytes()
    rc, out, _ = helpers.run_cli(
        ["attack", src, dst, "--kind", "bitflip", "--n", "5", "--seed", "3", "--field", "exponent", "--json"]
    )
    assert rc == 0 and src.read_bytes() == raw
    truth = json.loads(out)
    assert truth["changed_parameters"] == 5 and sum(t["bits_flipped"] for t in truth["tensors"].values()) == 5
    got = read_model(dst).tensors
    for name, t in truth["tensors"].items():
        diff = np.flatnonzero(uview(got[name]) != uview(sealed_model.tensors[name]))
        assert diff.tolist() == t["indices"]
    rep = paramseal.files.verify_file(dst, key)
    assert set(rep.tampered_tensors) == set(truth["tensors"])
    rc, out, _ = helpers.run_cli(
        ["attack", src, tmp_path / "b.safetensors", "--kind", "zero-tensor", "--tensor", "fc.weight"]
    )
    assert rc == 0 and out.startswith("OK: attacked") and "fc.weight: 1320 value(s)" in out


def test_cli_attack_bad_input_exits_3_and_writes_nothing(tmp_path: Path, sealed_model: Loaded) -> None:
    src = tmp_path / "m.safetensors"
    write_model(src, sealed_model)
    before = helpers.listing(tmp_path)
    for argv in (
        ["attack", src, tmp_path / "o.safetensors", "--kind", "noise", "--tensor", "ghost"],
        ["attack", src, src, "--kind", "noise"],
        ["attack", tmp_path / "missing.safetensors", tmp_path / "o.safetensors", "--kind", "noise"],
        ["attack", src, tmp_path / "o.safetensors", "--kind", "quantize", "--mode", "int4"],
        ["attack", src, tmp_path / "o.safetensors", "--kind", "wobble"],
        ["attack", src, tmp_path / "o.safetensors", "--kind", "bitflip", "--seed", "-1"],  # was a ValueError traceback
    ):
        rc, _, err = helpers.run_cli(argv)
        assert rc == 3, (argv, err)
        assert helpers.listing(tmp_path) == before


def test_every_kind_is_covered() -> None:
    covered = {s.kind for s in VALUE_SPECS} | {"truncate", "bfa", "finetune", "metadata"}
    assert covered == set(KINDS)


@pytest.fixture(scope="module")
def mlp_sealed(key: paramseal.Key) -> Loaded:
    from paramseal import _demo_model

    s = paramseal.seal(_demo_model.train(0), key)
    return Loaded(dict(s.tensors), {METADATA_KEY: s.header_json})


def test_bfa_stops_once_the_loss_overflows_and_says_so(mlp_sealed: Loaded, tmp_path: Path) -> None:
    """One exponent flip overflows the float32 MLP's outputs; every later candidate then scored the same.

    Flips 2-5 of a "5-flip" bfa were bit 0 of fc1.bias values (changes of ~1e-9): a 1-flip attack
    recorded as 5. Now the search stops, and the ground truth says after how many flips and why.
    """
    pytest.importorskip("torch")
    from paramseal.evaluation.models import get_model

    mlp = get_model("mlp")
    before = _snapshot(mlp_sealed)
    out, truth = attack(mlp_sealed, AttackSpec("bfa", n=5, seed=0), model=mlp)
    assert _snapshot(mlp_sealed) == before
    made = sum(len(v) for v in _bits_changed(mlp_sealed.tensors, out.tensors).values())
    assert 1 <= made < 5 and sum(c.bits_flipped for c in truth.changes) == made
    assert truth.stopped.startswith(f"stopped after {made} of 5 flips: flip {made} made the task loss non-finite")
    assert truth.to_dict()["stopped"] == truth.stopped and truth.options["n"] == 5  # asked 5, made fewer
    for c in truth.changes:  # every flip made does damage: no value moved by a rounding's worth
        old = mlp_sealed.tensors[c.name].reshape(-1)[c.indices].astype(np.float64)
        new = out.tensors[c.name].reshape(-1)[c.indices].astype(np.float64)
        assert np.all(np.abs(new - old) > 1.0), (c.name, old, new)
    assert mlp.evaluate(out.tensors)["accuracy"] < mlp.evaluate(mlp_sealed.tensors)["accuracy"] - 0.2
    src = tmp_path / "m.safetensors"
    write_model(src, mlp_sealed)
    rc, out_text, err = helpers.run_cli(
        ["attack", src, tmp_path / "a.safetensors", "--kind", "bfa", "--n", "5", "--model", "mlp"]
    )
    assert rc == 0 and f"bfa stopped after {made} of 5 flips" in out_text, (out_text, err)
    rc, out_text, err = helpers.run_cli(
        ["attack", src, tmp_path / "b.safetensors", "--kind", "bfa", "--n", "5", "--model", "mlp", "--json"]
    )
    assert rc == 0 and json.loads(out_text)["stopped"] == truth.stopped, err


class _Sigmoid:
    """A task whose loss stays finite whatever the bits: sum of sigmoid(w), raised by each sign flip of a -1."""

    name = "sigmoid"

    def loss(self, params: dict[str, Any], batch: int | None) -> Any:
        import torch

        return torch.sigmoid(params["w"]).sum()


class _Flat:
    """A task whose loss no flip changes (it uses w only through w * 0)."""

    name = "flat"

    def loss(self, params: dict[str, Any], batch: int | None) -> Any:
        return (params["w"] * 0).sum() + 1


def test_bfa_makes_every_flip_while_each_raises_a_finite_loss() -> None:
    pytest.importorskip("torch")
    m = Loaded({"w": np.full((4, 16), -1.0, np.float32)}, {})
    out, truth = attack(m, AttackSpec("bfa", n=3), model=_Sigmoid())
    assert truth.stopped == "" and truth.to_dict()["stopped"] is None
    assert sum(c.bits_flipped for c in truth.changes) == 3 and truth.changed_parameters == 3


def test_bfa_makes_no_flip_that_does_not_raise_the_loss() -> None:
    """A loss no flip raises left every candidate tied: an arbitrary bit was flipped and called a bfa flip."""
    pytest.importorskip("torch")
    m = Loaded({"w": np.full((4, 16), 0.5, np.float32)}, {})
    out, truth = attack(m, AttackSpec("bfa", n=2), model=_Flat())
    assert truth.changed_parameters == 0 and out.tensors["w"].tobytes() == m.tensors["w"].tobytes()
    assert truth.stopped.startswith("stopped after 0 of 2 flips: none of the 4 best-ranked flips raises the task loss")


def test_bfa_refuses_a_model_whose_loss_is_not_finite_already(mlp_sealed: Loaded) -> None:
    pytest.importorskip("torch")
    from paramseal.evaluation.models import get_model

    t = dict(mlp_sealed.tensors)
    t["fc3.weight"] = np.full_like(t["fc3.weight"], np.inf)
    with pytest.raises(UsageError, match="before any flip, so bfa cannot rank flips"):
        attack(Loaded(t, {}), AttackSpec("bfa", n=2), model=get_model("mlp"))


def test_finetune_changes_only_the_classifier(mlp_sealed: Loaded, tmp_path: Path) -> None:
    pytest.importorskip("torch")
    before = _snapshot(mlp_sealed)
    out, truth = attack(mlp_sealed, AttackSpec("finetune", steps=3, lr=0.05, model="mlp"))
    assert _snapshot(mlp_sealed) == before
    assert set(truth.changed_tensors) == {"fc3.weight", "fc3.bias"}
    assert truth.changes[4].count > 0.5 * truth.changes[4].numel


def test_cli_finetune_with_a_builtin_model(tmp_path: Path, mlp_sealed: Loaded) -> None:
    pytest.importorskip("torch")
    src, dst = tmp_path / "m.safetensors", tmp_path / "ft.safetensors"
    write_model(src, mlp_sealed)
    rc, out, err = helpers.run_cli(["attack", src, dst, "--kind", "finetune", "--steps", "2", "--model", "mlp"])
    assert rc == 0, err
    assert "fc3.weight" in out and "fc1.weight" not in out
    rc, _, err = helpers.run_cli(["attack", src, tmp_path / "x.safetensors", "--kind", "bfa"])
    assert rc == 3 and "--model" in err


@pytest.mark.parametrize("kind", ["bfa", "finetune"])
def test_cli_gradient_attack_without_torch_names_the_extra_in_a_sentence(
    tmp_path: Path, mlp_sealed: Loaded, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found on a fresh `pip install .`: the message read 'attacks bfa and finetune needs ...'."""
    src = tmp_path / "m.safetensors"
    write_model(src, mlp_sealed)
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch now raises ImportError
    rc, _, err = helpers.run_cli(["attack", src, tmp_path / "x.safetensors", "--kind", kind, "--model", "mlp"])
    assert rc == 3
    assert f"the {kind} attack needs an optional dependency: pip install 'paramseal[eval]'" in err, err


@pytest.mark.parametrize("kind", ["bfa", "finetune"])
@pytest.mark.parametrize(
    ("change", "extra", "why"),
    [
        ("other", [], "no float tensor 'fc1.weight', which mlp needs"),  # a model of another task
        ("transposed", [], "do not fit mlp (mat1 and mat2 shapes cannot be multiplied"),
        ("extra", ["--tensor", "step"], "--tensor 'step' is not float"),
        ("extra", ["--tensor", "unused"], "mlp's task loss uses none of the tensors 'unused'"),
    ],
)
def test_cli_gradient_attacks_refuse_a_model_the_task_model_cannot_use(
    tmp_path: Path, mlp_sealed: Loaded, kind: str, change: str, extra: list[str], why: str
) -> None:
    pytest.importorskip("torch")
    t = dict(mlp_sealed.tensors)
    if change == "other":
        t = {"w": np.ones((4, 64), np.float32)}
    elif change == "transposed":
        t = {n: np.ascontiguousarray(a.T) for n, a in t.items()}
    else:
        t |= {"step": np.arange(3, dtype=np.int64), "unused": np.ones((4, 4), np.float32)}
    src, dst = tmp_path / "m.safetensors", tmp_path / "a.safetensors"
    write_model(src, Loaded(t, {}))
    rc, _, err = helpers.run_cli(["attack", src, dst, "--kind", kind, "--model", "mlp", *extra])
    assert rc == 3 and why in err, err
    assert not dst.exists()


class _Failing:
    """A task model whose forward pass fails with ``error``, as torch would raise it."""

    name = "failing"

    def __init__(self, error: Exception) -> None:
        self.error = error

    def loss(self, params: object, batch: int | None) -> Any:
        raise self.error


@pytest.mark.parametrize(
    ("error", "misfit"),
    [
        ("OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB", False),
        ("RuntimeError: CUDA error: device-side assert triggered", False),
        ("RuntimeError: mat1 and mat2 shapes cannot be multiplied (256x64 and 10x64)", True),
        ("RuntimeError: expected scalar type Float but found Half", True),
    ],
)
def test_only_a_shape_or_dtype_misfit_in_the_task_loss_is_called_a_model_that_does_not_fit(
    mlp_sealed: Loaded, error: str, misfit: bool
) -> None:
    """An out-of-memory error (a RuntimeError) or a torch bug keeps its own error: the model is not at fault."""
    torch = pytest.importorskip("torch")
    kind, text = error.split(": ", 1)
    exc = (torch.OutOfMemoryError if kind == "OutOfMemoryError" else RuntimeError)(text)
    if misfit:
        with pytest.raises(UsageError, match=re.escape(f"do not fit failing ({text})")):
            attack(mlp_sealed, AttackSpec("bfa", n=1), model=_Failing(exc))
    else:
        with pytest.raises(type(exc)) as ei:
            attack(mlp_sealed, AttackSpec("bfa", n=1), model=_Failing(exc))
        assert ei.value is exc


def test_a_no_op_attack_reports_no_change(sealed_model: Loaded) -> None:
    fp16_only = Loaded({"h": sealed_model.tensors["norm.weight"]}, {})
    out, truth = attack(fp16_only, AttackSpec("quantize", mode="fp16"))
    assert truth.changed_parameters == 0 and not truth.structural
    assert out.tensors["h"].tobytes() == fp16_only.tensors["h"].tobytes()


@pytest.mark.parametrize(
    ("argv", "why"),
    [
        (["--kind", "bitflip", "--sigma", "0.5"], "--sigma does not apply to bitflip; --sigma applies to noise"),
        (["--kind", "noise", "--steps", "3"], "--steps does not apply to noise; --steps applies to finetune"),
        (["--kind", "prune", "--lr", "0.1"], "--lr does not apply to prune"),
        (["--kind", "truncate", "--tensor", "fc.weight"], "--tensor does not apply to truncate"),
        (["--kind", "metadata", "--tensor", "fc.weight"], "--tensor does not apply to metadata"),
        (["--kind", "truncate", "--fraction", "1.0"], "keeps the whole file"),  # was cut to len-1 bytes silently
        # these were ignored while the ground truth's options recorded them
        (["--kind", "replace-tensor", "--tensor", "fc.weight", "--fraction", "0.01"], "--tensor or --fraction"),
        (["--kind", "zero-tensor", "--tensor", "fc.weight", "--fraction", "0.01"], "--tensor or --fraction"),
        (["--kind", "backdoor-row", "--tensor", "fc.weight", "--tensor", "fc2.weight"], "one --tensor"),
    ],
)
def test_an_option_the_attack_would_ignore_is_refused(
    tmp_path: Path, sealed_file: Path, argv: list[str], why: str
) -> None:
    """An option given for a kind that does not use it was silently dropped: the ground truth then misled."""
    rc, out, err = helpers.run_cli(["attack", sealed_file, tmp_path / "a.safetensors", *argv])
    assert rc == 3 and why in err and not (tmp_path / "a.safetensors").exists(), (out, err)


def test_the_tuning_options_still_reach_their_attacks(tmp_path: Path, sealed_file: Path) -> None:
    rc, out, err = helpers.run_cli(
        ["attack", sealed_file, tmp_path / "a.safetensors", "--kind", "noise", "--sigma", "0.2", "--json"]
    )
    assert rc == 0, err
    assert json.loads(out)["options"]["sigma"] == 0.2


def test_attack_json_is_the_ground_truth_with_each_list_on_one_line(tmp_path: Path, sealed_file: Path) -> None:
    """Scattered damage records hundreds of thousands of ranges: one line per number made gigabytes."""
    from paramseal.files import read_model

    argv = ["--kind", "random-modify", "--fraction", "0.3", "--seed", "4"]
    rc, out, err = helpers.run_cli(["attack", sealed_file, tmp_path / "a.safetensors", *argv, "--json"])
    assert rc == 0, err
    doc = json.loads(out)
    _, truth = attack(read_model(sealed_file), AttackSpec("random-modify", seed=4, fraction=0.3))
    want = truth.to_dict()
    want["file"] = doc["file"]  # where it was written
    assert doc == want
    ranges = sum(len(t["ranges"]) for t in doc["tensors"].values())
    assert ranges > 100 and len(out.splitlines()) < ranges


def test_attack_json_lists_every_changed_index_and_its_bits_past_ten_thousand(
    tmp_path: Path, key: paramseal.Key
) -> None:
    """`attack --json` promises every index and bit; a tensor of over 10,000 changed values had only ranges."""
    src, dst = tmp_path / "m.safetensors", tmp_path / "a.safetensors"
    paramseal.files.seal_file(helpers.write_st(tmp_path / "p.safetensors", helpers.fp32_model(12_000)), src, key)
    rc, out, err = helpers.run_cli(["attack", src, dst, "--kind", "noise", "--sigma", "0.5", "--json"])
    assert rc == 0, err
    t = json.loads(out)["tensors"]["layer0.weight"]
    assert t["changed"] > 10_000
    old, new = uview(read_model(src).tensors["layer0.weight"]), uview(read_model(dst).tensors["layer0.weight"])
    diff = np.flatnonzero(old != new)
    assert t["indices"] == diff.tolist()
    xor = (old ^ new)[diff]
    assert t["bits"] == [[b for b in range(32) if int(x) >> b & 1] for x in xor]


def test_ground_truth_diff_counts_blocks_ranges_and_bits_of_a_known_change() -> None:
    """The ground truth every evaluation is scored against, checked on a change written by hand."""
    from paramseal.attacks._truth import diff

    a = np.full(200, -1.75, np.float32)  # not zero: the XOR is not the new bits
    b = a.copy()
    ub = b.view(np.uint32)
    ub[[3, 4, 5, 63, 64, 130]] ^= np.array([1 << 0, 1 << 31, 1 << 5, 1 << 23, 3, 1 << 1], np.uint32)
    before = {"w": a, "gone": np.ones(2, np.int8), "s": np.ones(4, np.float16)}
    changes, structural = diff(before, {"w": b, "s": np.ones((2, 2), np.float16), "new": np.ones(1, np.int8)})
    (w, s) = changes
    assert w.name == "w" and w.numel == 200 and w.width == 32
    assert w.indices.tolist() == [3, 4, 5, 63, 64, 130] and w.count == 6
    assert w.xor.tolist() == [1, 1 << 31, 1 << 5, 1 << 23, 3, 2]
    assert w.blocks.tolist() == [0, 1, 2]
    assert w.ranges() == [[3, 6], [63, 65], [130, 131]]
    assert w.bits_flipped == 7
    assert w.bit_counts() == {0: 2, 1: 2, 5: 1, 23: 1, 31: 1}
    d = w.to_dict()
    assert d["changed"] == 6 and d["blocks"] == 3 and d["bits"] == [[0], [31], [5], [23], [0, 1], [1]]
    assert s.count == 0  # reshaped only: no value changed
    assert structural == (
        "tensor 'gone' removed",
        "tensor 's' reshaped from [4] to [2, 2]",
        "tensor 'new' added",
    )


def test_cli_attack_of_a_model_holding_complex128_values_is_no_traceback(tmp_path: Path) -> None:
    """attack of a model with a complex128 tensor (an .npz or .pt read so, or a sealed one saved again so) ended in
    KeyError: 16 and a traceback whatever it attacked: no unsigned integer is 128 bits wide. bitflip now leaves
    such tensors alone unless named, naming one is refused (exit 3, nothing written), and swapping two of them
    is listed bit for bit, 128 bits a value."""
    rng = np.random.default_rng(0)
    z1, z2 = (rng.standard_normal(8) + 1j * rng.standard_normal(8) for _ in range(2))
    src = tmp_path / "m.npz"
    np.savez(src, w=rng.standard_normal((16, 16)).astype(np.float32), z1=z1, z2=z2)
    dst = tmp_path / "a.npz"
    rc, out, err = helpers.run_cli(["attack", src, dst, "--kind", "bitflip", "--n", "20", "--seed", "1", "--json"])
    assert rc == 0 and set(json.loads(out)["tensors"]) == {"w"}, (out, err)
    rc, _, err = helpers.run_cli(["attack", src, tmp_path / "b.npz", "--kind", "bitflip", "--tensor", "z1"])
    assert rc == 3 and "tensor 'z1': its complex128 values are 128 bits wide" in err and "Traceback" not in err, err
    assert not (tmp_path / "b.npz").exists()
    swapped = tmp_path / "s.npz"
    rc, out, err = helpers.run_cli(
        ["attack", src, swapped, "--kind", "swap", "--mode", "tensors", "--tensor", "z1", "--tensor", "z2", "--json"]
    )
    assert rc == 0, (out, err)
    xor = (z1.view("<u8") ^ z2.view("<u8")).tolist()
    bits = [[b for b in range(64) if v >> b & 1] for v in xor]  # per float64 half: real, then imaginary
    want = [bits[2 * i] + [64 + b for b in bits[2 * i + 1]] for i in range(8)]
    truth = json.loads(out)["tensors"]["z1"]
    assert truth["indices"] == list(range(8)) and truth["bits"] == want
    assert truth["bits_flipped"] == sum(map(len, want)) and sum(truth["bit_counts"].values()) == sum(map(len, want))
    with np.load(swapped) as z:
        assert helpers.same_bytes(z["z1"], z2) and helpers.same_bytes(z["z2"], z1)


def test_cli_bitflip_of_a_4_bit_tensor_flips_only_bits_its_file_keeps(tmp_path: Path) -> None:
    """bitflip of a 4-bit tensor (a safetensors F4 one, read one value a byte) flipped bits 0-7 of each byte and
    reported them all, where the file keeps bits 0-3: --n 40 reported 40 bits, and the file written back held about
    half. It now flips only the 4 bits a value has, and reports what the file holds."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal(64).astype(np.float32)
    q = rng.integers(0, 256, 32, dtype=np.uint8)  # 64 E2M1 values, two a byte
    header = {
        "q": {"dtype": "F4", "shape": [64], "data_offsets": [0, 32]},
        "w": {"dtype": "F32", "shape": [64], "data_offsets": [32, 288]},
    }
    src = tmp_path / "m.safetensors"
    src.write_bytes(helpers.st_build(header, q.tobytes() + w.tobytes()))
    dst = tmp_path / "a.safetensors"
    argv = ["attack", src, dst, "--kind", "bitflip", "--tensor", "q", "--n", "40", "--seed", "1", "--json"]
    rc, out, err = helpers.run_cli(argv)
    assert rc == 0, (out, err)
    truth = json.loads(out)["tensors"]["q"]
    before, after = read_model(src).tensors["q"], read_model(dst).tensors["q"]
    real = _bits_changed({"q": before}, {"q": after})["q"]
    assert truth["bits_flipped"] == len(real) == 40 and all(bit < 4 for _, bit in real), (truth, real)
    h, data = helpers.st_parts(dst.read_bytes())
    start, end = h["q"]["data_offsets"]
    assert h["q"]["dtype"] == "F4" and end - start == 32
    packed = np.frombuffer(data[start:end], np.uint8)
    assert int(np.unpackbits(packed ^ q).sum()) == 40


def _complex_model() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(4)
    z = rng.standard_normal((8, 64)) * 2 + 1j * (rng.standard_normal((8, 64)) * 0.5 + 3)  # parts of unlike scale
    return {"w": rng.standard_normal((8, 64)).astype(np.float32), "z64": z.astype(np.complex64), "z128": z}


@pytest.mark.parametrize("name", ["z64", "z128"])
def test_value_attacks_change_both_parts_of_a_named_complex_tensor(name: str) -> None:
    """noise, quantize and prune of a complex tensor named with --tensor went through astype(float64): a
    ComplexWarning, and every imaginary part came out 0 (prune ranked values by their real part). Each part is now
    changed as a tensor of its own; prune ranks by modulus."""
    m = Loaded(_complex_model())
    z = m.tensors[name]
    out = attack(m, AttackSpec("noise", seed=2, sigma=0.05, tensors=(name,)))[0].tensors[name]
    assert out.dtype == z.dtype
    for got, was in ((out.real, z.real), (out.imag, z.imag)):
        assert 0.04 < (got.astype(np.float64) - was).std() / was.std() < 0.06
    out = attack(m, AttackSpec("quantize", mode="int8", tensors=(name,)))[0].tensors[name]
    for got, was in ((out.real, z.real), (out.imag, z.imag)):
        step = np.abs(was).max() / 127
        assert np.allclose(got, np.round(was / step) * step, rtol=1e-6, atol=0) and not np.array_equal(got, was)
    out = attack(m, AttackSpec("quantize", mode="fp16", tensors=(name,)))[0].tensors[name]
    for got, was in ((out.real, z.real), (out.imag, z.imag)):
        assert np.array_equal(got, was.astype(np.float16).astype(got.dtype))
    out = attack(m, AttackSpec("prune", fraction=0.25, tensors=(name,)))[0].tensors[name].reshape(-1)
    zeroed = np.flatnonzero(out == 0)
    mod = np.abs(z.reshape(-1))
    assert zeroed.size == round(0.25 * z.size) and mod[zeroed].max() <= np.delete(mod, zeroed).min()


@pytest.mark.parametrize("kind", ["random-modify", "replace-tensor", "backdoor-row"])
def test_overwriting_attacks_draw_both_parts_of_a_named_complex64_tensor(kind: str) -> None:
    """random-modify, replace-tensor and backdoor-row drew real values for a complex64 tensor (a ComplexWarning
    from its scale; every value written had imaginary part 0); each part is now drawn on its own scale."""
    m = Loaded(_complex_model())
    z = m.tensors["z64"]
    out, truth = attack(m, AttackSpec(kind, seed=3, tensors=("z64",)))
    (change,) = [c for c in truth.changes if c.count]
    new = out.tensors["z64"].reshape(-1)[change.indices]
    assert change.name == "z64" and np.all(new.imag != 0)
    # the imaginary parts are drawn around theirs (mean 3, std 0.5), not the real parts' (mean 0, std 2)
    if kind != "backdoor-row":  # its rows are 3 std around 0, the real parts' and the imaginary parts' each
        assert abs(new.imag.mean() - z.imag.mean()) < 0.5
    assert 0.5 * z.imag.std() < new.imag.std() < 4 * z.imag.std()


def test_cli_attack_of_a_named_complex_tensor_keeps_its_imaginary_part(tmp_path: Path) -> None:
    """`paramseal attack m.npz --kind noise --tensor z` of a complex tensor wrote it with every imaginary part 0
    (or, warnings as errors, ended in an internal error); it now perturbs both parts. A complex128 tensor named to
    an attack that writes its bits is refused, exit 3, as before, not a ComplexWarning."""
    src = tmp_path / "m.npz"
    np.savez(src, **_complex_model())
    for name, kind in (("z64", "noise"), ("z128", "noise"), ("z128", "quantize"), ("z64", "random-modify")):
        dst = tmp_path / f"{name}-{kind}.npz"
        rc, out, err = helpers.run_cli(["attack", src, dst, "--kind", kind, "--tensor", name, "--json"])
        assert rc == 0 and list(json.loads(out)["tensors"]) == [name], (kind, out, err)
        with np.load(src) as a, np.load(dst) as b:
            was, got = a[name], b[name]
            assert got.dtype == was.dtype and np.all(got.imag != 0), (name, kind)
            assert helpers.same_bytes(b["w"], a["w"])
        changed = json.loads(out)["tensors"][name]["indices"]
        assert np.any(got.reshape(-1)[changed].imag != was.reshape(-1)[changed].imag), (name, kind)
    for kind in ("random-modify", "backdoor-row"):
        rc, _, err = helpers.run_cli(["attack", src, tmp_path / "x.npz", "--kind", kind, "--tensor", "z128"])
        assert rc == 3 and "tensor 'z128': its complex128 values are 128 bits wide" in err, (kind, err)
        assert not (tmp_path / "x.npz").exists()

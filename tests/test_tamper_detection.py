"""Attacks from the threat model (DESIGN.md section 2): detection, localisation and the tensor table."""

from __future__ import annotations

import helpers
import numpy as np
import pytest

import paramseal

# --------------------------------------------------------------------------- mutation fuzz

MUTATIONS = ["bitflips", "byte_overwrite", "value_replace", "value_copy", "block_swap", "low_bits", "sign_flip"]


def _mutate(tensors: dict[str, np.ndarray], seed: int) -> tuple[dict[str, np.ndarray], str]:
    """One random mutation of a model's bytes; always changes at least one byte."""
    rng = np.random.default_rng(seed)
    kind = MUTATIONS[seed % len(MUTATIONS)]
    out = helpers.copy_model(tensors)
    names = [n for n, a in out.items() if a.size]
    for _ in range(100):
        name = names[int(rng.integers(len(names)))]
        a = out[name]
        u = helpers.uview(a)
        raw = u.view(np.uint8)
        w = helpers.width(a.dtype)
        match kind:
            case "bitflips":
                for _ in range(int(rng.integers(1, 6))):
                    i = int(rng.integers(u.size))
                    u[i] ^= u.dtype.type(1) << u.dtype.type(int(rng.integers(w)))
            case "byte_overwrite":
                n = int(rng.integers(1, 9))
                at = int(rng.integers(0, raw.size - n + 1)) if raw.size > n else 0
                raw[at : at + n] = rng.integers(0, 256, size=min(n, raw.size - at), dtype=np.uint8)
            case "value_replace":
                i = rng.choice(u.size, size=min(u.size, int(rng.integers(1, 4))), replace=False)
                u[i] = helpers.uview(helpers.random_tensor(rng, a.dtype, (i.size,), wild=True))
            case "value_copy":
                i, j = rng.integers(u.size, size=2)
                u[i] = u[j]
            case "block_swap":
                nb = -(-u.size // 64)
                if nb < 2:
                    continue
                b1, b2 = rng.choice(nb, size=2, replace=False)
                n = min(64, u.size - max(b1, b2) * 64)
                x = u[b1 * 64 : b1 * 64 + n].copy()
                u[b1 * 64 : b1 * 64 + n] = u[b2 * 64 : b2 * 64 + n]
                u[b2 * 64 : b2 * 64 + n] = x
            case "low_bits":  # rewrite the watermark bits with plausible random values
                i = int(rng.integers(u.size))
                u[i] ^= u.dtype.type(int(rng.integers(1, 256)) & ((1 << min(8, w)) - 1) or 1)
            case "sign_flip":
                i = int(rng.integers(u.size))
                u[i] ^= u.dtype.type(1) << u.dtype.type(w - 1)
        out[name] = helpers.from_uview(u, a)
        if not helpers.same_bytes(out[name], tensors[name]):
            return out, kind
        out[name] = tensors[name].copy()
    raise AssertionError("could not find a mutation that changes the model")


@pytest.mark.parametrize("chunk", range(4))
def test_mutation_fuzz_every_mutation_is_detected_and_located(
    sealed: paramseal.SealedModel, key: paramseal.Key, chunk: int
) -> None:
    """160 seeded random mutations: each is detected, in exactly the blocks it touched."""
    for seed in range(chunk * 40, chunk * 40 + 40):
        t, kind = _mutate(sealed.tensors, seed)
        truth = helpers.changed_blocks(t, sealed.tensors)
        r = paramseal.verify(t, key, sealed.header_json)
        assert r.status == "tampered", (seed, kind)
        assert r.exit_code in (1, 2)
        got = {n: set(f.tampered_blocks) for n, f in r.tensors.items()}
        assert got == truth, (seed, kind)
        assert sorted(r.tampered_tensors) == sorted(n for n, b in truth.items() if b)


def test_mutation_fuzz_recovery_of_small_mutations(sealed: paramseal.SealedModel, key: paramseal.Key) -> None:
    """A few changed values are always within capacity: recovery is bit-exact."""
    for seed in range(0, 200, 7):
        t, kind = _mutate(sealed.tensors, seed)
        res = paramseal.recover(t, key, sealed.header_json)
        assert res.report.status == "recovered", (seed, kind)
        helpers.assert_model_equal(res.tensors, sealed.tensors)
        helpers.assert_honest_recovery(res, t, sealed.tensors)


# --------------------------------------------------------------------------- localisation


def _attack(kind: str, s: dict[str, np.ndarray], seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    t = helpers.copy_model(s)
    match kind:
        case "bit_flips":
            for _ in range(8):
                name = ["embed.weight", "fc.weight", "norm.weight", "attn.weight", "ids"][int(rng.integers(5))]
                t = helpers.flip_bit(
                    t, name, int(rng.integers(t[name].size)), int(rng.integers(helpers.width(t[name].dtype)))
                )
        case "exponent_flips":  # the progressive bit-flip attack: most significant exponent bit of big weights
            w = t["embed.weight"].reshape(-1)
            top = np.argsort(-np.abs(w))[:10]
            w.view(np.uint32)[top] ^= np.uint32(1 << 30)
        case "row_overwrite":  # a backdoor written into two rows
            t["embed.weight"][7] = rng.standard_normal(48).astype(np.float32)
            t["fc.weight"][20] = 0.0
        case "tensor_replace":
            t["fc.bias"] = rng.standard_normal(40).astype(np.float32)
            t["norm.weight"] = np.ones(130, np.float16)
        case "gaussian_noise":
            a = t["fc.weight"]
            t["fc.weight"] = (a + rng.standard_normal(a.shape).astype(np.float32) * 1e-3).astype(np.float32)
        case "fine_tune_slice":
            t["embed.weight"][10:14] *= np.float32(1.01)
        case "pruning":
            a = t["fc.weight"].reshape(-1)
            a[np.argsort(np.abs(a))[: a.size // 20]] = 0.0
        case "quantize_roundtrip":
            t["attn.weight"] = t["attn.weight"].astype(np.float32).astype(np.float16).astype(t["attn.weight"].dtype)
            t["fc.bias"] = t["fc.bias"].astype(np.float16).astype(np.float32)
    return t


ATTACKS = [
    "bit_flips",
    "exponent_flips",
    "row_overwrite",
    "tensor_replace",
    "gaussian_noise",
    "fine_tune_slice",
    "pruning",
    "quantize_roundtrip",
]


def _precision_recall(found: set, truth: set) -> tuple[float, float]:
    tp = len(found & truth)
    return (tp / len(found) if found else 1.0), (tp / len(truth) if truth else 1.0)


@pytest.mark.parametrize("kind", ATTACKS)
def test_localisation_precision_and_recall(sealed: paramseal.SealedModel, key: paramseal.Key, kind: str) -> None:
    t = _attack(kind, sealed.tensors, seed=ATTACKS.index(kind))
    truth_blocks = {(n, b) for n, bs in helpers.changed_blocks(t, sealed.tensors).items() for b in bs}
    truth_values = {(n, int(i)) for n, idx in helpers.changed(t, sealed.tensors).items() for i in idx}
    assert truth_values, "the attack must change something"

    v = paramseal.verify(t, key, sealed.header_json)
    flagged = {(n, b) for n, f in v.tensors.items() for b in f.tampered_blocks}
    assert _precision_recall(flagged, truth_blocks) == (1.0, 1.0), kind

    res = paramseal.recover(t, key, sealed.header_json)
    helpers.assert_honest_recovery(res, t, sealed.tensors)
    if res.report.status == "recovered":
        restored = {(n, i) for n, f in res.report.tensors.items() for i in f.restored_indices}
        assert _precision_recall(restored, truth_values) == (1.0, 1.0), kind
    else:  # the whole of fc.weight (1320 values) under noise is beyond this small model's capacity
        assert kind in ("gaussian_noise", "pruning", "quantize_roundtrip"), kind
        lost = {(n, i) for n, f in res.report.tensors.items() for i in f.unrecoverable_indices}
        assert truth_values <= lost | {(n, i) for n, f in res.report.tensors.items() for i in f.restored_indices}


@pytest.mark.parametrize("kind", ["bit_flips", "exponent_flips", "row_overwrite", "tensor_replace", "fine_tune_slice"])
def test_attacks_within_capacity_are_recovered(sealed: paramseal.SealedModel, key: paramseal.Key, kind: str) -> None:
    t = _attack(kind, sealed.tensors, seed=ATTACKS.index(kind))
    res = paramseal.recover(t, key, sealed.header_json)
    assert res.report.status == "recovered"
    helpers.assert_model_equal(res.tensors, sealed.tensors)


# --------------------------------------------------------------------------- copy and swap attacks


def test_blocks_copied_from_another_model_sealed_with_the_same_key_are_detected(
    key: paramseal.Key, model: dict
) -> None:
    a = paramseal.seal(model, key)
    b = paramseal.seal(model, key)  # same weights, same key, another seal
    t = helpers.copy_model(a.tensors)
    t["embed.weight"].reshape(-1)[128:192] = b.tensors["embed.weight"].reshape(-1)[128:192]
    assert not helpers.same_bytes(t["embed.weight"], a.tensors["embed.weight"])
    r = paramseal.verify(t, key, a.header_json)
    assert r.tensors["embed.weight"].tampered_blocks == (2,)
    res = paramseal.recover(t, key, a.header_json)
    assert res.report.status == "recovered"
    helpers.assert_model_equal(res.tensors, a.tensors)


def test_whole_tensor_copied_from_another_seal_is_detected(key: paramseal.Key, model: dict) -> None:
    a = paramseal.seal(model, key)
    b = paramseal.seal(model, key)
    t = {**a.tensors, "fc.bias": b.tensors["fc.bias"]}
    r = paramseal.verify(t, key, a.header_json)
    assert r.tampered_tensors == ["fc.bias"] and r.tensors["fc.bias"].tampered_blocks == (0,)


def test_two_blocks_swapped_inside_a_tensor_are_detected_and_recovered(
    sealed: paramseal.SealedModel, key: paramseal.Key
) -> None:
    t = helpers.copy_model(sealed.tensors)
    u = t["embed.weight"].reshape(-1)
    x = u[0:64].copy()
    u[0:64] = u[640:704]
    u[640:704] = x
    r = paramseal.verify(t, key, sealed.header_json)
    assert r.tensors["embed.weight"].tampered_blocks == (0, 10)
    res = paramseal.recover(t, key, sealed.header_json)
    assert res.report.status == "recovered"
    helpers.assert_model_equal(res.tensors, sealed.tensors)


def test_block_copied_between_tensors_of_the_same_seal_is_detected(key: paramseal.Key) -> None:
    m = {"a": np.random.default_rng(0).standard_normal(640).astype(np.float32)}
    m["b"] = m["a"].copy()  # identical weights in two tensors
    s = paramseal.seal(m, key)
    t = {"a": s.tensors["a"], "b": s.tensors["b"].copy()}
    t["b"][:64] = s.tensors["a"][:64]
    r = paramseal.verify(t, key, s.header_json)
    assert r.tampered_tensors == ["b"] and r.tensors["b"].tampered_blocks == (0,)


# --------------------------------------------------------------------------- tensor table attacks


def _report(t: dict, s: paramseal.SealedModel, key: paramseal.Key) -> tuple[paramseal.Report, paramseal.RecoverResult]:
    return paramseal.verify(t, key, s.header_json), paramseal.recover(t, key, s.header_json)


def test_renamed_tensor_is_reported_and_recover_restores_the_name(
    sealed: paramseal.SealedModel, key: paramseal.Key
) -> None:
    t = helpers.copy_model(sealed.tensors)
    t["fc.weight.renamed"] = t.pop("fc.weight")
    v, res = _report(t, sealed, key)
    assert v.status == "tampered" and v.recoverable and v.exit_code == 1
    assert v.tampered_tensors == ["fc.weight"]
    assert any("renamed" in i and "fc.weight.renamed" in i for i in v.tensors["fc.weight"].issues)
    assert v.tensors["fc.weight"].tampered_blocks == ()
    assert v.extra_tensors == (), "a renamed tensor is not also an extra tensor"
    assert res.report.status == "recovered"
    helpers.assert_model_equal(res.tensors, sealed.tensors)


def test_renamed_and_tampered_tensor_is_located_and_recovered(
    sealed: paramseal.SealedModel, key: paramseal.Key
) -> None:
    t = helpers.flip_bit(sealed.tensors, "embed.weight", 200, 25)
    t["emb"] = t.pop("embed.weight")
    v, res = _report(t, sealed, key)
    assert any("renamed" in i for i in v.tensors["embed.weight"].issues)
    assert v.tensors["embed.weight"].tampered_blocks == (3,)
    assert res.report.status == "recovered"
    helpers.assert_model_equal(res.tensors, sealed.tensors)


def test_two_same_shape_tensors_swapped_are_reported_and_recovered(key: paramseal.Key) -> None:
    rng = np.random.default_rng(0)
    m = {
        "q.weight": rng.standard_normal((32, 32)).astype(np.float32),
        "k.weight": rng.standard_normal((32, 32)).astype(np.float32),
        "v.weight": rng.standard_normal((32, 32)).astype(np.float32),
    }
    s = paramseal.seal(m, key)
    t = {"q.weight": s.tensors["k.weight"], "k.weight": s.tensors["q.weight"], "v.weight": s.tensors["v.weight"]}
    v, res = _report(t, s, key)
    assert v.status == "tampered" and v.recoverable
    assert sorted(v.tampered_tensors) == ["k.weight", "q.weight"]
    assert any("swapped" in i and "'k.weight'" in i for i in v.tensors["q.weight"].issues)
    assert any("swapped" in i and "'q.weight'" in i for i in v.tensors["k.weight"].issues)
    assert res.report.status == "recovered"
    helpers.assert_model_equal(res.tensors, s.tensors)


def test_reshaped_tensor_same_numel_is_reported_and_recovered(
    sealed: paramseal.SealedModel, key: paramseal.Key
) -> None:
    t = helpers.copy_model(sealed.tensors)
    t["embed.weight"] = t["embed.weight"].reshape(48, 64)
    v, res = _report(t, sealed, key)
    assert v.status == "tampered" and v.tampered_tensors == ["embed.weight"]
    assert any("reshaped" in i and "[64, 48]" in i and "[48, 64]" in i for i in v.tensors["embed.weight"].issues)
    assert res.report.status == "recovered"
    assert res.tensors["embed.weight"].shape == (64, 48)
    helpers.assert_model_equal(res.tensors, sealed.tensors)


@pytest.mark.parametrize(
    "name, new_dtype", [("fc.bias", np.float64), ("norm.weight", np.float32), ("ids", np.int64), ("mask", np.uint8)]
)
def test_dtype_changed_is_reported_and_recovered(
    sealed: paramseal.SealedModel, key: paramseal.Key, name: str, new_dtype: type
) -> None:
    t = helpers.copy_model(sealed.tensors)
    t[name] = t[name].astype(new_dtype)
    v, res = _report(t, sealed, key)
    assert v.status == "tampered" and v.tampered_tensors == [name]
    assert any("dtype changed" in i for i in v.tensors[name].issues)
    assert res.report.status == "recovered"
    helpers.assert_model_equal(res.tensors, sealed.tensors)


@pytest.mark.parametrize("new_dtype", [np.int32, np.uint32])
def test_a_large_tensor_relabelled_as_another_dtype_of_its_width_is_recovered_from_its_own_bytes(
    sealed: paramseal.SealedModel, key: paramseal.Key, new_dtype: type
) -> None:
    """F32 marked I32 (a header edit) keeps every byte: the tags decide, not the tensor's share of the capacity."""
    t = helpers.copy_model(sealed.tensors)
    assert t["embed.weight"].size > sum(a.size for a in t.values()) / 3  # far past what the code could rebuild
    t["embed.weight"] = t["embed.weight"].view(new_dtype)
    v, res = _report(t, sealed, key)
    assert v.status == "tampered" and v.recoverable and v.tampered_tensors == ["embed.weight"]
    assert any("dtype changed from F32" in i for i in v.tensors["embed.weight"].issues)
    assert v.tensors["embed.weight"].tampered_blocks == ()
    assert res.report.status == "recovered" and res.report.restored_count == 0
    helpers.assert_model_equal(res.tensors, sealed.tensors)


def _half_model(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "a": rng.standard_normal((40, 50)).astype(np.float16),
        "b": rng.standard_normal(300).astype(np.float16),
        "steps": np.arange(6, dtype=np.int64),
    }


@pytest.mark.parametrize("converted", ["all", "all but one"])
def test_a_whole_model_converted_to_another_float_dtype_gets_one_note_saying_how_to_undo_it(
    key: paramseal.Key, converted: str
) -> None:
    """model.float() after sealing an F16 model: the findings, one note with the fix; recover narrows it back.

    Widening keeps every value: each tensor is checked narrowed back (bit for bit), so its blocks verify and
    recover returns the sealed model (exit 1 and 0, not 2 with every block failed).
    """
    s = paramseal.seal(_half_model(1), key)
    t = helpers.copy_model(s.tensors)
    for name in ["a", "b"] if converted == "all" else ["a"]:
        t[name] = t[name].astype(np.float32)
    v, res = _report(t, s, key)
    assert v.exit_code == 1 and v.tensors["a"].issues == ("dtype changed from F16 to F32",)
    assert v.tensors["a"].tampered_blocks == () and v.recoverable
    assert res.report.status == "recovered" and res.report.exit_code == 0 and res.report.restored_count == 0
    helpers.assert_model_equal(res.tensors, s.tensors)
    note = [n for n in v.notes if "converted" in n]
    if converted == "all but one":  # not a conversion of the model: the findings say it all
        assert note == []
        return
    assert note == [n for n in res.report.notes if "converted" in n]
    assert (
        len(note) == 1
        and "converted from F16 to F32" in note[0]
        and "each narrows back to F16 exactly (checked bit for bit)" in note[0]
        and "recover writes it back as F16" in note[0]
        and "a module: .half()" in note[0]
    )
    back = {n: a.astype(np.float16) if a.dtype == np.float32 else a for n, a in t.items()}  # as the note says
    assert paramseal.verify(back, key, s.header_json).status == "intact"


def test_a_whole_model_converted_to_a_narrower_float_dtype_is_noted_as_lost(key: paramseal.Key) -> None:
    s = paramseal.seal(
        {n: a.astype(np.float32) if a.dtype == np.float16 else a for n, a in _half_model(2).items()}, key
    )
    t = {n: a.astype(np.float16) if a.dtype == np.float32 else a for n, a in s.tensors.items()}
    v = paramseal.verify(t, key, s.header_json)
    assert v.exit_code == 2
    note = [n for n in v.notes if "converted" in n]
    assert len(note) == 1 and "from F32 to F16, which drops low mantissa bits" in note[0] and "kept copy" in note[0]


@pytest.mark.parametrize("step", [1.0, 1.25])
def test_a_widened_model_changed_after_the_conversion_counts_what_no_longer_narrows_back(
    key: paramseal.Key, step: float
) -> None:
    """Values of a widened tensor its sealed dtype cannot hold were changed since: counted, read rounded, and the
    tags judge them. Rounded back onto the sealed value (one F32 step, below F16's) they verify; else their
    blocks are rebuilt within capacity, and past it recover says so and returns no whole model."""
    s = paramseal.seal(_half_model(1), key)
    t = {n: a.astype(np.float32) if a.dtype == np.float16 else a for n, a in s.tensors.items()}
    b = t["b"].reshape(-1)  # 3 values, one block: one F32 step past (a value F16 cannot hold), scaled or not
    b[:3] = np.nextafter(b[:3] * np.float32(step), np.float32(np.inf))
    v, res = _report(t, s, key)
    off = [i for i in v.tensors["b"].issues if "not representable in F16" in i]
    assert len(off) == 1 and off[0].startswith("3 value(s) not representable in F16, so not sealed values widened")
    assert len(v.tensors["b"].tampered_blocks) == (0 if step == 1.0 else 1)
    assert "no longer narrow back to F16 exactly" in " ".join(v.notes)
    assert res.report.status == "recovered"
    helpers.assert_model_equal(res.tensors, s.tensors)
    t["a"].reshape(-1)[::2] *= np.float32(1.25)  # past the capacity
    v, res = _report(t, s, key)
    assert v.exit_code == res.report.exit_code == 2 and res.report.status == "unrecoverable"
    assert res.report.unrecoverable_count > 0


def test_a_relabelled_tensor_whose_bytes_changed_too_is_still_tampered_there(
    sealed: paramseal.SealedModel, key: paramseal.Key
) -> None:
    t = helpers.copy_model(sealed.tensors)
    bad = t["fc.weight"].view(np.int32).copy()
    bad.reshape(-1)[100] ^= 1 << 20
    t["fc.weight"] = bad
    v, res = _report(t, sealed, key)
    assert v.tensors["fc.weight"].tampered_blocks == (100 // 64,)
    assert res.report.status == "recovered"
    helpers.assert_model_equal(res.tensors, sealed.tensors)


def test_small_tensor_removed_is_reported_and_recovered(sealed: paramseal.SealedModel, key: paramseal.Key) -> None:
    t = helpers.copy_model(sealed.tensors)
    del t["fc.bias"]
    v, res = _report(t, sealed, key)
    assert v.status == "tampered" and v.recoverable
    assert v.tampered_tensors == ["fc.bias"] and "missing" in v.tensors["fc.bias"].issues
    assert res.report.status == "recovered"
    helpers.assert_model_equal(res.tensors, sealed.tensors)


def test_large_tensor_removed_is_unrecoverable_and_named(sealed: paramseal.SealedModel, key: paramseal.Key) -> None:
    t = helpers.copy_model(sealed.tensors)
    del t["embed.weight"]  # about 45% of the model
    v, res = _report(t, sealed, key)
    assert v.status == "tampered" and not v.recoverable and v.exit_code == 2
    assert res.report.status == "unrecoverable" and res.report.exit_code == 2
    assert set(res.report.tensors["embed.weight"].unrecoverable_indices) == set(range(64 * 48))


def test_added_tensor_is_reported_as_extra_and_dropped_by_recover(
    sealed: paramseal.SealedModel, key: paramseal.Key
) -> None:
    t = {**sealed.tensors, "backdoor.weight": np.ones((4, 4), np.float32)}
    v, res = _report(t, sealed, key)
    assert v.status == "tampered" and v.recoverable and v.exit_code == 1
    assert v.extra_tensors == ("backdoor.weight",)
    assert "backdoor.weight" in v.summary()
    assert res.report.status == "recovered"
    assert "backdoor.weight" not in res.tensors
    helpers.assert_model_equal(res.tensors, sealed.tensors)


def test_a_tampered_tensor_beside_an_intact_copy_of_it_is_located_not_taken_as_renamed(
    sealed: paramseal.SealedModel, key: paramseal.Key
) -> None:
    """A copy of a tensor added under a new name, then the original edited: the edit is located in the
    original and the copy is an extra tensor (rename matching is for tensors whose own data is gone)."""
    t = helpers.flip_bit(sealed.tensors, "embed.weight", 200, 25)
    t["embed.copy"] = sealed.tensors["embed.weight"].copy()
    v, res = _report(t, sealed, key)
    assert v.status == "tampered"
    assert v.tensors["embed.weight"].tampered_blocks == (3,)
    assert v.tensors["embed.weight"].issues == ()
    assert v.extra_tensors == ("embed.copy",)
    assert res.report.status == "recovered"
    helpers.assert_model_equal(res.tensors, sealed.tensors)


def test_removed_and_reinserted_under_another_shape_is_detected(
    sealed: paramseal.SealedModel, key: paramseal.Key
) -> None:
    t = helpers.copy_model(sealed.tensors)
    t["fc.bias"] = np.zeros(41, np.float32)
    v, res = _report(t, sealed, key)
    assert v.status == "tampered" and any("shape changed" in i for i in v.tensors["fc.bias"].issues)
    assert res.report.status == "recovered"
    helpers.assert_model_equal(res.tensors, sealed.tensors)


def test_an_unrelated_extra_tensor_is_not_taken_for_an_overwritten_one(key: paramseal.Key) -> None:
    """A tensor whose data was overwritten stays wholly tampered; an extra tensor of its size whose blocks do not
    verify under its name is an extra tensor, not where it was "renamed to"."""
    rng = np.random.default_rng(1)
    w = {n: helpers.random_tensor(rng, np.float32, (64, 64)) for n in ("a", "b")}
    sealed = paramseal.seal(w, key)
    t = helpers.copy_model(sealed.tensors)
    t["a"] = helpers.random_tensor(rng, np.float32, (64, 64))
    t["x"] = helpers.random_tensor(rng, np.float32, (64, 64))
    v = paramseal.verify(t, key, sealed.header_json)
    assert v.status == "tampered" and v.extra_tensors == ("x",)
    assert v.tensors["a"].issues == () and len(v.tensors["a"].tampered_blocks) == sealed.header.tensors[0].nblocks
    assert v.tensors["b"].tampered_blocks == () and v.tensors["b"].issues == ()


def test_another_seals_record_over_a_renamed_tensor_does_not_hide_it(key: paramseal.Key) -> None:
    """A record from another seal (another salt) pasted over a renamed tensor's first block names another
    tensor: it is not this seal's, so the tensor is still matched by its tags (renamed, block 0 tampered)."""
    rng = np.random.default_rng(2)
    w = {n: helpers.random_tensor(rng, np.float32, (64, 64)) for n in ("a", "b")}
    sealed, other = paramseal.seal(w, key), paramseal.seal(w, key)
    spec = sealed.header.tensors[0]
    assert spec.reserved == 1 and sealed.header.salt != other.header.salt
    x = sealed.tensors["a"].copy().reshape(-1)
    x[: spec.reserved * 64] = other.tensors["b"].reshape(-1)[: spec.reserved * 64]  # that seal's record of tensor 1
    t = {"b": sealed.tensors["b"], "x": x.reshape(64, 64)}
    v = paramseal.verify(t, key, sealed.header_json)
    assert v.extra_tensors == () and v.tensors["a"].issues == ("renamed to 'x'",)
    assert v.tensors["a"].tampered_blocks == (0,) and v.tensors["b"].tampered_blocks == ()

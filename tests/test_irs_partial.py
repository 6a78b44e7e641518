"""irs4 past its reach in one group: what stays unknown is named value by value, not block by block.

A failed group leaves its words in failed blocks unknown, and the tag bits of those blocks (the tag is
not part of the code). The other values of those blocks were corrected by their own groups, which
decoded: they are restored, and the blocks stay tampered (their tags still fail).
"""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import helpers
import numpy as np
import pytest
import safetensors.numpy as stn

import paramseal
from paramseal import _irs_recover, cli
from paramseal.recover import plan_recovery
from paramseal.verify import check

SALT = bytes([34]) + bytes(15)  # under the test key, this damage leaves exactly one group past its reach


def _model_and_damage(
    monkeypatch: pytest.MonkeyPatch, key: paramseal.Key
) -> tuple[paramseal.SealedModel, dict[str, np.ndarray]]:
    """Two fp32 tensors of 8,500 values (no outer code at this size), 12% of their values replaced at random."""
    helpers.pin_salt(monkeypatch, SALT)
    s = paramseal.seal(helpers.fp32_model(17_000, seed=0, tensors=2), key)
    bad = helpers.copy_model(s.tensors)
    rng = np.random.default_rng(1)
    for n in bad:
        flat = bad[n].reshape(-1).view(np.uint32)
        at = rng.choice(flat.size, int(0.12 * flat.size), replace=False)
        flat[at] = rng.integers(0, 1 << 32, at.size, dtype=np.uint64).astype(np.uint32)
    return s, bad


def _differs(a: np.ndarray, b: np.ndarray) -> set[int]:
    return set(np.flatnonzero(a.reshape(-1).view(np.uint32) != b.reshape(-1).view(np.uint32)).tolist())


def test_one_failed_group_names_its_words_and_block_tags_not_whole_blocks(
    monkeypatch: pytest.MonkeyPatch, key: paramseal.Key
) -> None:
    s, bad = _model_and_damage(monkeypatch, key)
    st = _irs_recover.strata_of(check(bad, key, s.header_json))
    assert not st.host
    assert _irs_recover.decode_check(check(bad, key, s.header_json), rebuild=False).failed_groups == 1
    res = paramseal.recover(bad, key, s.header_json)
    rep = res.report
    assert rep.status == "unrecoverable" and rep.exit_code == 2
    helpers.assert_honest_recovery(res, bad, s.tensors)  # every value not named is as sealed
    blocks = sum(len(f.unrecoverable_blocks) for f in rep.tensors.values())
    # at most the group's 255 words and the 4 tag-holding values of each of its failed blocks; whole blocks were
    # 64 values each (13,824 of them in README's example)
    assert blocks > 100 and rep.unrecoverable_count <= 255 + 4 * blocks, (blocks, rep.unrecoverable_count)
    for n, f in rep.tensors.items():
        truth = _differs(bad[n], s.tensors[n])
        # every changed value outside what is named was restored
        assert truth - set(f.unrecoverable_indices) == set(f.restored_indices), n


def test_a_partial_output_differs_from_the_seal_only_where_the_report_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, key: paramseal.Key, capsys: pytest.CaptureFixture[str]
) -> None:
    """recover --allow-partial --json: the values named unrecoverable cover every value of the written file
    that differs from the sealed one, the restored ones are all exact, and the file verifies as 2."""
    s, bad = _model_and_damage(monkeypatch, key)
    src, out = tmp_path / "in.safetensors", tmp_path / "out.safetensors"
    stn.save_file(bad, str(src), metadata={paramseal.header.METADATA_KEY: s.header_json})
    kf = paramseal.write_key(tmp_path / "k.key", key)
    argv = ["recover", str(src), str(out), "--key", str(kf), "--json"]
    assert cli.main(argv) == 2 and not out.exists()  # without --allow-partial nothing is written
    capsys.readouterr()
    assert cli.main([*argv, "--allow-partial"]) == 2
    report = json.loads(capsys.readouterr().out)
    written = stn.load_file(str(out))
    named_total = 0
    for n, sealed in s.tensors.items():
        entry = report["tensors"][n]
        named = {i for lo, hi in entry["unrecoverable_ranges"] for i in range(lo, hi)}
        named_total += len(named)
        differs = _differs(written[n], sealed)
        assert differs <= named, n
        assert differs, n  # the failed group's damage is still there, and named
        restored = set(entry["restored"]["indices"])
        assert not restored & named and restored == _differs(bad[n], sealed) - named, n
    assert named_total == report["unrecoverable_parameters"] < 2_000
    assert cli.main(["verify", str(out), "--key", str(kf)]) == 2


def test_a_partly_decoded_block_whose_tag_then_holds_is_restored_whole(
    monkeypatch: pytest.MonkeyPatch, key: paramseal.Key
) -> None:
    """Most blocks holding a word of the failed group hold it intact: their damage lay in the decoded groups'
    words, and once those are corrected the tag the block was found with holds. They are sealed bytes again, so
    verify of the output finds them intact: the report must not name them (nor any value in them)."""
    s, bad = _model_and_damage(monkeypatch, key)
    res = paramseal.recover(bad, key, s.header_json)
    again = paramseal.verify(res.tensors, key, s.header_json)
    assert res.report.status == "unrecoverable" and again.status == "tampered"
    for n, f in res.report.tensors.items():
        named = set(f.unrecoverable_blocks)
        assert named == set(again.tensors[n].tampered_blocks), n
        out, sealed = helpers.uview(res.tensors[n]).reshape(-1), helpers.uview(s.tensors[n]).reshape(-1)
        assert all((out[b * 64 : b * 64 + 64] != sealed[b * 64 : b * 64 + 64]).any() for b in named), n
    helpers.assert_honest_recovery(res, bad, s.tensors)


def test_rebuilt_and_partly_decoded_blocks_are_written_from_one_array_not_a_merged_copy(
    monkeypatch: pytest.MonkeyPatch, key: paramseal.Key
) -> None:
    """Past reach, a tensor's rebuilt blocks and its partly decoded ones were decoded into two arrays and merged
    into a third for the output: under scattered damage both together are the model's size, so the copy took
    another model's worth at the peak (a 256 MiB fp32 model at 15%: 967 MiB against 790-810 MiB without it)."""
    s, bad = _model_and_damage(monkeypatch, key)
    chk = check(bad, key, s.header_json)
    out = chk.irs_outcome()  # decoded first: what plan_recovery keeps besides is the report
    tracemalloc.start()
    try:
        rec = plan_recovery(chk)
        kept = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert rec.report.status == "unrecoverable" and set(rec.patches) == set(out.partly) == {0, 1}
    written = 0
    for t, p in rec.patches.items():
        assert out.partly[t].any() and not out.partly[t].all()  # both kinds of block in one tensor
        assert p.new is out.patches[t].new and np.all(np.diff(p.rows) > 0)  # decoding's array, in block order
        written += p.new.nbytes
    assert written >= 0.9 * sum(a.nbytes for a in bad.values())  # nearly every block is written
    assert kept < written, (kept, written)  # the report only: no copy of the blocks written

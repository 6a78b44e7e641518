"""Out-of-core file operations: streamed results equal in-memory ones, chunking is exact, memory stays bounded."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
import textwrap
import weakref
from collections.abc import Iterator
from pathlib import Path

import helpers
import numpy as np
import pytest
import safetensors.numpy as stn

import paramseal
from paramseal import _pages, _patch, _recover_file, files
from paramseal.errors import InputError
from paramseal.header import METADATA_KEY

META = {"author": "tests", "license": "apache-2.0"}
SALT = bytes(range(16))


@pytest.fixture()
def fixed_salt(monkeypatch: pytest.MonkeyPatch) -> None:
    """Both paths draw the salt from os.urandom(16): pin it so their outputs can be compared byte for byte."""
    real = os.urandom
    monkeypatch.setattr(os, "urandom", lambda n: SALT if n == 16 else real(n))


@pytest.fixture()
def tiny_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunks of a few blocks and an on-disk lane store even for a small model: every chunk edge is exercised."""
    monkeypatch.setattr(_pages, "CHUNK_BYTES", 4096)
    monkeypatch.setenv("PARAMSEAL_SCRATCH_MIB", "0")


def _sealed(tmp_path: Path, model: dict, key: paramseal.Key) -> tuple[Path, dict, dict[str, str]]:
    """Seal ``model`` file to file; the sealed path, its tensors and its metadata."""
    sealed = tmp_path / "s.safetensors"
    files.seal_file(helpers.write_st(tmp_path / "m.safetensors", model, META), sealed, key)
    t, meta = helpers.read_st(sealed)
    return sealed, t, meta


def _room(path: Path) -> int:
    """A safetensors file's header length (its first 8 bytes): the room the seal recorded."""
    return int.from_bytes(path.read_bytes()[:8], "little")


def _in_memory(tensors: dict, key: paramseal.Key, sealed_file: Path) -> paramseal.SealedModel:
    """The in-memory seal of ``tensors`` recording the header room that ``sealed_file`` was written with."""
    return paramseal.SealConfig().seal(tensors, key, metadata=META, st_room=_room(sealed_file))


def _edited_copy(sealed: Path, dst: Path, flips: list[tuple[str, int, int]], meta: dict[str, str]) -> Path:
    """``sealed`` with bits flipped in place (tensor, flat index, bit) and ``meta`` in its header, same room."""
    raw = bytearray(sealed.read_bytes())
    n = _room(sealed)
    head = json.loads(raw[8 : 8 + n])
    for name, index, bit in flips:
        e = head[name]
        item = {"F64": 8, "F32": 4, "I64": 8, "F16": 2, "BF16": 2}[e["dtype"]]
        raw[8 + n + e["data_offsets"][0] + index * item + bit // 8] ^= 1 << (bit % 8)
    head["__metadata__"] = meta
    text = json.dumps(head, separators=(",", ":")).encode()
    assert len(text) <= n
    raw[8 : 8 + n] = text.ljust(n)
    dst.write_bytes(bytes(raw))
    return dst


def _streamed_equals_in_memory(tmp_path: Path, model: dict, key: paramseal.Key) -> None:
    src = helpers.write_st(tmp_path / "m.safetensors", model, META)
    out = tmp_path / "s.safetensors"
    sealed_file = files.seal_file(src, out, key)
    in_file_order = files.read_model(src).tensors  # the seal's tensor table follows the file's order
    in_memory = _in_memory(in_file_order, key, out)
    got, meta = helpers.read_st(out)  # read back by the safetensors library
    helpers.assert_model_equal(got, in_memory.tensors)
    assert meta[METADATA_KEY] == in_memory.header_json == sealed_file.header_json
    assert {k: v for k, v in meta.items() if k != METADATA_KEY} == META


def test_streamed_seal_is_byte_identical_to_the_in_memory_seal(
    tmp_path: Path, model: dict, key: paramseal.Key, fixed_salt: None
) -> None:
    _streamed_equals_in_memory(tmp_path, model, key)


def test_chunked_seal_is_byte_identical_to_the_unchunked_seal(
    tmp_path: Path, key: paramseal.Key, fixed_salt: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(3)
    model = {
        "a": helpers.random_tensor(rng, np.float32, (3000, 7)),  # not a multiple of 64 values
        "b": helpers.random_tensor(rng, helpers.BF16, (8192,)),
        "c": helpers.random_tensor(rng, np.float16, (77, 64)),
        "ids": np.arange(1000, dtype=np.int64),
    }
    src = helpers.write_st(tmp_path / "m.safetensors", model, META)
    monkeypatch.setattr(_pages, "CHUNK_BYTES", 4096)
    for budget in ("0", "1024"):  # lane stores on disk, then in memory
        monkeypatch.setenv("PARAMSEAL_SCRATCH_MIB", budget)
        out = tmp_path / f"s{budget}.safetensors"
        files.seal_file(src, out, key)
        in_memory = _in_memory(files.read_model(src).tensors, key, out)
        got, meta = helpers.read_st(out)
        helpers.assert_model_equal(got, in_memory.tensors)
        assert meta[METADATA_KEY] == in_memory.header_json
        assert not list(tmp_path.glob(".paramseal-*")), "the on-disk lane store must be removed"


def test_the_scratch_budget_decides_where_lane_stores_live(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARAMSEAL_SCRATCH_MIB", "40")
    ws = _pages.Workspace(tmp_path)
    assert ws.budget == 40 << 20
    first = ws.lanes_array(1 << 20, 8)  # 32 MiB: fits
    second = ws.lanes_array(1 << 20, 8)  # another 32 MiB: over the budget, so on disk
    small = ws.lanes_array(16, 8)  # under a chunk: always in memory
    assert not _pages.is_mapped(first) and _pages.is_mapped(second) and not _pages.is_mapped(small)
    assert list(tmp_path.glob(".paramseal-*/scratch0"))
    ws.close()
    assert not list(tmp_path.glob(".paramseal-*"))
    monkeypatch.delenv("PARAMSEAL_SCRATCH_MIB")
    assert _pages.scratch_budget() == _pages.DEFAULT_SCRATCH_MIB << 20


@pytest.mark.parametrize("raw", ["not a number", "0MB", "-5", "1.5"])
def test_a_scratch_budget_that_is_no_whole_number_of_mib_is_refused(
    tmp_path: Path, model_file: Path, key_file: Path, monkeypatch: pytest.MonkeyPatch, raw: str
) -> None:
    """It passed as the 1 GiB default: '0MB', meant to keep scratch on disk, kept it in memory."""
    sealed = tmp_path / "s.safetensors"
    assert helpers.run_cli(["seal", model_file, sealed, "--key", key_file])[0] == 0
    monkeypatch.setenv("PARAMSEAL_SCRATCH_MIB", raw)
    rc, _, err = helpers.run_cli(["seal", model_file, tmp_path / "o.safetensors", "--key", key_file])
    assert rc == 3 and f"PARAMSEAL_SCRATCH_MIB={raw!r} is not a setting" in err, err
    assert not (tmp_path / "o.safetensors").exists()
    # refused before any work, whether this model needs scratch or not (an intact verify needs none)
    rc, _, err = helpers.run_cli(["verify", sealed, "--key", key_file])
    assert rc == 3 and f"PARAMSEAL_SCRATCH_MIB={raw!r} is not a setting" in err, err


def test_chunked_verify_and_recover_locate_and_restore_exactly(
    tmp_path: Path, model: dict, key: paramseal.Key, tiny_chunks: None
) -> None:
    sealed, t, meta = _sealed(tmp_path, model, key)
    bad = helpers.flip_bit(t, "embed.weight", 1000, 30)
    bad = helpers.flip_bit(bad, "fc.weight", 5, 3)
    bad["fc.bias"] = bad["fc.bias"] * 0  # a whole small tensor
    p = helpers.write_st(tmp_path / "bad.safetensors", bad, meta)
    rep = files.verify_file(p, key)
    assert rep.tensors["embed.weight"].tampered_blocks == (1000 // 64,)
    assert rep.tensors["fc.weight"].tampered_blocks == (0,)
    assert rep.tensors["fc.bias"].tampered_blocks
    res = files.recover_file(p, tmp_path / "fixed.safetensors", key)
    assert res.report.status == "recovered"
    got, got_meta = helpers.read_st(tmp_path / "fixed.safetensors")
    helpers.assert_model_equal(got, t)
    assert got_meta == meta


def test_partial_verification_checks_only_the_selected_tensors(
    tmp_path: Path, model: dict, key: paramseal.Key, key_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sealed, t, meta = _sealed(tmp_path, model, key)
    p = helpers.write_st(tmp_path / "bad.safetensors", helpers.flip_bit(t, "fc.weight", 7, 2), meta)
    import importlib

    v = importlib.import_module("paramseal.verify")
    seen: list[str] = []
    real = v._tags_ok
    monkeypatch.setattr(v, "_tags_ok", lambda mac, h, i, spec, ub: seen.append(spec.name) or real(mac, h, i, spec, ub))
    rep = files.verify_file(p, key, tensors="embed.*")
    assert rep.status == "intact" and seen == ["embed.weight"]  # fc.weight was never hashed
    assert any("partial verification: 1 of" in n for n in rep.notes)
    rc, out, _ = helpers.run_cli(["verify", p, "--key", key_file, "--tensors", "fc.*", "--json"])
    assert rc == 1 and json.loads(out)["tampered_tensors"] == ["fc.weight"]
    rc, _, err = helpers.run_cli(["verify", p, "--key", key_file, "--tensors", "nothing*"])
    assert rc == 3 and "matches none" in err
    # the headline counts the blocks checked, and does not read as the whole file being intact
    embed = -(-t["embed.weight"].size // 64)
    assert rep.checked_blocks == embed < rep.total_blocks and rep.partial
    rc, out, _ = helpers.run_cli(["verify", p, "--key", key_file, "--tensors", "embed.*"])
    assert rc == 0 and f"({embed} of {rep.total_blocks} blocks verified; the rest was not checked)" in out
    assert "is intact" not in out
    rc, out, _ = helpers.run_cli(["verify", p, "--key", key_file, "--tensors", "embed.*", "--json"])
    assert json.loads(out)["checked_blocks"] == embed
    whole = files.verify_file(sealed, key)
    assert not whole.partial and whole.to_dict()["checked_blocks"] == whole.total_blocks


def test_a_partial_verify_does_not_promise_what_the_tensors_it_skipped_may_deny(
    tmp_path: Path, model: dict, key: paramseal.Key, key_file: Path
) -> None:
    """verify --tensors treats the tensors it does not read as intact: with one bit flipped in fc.weight and the
    rest of the model replaced, it said 'tampered with (recoverable: run 'paramseal recover')' (exit 1) where a
    full verify says exit 2 and recover writes nothing. Its exit stays 1 (what it read is recoverable), but it
    now says the judgement covers the tensors read, and a note (in --json too) says a full verify decides."""
    _, t, meta = _sealed(tmp_path, model, key)
    rng = np.random.default_rng(5)
    bad = helpers.flip_bit(t, "fc.weight", 7, 2)
    for name, a in bad.items():
        if name != "fc.weight":
            bad[name] = rng.integers(0, 256, a.nbytes, dtype=np.uint8).view(a.dtype).reshape(a.shape)
    p = helpers.write_st(tmp_path / "bad.safetensors", bad, meta)
    assert helpers.run_cli(["verify", p, "--key", key_file])[0] == 2
    rc, out, err = helpers.run_cli(["verify", p, "--key", key_file, "--tensors", "fc.weight"])
    assert rc == 1 and "run 'paramseal recover'" not in out, (out, err)
    assert "recoverable as far as the tensors checked show" in out, out
    rc, out, _ = helpers.run_cli(["verify", p, "--key", key_file, "--tensors", "fc.weight", "--json"])
    notes = json.loads(out)["notes"]
    assert rc == 1 and any("a full verify" in n and "not read count as intact" in n for n in notes), notes


def test_partial_verification_names_the_added_tensors_its_pattern_covers_and_no_others(
    tmp_path: Path, model: dict, key: paramseal.Key
) -> None:
    """A partial report speaks for the tensors its pattern covers: one added outside it is left to a full verify."""
    _, t, meta = _sealed(tmp_path, model, key)
    p = helpers.write_st(tmp_path / "added.safetensors", {**t, "fc.extra": np.ones(64, np.float32)}, meta)
    assert files.verify_file(p, key).extra_tensors == ("fc.extra",)
    rep = files.verify_file(p, key, tensors="fc.*")
    assert rep.status == "tampered" and rep.extra_tensors == ("fc.extra",) and rep.partial
    rep = files.verify_file(p, key, tensors="embed.*")
    assert rep.status == "intact" and rep.extra_tensors == () and rep.partial


_RSS_WORKER = textwrap.dedent(
    """
    import json, os, sys, resource
    # One core, before paramseal is imported: tasks in flight (one per core, up to four) each hold a
    # superblock, and how many overlap at the peak depends on the cores and on scheduling. Alone,
    # the peak is the same on every run and machine; concurrency adds a fixed amount per core.
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    import numpy as np
    from pathlib import Path
    from paramseal import Key, files
    def rss():
        return int(open('/proc/self/status').read().split('VmRSS:')[1].split()[0]) // 1024
    op, src, dst = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    key = Key(bytes.fromhex(os.environ["K"]))
    files.verify_file(Path(os.environ["WARM"]), key)  # imports and compiled kernels loaded: the baseline
    if os.environ.get("WARM_BAD"):  # and the decoder's, which are numba kernels on a CPU without GFNI
        bad = Path(os.environ["WARM_BAD"])
        files.recover_file(bad, bad.with_suffix(".out.safetensors"), key)
    base = rss()
    if op == "seal":
        files.seal_file(src, dst, key)
    elif op == "verify":
        files.verify_file(src, key)
    elif op == "in-place":
        files.recover_file(src, dst, key, in_place=True)
    else:
        files.recover_file(src, dst, key)
    peak = int(open('/proc/self/status').read().split('VmHWM:')[1].split()[0]) // 1024
    print(json.dumps({"base": base, "peak": peak}))
    """
)


def _rss_of(script: Path, env: dict[str, str], op: str, a: Path, b: Path) -> dict[str, int]:
    """``_RSS_WORKER``'s baseline and peak (MiB) for one operation in a fresh process."""
    argv = [sys.executable, str(script), op, str(a), str(b)]
    out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=900, check=True)
    r: dict[str, int] = json.loads(out.stdout.strip().splitlines()[-1])
    return r


def _growth(tmp_path: Path, key: paramseal.Key, ntensors: int) -> dict[str, int]:
    """Resident-memory growth (MiB) of seal, verify and recover on a model of ``ntensors`` 32 MiB tensors."""
    rng = np.random.default_rng(ntensors)
    n = 8 << 20
    folder = tmp_path / f"m{ntensors}"
    folder.mkdir()
    src = folder / "m.safetensors"
    stn.save_file(
        {f"l{i}.weight": (rng.standard_normal(n) * 0.02).astype(np.float32) for i in range(ntensors)}, str(src)
    )
    warm = folder / "warm.safetensors"
    files.seal_file(helpers.write_st(folder / "w.safetensors", {"w": np.ones(1 << 16, np.float32)}), warm, key)
    # no scratch budget: the lane stores stream through disk, as for a model too big for memory
    env = {**os.environ, "K": key.secret.hex(), "WARM": str(warm), "PARAMSEAL_SCRATCH_MIB": "0"}
    script = folder / "worker.py"
    script.write_text(_RSS_WORKER)
    sealed, bad = folder / "s.safetensors", folder / "bad.safetensors"

    def run(op: str, a: Path, b: Path) -> int:
        r = _rss_of(script, env, op, a, b)
        # the bound: peak RSS below the largest tensor (32 MiB) plus 512 MiB
        assert r["peak"] < 32 + 512, (op, ntensors, r)
        return int(r["peak"] - r["base"])

    grew = {"seal": run("seal", src, sealed)}
    src.unlink()  # the suite's disk use: this test's files were its largest (2 GB)
    t, meta = helpers.read_st(sealed)
    t["l1.weight"][: 1 << 18] = 0  # a contiguous run: every lane is damaged
    helpers.write_st(bad, t, meta)
    del t
    grew["verify"] = run("verify", sealed, sealed)
    grew["recover"] = run("recover", bad, folder / "fixed.safetensors")
    assert files.verify_file(folder / "fixed.safetensors", key).status == "intact"
    shutil.rmtree(folder)
    return grew


def test_file_operations_use_memory_that_does_not_grow_with_the_model(tmp_path: Path, key: paramseal.Key) -> None:
    """96 MiB and 384 MiB models with the same largest tensor: the in-memory engine grew RSS by 2-4x the file;
    streaming grows it by about the same fixed amount for both."""
    small, large = _growth(tmp_path, key, 3), _growth(tmp_path, key, 12)
    for op in small:
        assert large[op] - small[op] < 96, f"{op}: grew {small[op]} MiB at 96 MiB but {large[op]} MiB at 384 MiB"


def test_the_reserved_header_room_holds_any_offsets() -> None:
    """A 14 GiB checkpoint's offsets have 11 digits: the room reserved before writing must still hold them."""
    from paramseal.formats.safetensors import Entry, header_json, header_room

    entries = [(f"layer.{i}.weight", "F32", (4096, 4096)) for i in range(300)]
    meta = {"format": "pt", "paramseal": "x" * 1000}
    room = header_room(entries, meta)
    size = 4096 * 4096 * 4
    for base in (0, 10**9, 10**12, 10**15):
        actual = [Entry(n, dt, sh, base + i * size, base + (i + 1) * size) for i, (n, dt, sh) in enumerate(entries)]
        assert len(header_json(actual, meta)) <= room, base


def test_recover_writes_the_same_model_by_every_output_path(
    tmp_path: Path, model: dict, key: paramseal.Key, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three ways to write a recovered safetensors file must agree: patch a copy of the input made while
    verify runs; copy tensor by tensor in the kernel; rewrite every chunk."""
    from paramseal.formats import safetensors as st_format

    sealed, t, meta = _sealed(tmp_path, model, key)
    flips = [("embed.weight", 1000, 30), ("fc.weight", 5, 3)]
    p = _edited_copy(sealed, tmp_path / "bad.safetensors", flips, {**meta, "note": "added after sealing"})
    calls: dict[str, int] = {"files": 0, "st": 0}

    def spy(where: str, real: object) -> object:
        def wrapped(*a: int) -> bool:
            calls[where] += 1
            return real(*a)  # type: ignore[operator]

        return wrapped

    monkeypatch.setattr(_patch, "copy_range", spy("files", _patch.copy_range))
    monkeypatch.setattr(st_format, "copy_range", spy("st", st_format.copy_range))
    files.recover_file(p, tmp_path / "patched.safetensors", key)
    assert calls == {"files": 1, "st": 0}, "the input is copied once, then patched"
    monkeypatch.setattr(_patch, "copy_range", lambda *a: False)
    files.recover_file(p, tmp_path / "copied.safetensors", key)
    assert calls["st"] > 0, "without the whole-file copy, intact tensors are copied one by one"
    monkeypatch.setattr(st_format, "copy_range", lambda *a: False)
    files.recover_file(p, tmp_path / "rewritten.safetensors", key)
    for name in ("patched", "copied", "rewritten"):
        got, got_meta = helpers.read_st(tmp_path / f"{name}.safetensors")
        helpers.assert_model_equal(got, t)
        assert got_meta == meta, name  # the added metadata key is dropped: it was not sealed
        assert (tmp_path / f"{name}.safetensors").read_bytes() == sealed.read_bytes(), name
    assert files.verify_file(tmp_path / "patched.safetensors", key).status == "intact"
    assert not list(tmp_path.glob(".*.tmp")), "no temporary file is left behind"


@pytest.mark.parametrize(("fails", "says"), [("full", "No space left"), ("takes_nothing", "took no more bytes")])
def test_a_write_that_fails_while_patching_the_copy_is_exit_3_and_leaves_nothing(
    tmp_path: Path, model: dict, key: paramseal.Key, monkeypatch: pytest.MonkeyPatch, fails: str, says: str
) -> None:
    """The patched copy is written with pwrite: a reflinked copy needs new space, and ENOSPC must not be a
    SIGBUS; a pwrite returning 0 (nothing written, no error) looped forever where a short write is retried."""
    import errno

    sealed, _, meta = _sealed(tmp_path, model, key)
    p = _edited_copy(sealed, tmp_path / "bad.safetensors", [("fc.weight", 5, 3)], meta)
    before = p.read_bytes()
    calls = 0

    def pwrite(fd: int, data: object, at: int) -> int:
        nonlocal calls
        calls += 1
        assert calls < 1000, "pwrite is called again and again"
        if fails == "full":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return 0

    monkeypatch.setattr(os, "pwrite", pwrite)
    with pytest.raises(paramseal.OutputError, match=says):
        files.recover_file(p, tmp_path / "out.safetensors", key)
    monkeypatch.undo()
    assert calls, "the patched copy was written with pwrite"
    assert not (tmp_path / "out.safetensors").exists() and not list(tmp_path.glob(".*.tmp"))
    assert p.read_bytes() == before


def test_recover_that_fails_leaves_no_output_and_no_copy(tmp_path: Path, model: dict, key: paramseal.Key) -> None:
    sealed, t, meta = _sealed(tmp_path, model, key)
    t = {k: np.zeros_like(v) if v.dtype.kind == "f" else v for k, v in t.items()}  # everything destroyed
    p = helpers.write_st(tmp_path / "bad.safetensors", t, meta)
    res = files.recover_file(p, tmp_path / "out.safetensors", key)
    assert res.path is None and res.report.exit_code == 2
    assert not (tmp_path / "out.safetensors").exists()
    assert not list(tmp_path.glob(".*.tmp"))
    with pytest.raises(paramseal.KeyMismatchError):
        files.recover_file(sealed, tmp_path / "out.safetensors", paramseal.Key.generate())
    assert not list(tmp_path.glob(".*.tmp")) and not (tmp_path / "out.safetensors").exists()


def test_recover_in_place_and_recover_of_renamed_tensors_leave_no_temporary_file(
    tmp_path: Path, model: dict, key: paramseal.Key, monkeypatch: pytest.MonkeyPatch
) -> None:
    patched: list[bool] = []
    here: list[bool] = []
    real, real_here = _recover_file.patch_copy, _recover_file.patch_in_place
    monkeypatch.setattr(_recover_file, "patch_copy", lambda *a: patched.append(real(*a)) or patched[-1])
    monkeypatch.setattr(_recover_file, "patch_in_place", lambda *a: here.append(real_here(*a)) or here[-1])
    sealed, t, meta = _sealed(tmp_path, model, key)
    bad = helpers.flip_bit(t, "embed.weight", 77, 29)
    p = _edited_copy(sealed, tmp_path / "bad.safetensors", [("embed.weight", 77, 29)], meta)
    res = files.recover_file(p, p, key, in_place=True)  # the rebuilt blocks are written into the input itself
    assert res.report.status == "recovered" and here == [True] and patched == []
    got, got_meta = helpers.read_st(p)
    helpers.assert_model_equal(got, t)
    assert got_meta == meta
    # a renamed tensor: the output takes the sealed names, so the input's layout cannot be patched in place
    renamed = {("embedding" if k == "embed.weight" else k): v for k, v in bad.items()}
    q = helpers.write_st(tmp_path / "renamed.safetensors", renamed, meta)
    res = files.recover_file(q, tmp_path / "out.safetensors", key)
    got, _ = helpers.read_st(tmp_path / "out.safetensors")
    assert res.report.status == "recovered", res.report.summary()
    assert patched == [False] and here == [True]
    helpers.assert_model_equal(got, t)
    assert not list(tmp_path.glob(".*.tmp"))


def test_recover_puts_swapped_tensors_back_and_drops_bloated_headers(
    tmp_path: Path, key: paramseal.Key, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two cases where patching a copy of the input would be wrong: data swapped between same-shape tensors
    (the copy holds it in the wrong places) and junk metadata padding the header (the copy would keep it)."""
    rng = np.random.default_rng(11)
    model = {n: helpers.random_tensor(rng, np.float32, (64, 64)) for n in ("a", "b", "c")}
    sealed = tmp_path / "s.safetensors"
    files.seal_file(helpers.write_st(tmp_path / "m.safetensors", model, META), sealed, key)
    t, meta = helpers.read_st(sealed)
    patched: list[bool] = []
    real = _recover_file.patch_copy
    monkeypatch.setattr(_recover_file, "patch_copy", lambda *a: patched.append(real(*a)) or patched[-1])

    swapped = helpers.write_st(tmp_path / "swapped.safetensors", {**t, "a": t["b"], "b": t["a"]}, meta)
    out = tmp_path / "out1.safetensors"
    res = files.recover_file(swapped, out, key)
    assert res.report.status == "recovered" and patched == [False]
    helpers.assert_model_equal(helpers.read_st(out)[0], t)
    assert files.verify_file(out, key).status == "intact"

    junk = {**meta, "junk": "x" * 300_000}  # not sealed: recover drops it
    bloated = helpers.write_st(tmp_path / "bloated.safetensors", helpers.flip_bit(t, "c", 5, 30), junk)
    out = tmp_path / "out2.safetensors"
    res = files.recover_file(bloated, out, key)
    assert res.report.status == "recovered" and patched == [False, False]
    got, got_meta = helpers.read_st(out)
    helpers.assert_model_equal(got, t)
    assert got_meta == meta and out.stat().st_size < bloated.stat().st_size - 250_000


def test_a_sliding_stripe_window_fills_the_on_disk_store_exactly(
    tmp_path: Path, key: paramseal.Key, fixed_salt: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the lane store on disk, seal gathers whole stripes in a window that slides along the model."""
    import importlib

    from paramseal import _model

    seal_module = importlib.import_module("paramseal._sealing")
    rng = np.random.default_rng(8)
    model = {
        "a": helpers.random_tensor(rng, np.float32, (700, 300)),  # 3282 blocks, ragged last block
        "h": helpers.random_tensor(rng, np.float16, (5000,)),
        "ids": np.arange(3000, dtype=np.int64),  # integer blocks carry more data shards
        "b": helpers.random_tensor(rng, helpers.BF16, (64, 77)),
    }
    src = helpers.write_st(tmp_path / "m.safetensors", model, META)
    monkeypatch.setattr(_pages, "CHUNK_BYTES", 4096)
    monkeypatch.setenv("PARAMSEAL_SCRATCH_MIB", "0")
    monkeypatch.setattr(seal_module, "WINDOW_BYTES", 0)  # the smallest window the chunks allow
    writes: list[int] = []
    real = _model.StripeWindow._write
    monkeypatch.setattr(_model.StripeWindow, "_write", lambda self, upto: writes.append(upto) or real(self, upto))
    out = tmp_path / "s.safetensors"
    files.seal_file(src, out, key)
    assert len(writes) > 10, "the window must slide many times"
    in_memory = _in_memory(files.read_model(src).tensors, key, out)
    got, meta = helpers.read_st(out)
    helpers.assert_model_equal(got, in_memory.tensors)
    assert meta[METADATA_KEY] == in_memory.header_json


def test_write_behind_hints_only_for_mapped_files(tmp_path: Path) -> None:
    m = _pages.Mapping(tmp_path / "out.bin", write=True, size=1 << 20)
    try:
        a = m.array(4096, np.dtype(np.uint32), (1000,))
        a[:] = np.arange(1000, dtype=np.uint32)
        taken = _pages.write_behind(a)
        assert taken == sys.platform.startswith("linux")  # sync_file_range is Linux's
        assert not _pages.write_behind(np.arange(10, dtype=np.uint32))  # not in a file: nothing to write
        assert not _pages.write_behind(a[:0])
        m.flush()
    finally:
        m.close()
    back = np.frombuffer((tmp_path / "out.bin").read_bytes(), np.uint32)
    assert np.array_equal(back[1024:2024], np.arange(1000, dtype=np.uint32)) and not back[:1024].any()


@pytest.mark.skipif(_pages._malloc_trim() is None, reason="no glibc malloc_trim")
def test_trim_heap_gives_back_the_pages_freed_temporaries_left_resident() -> None:
    """Half-MiB arrays come from the heap once glibc's mmap threshold has risen, and stay resident freed."""
    code = textwrap.dedent(
        """
        import numpy as np
        from paramseal import _pages
        def rss():
            return int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0])
        a = np.ones(1 << 18)  # 2 MiB, mapped: freeing it raises the threshold past half a MiB
        del a
        blocks = [np.ones(1 << 16) for _ in range(200)]  # 100 MiB of heap
        blocks = blocks[-1:]  # the last stays: the heap's top cannot shrink by itself
        before = rss()
        print(_pages.trim_heap(), before, rss())
        """
    )
    # glibc's own threshold: none set by the environment, and no other allocator preloaded
    unset = {"GLIBC_TUNABLES", "LD_PRELOAD"}
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k not in unset}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120, check=True)
    trimmed, before, after = out.stdout.split()
    assert trimmed == "True"
    assert int(before) - int(after) > 60_000  # KiB: most of the 100 MiB freed


def test_file_spans_of_many_arrays_are_file_span_of_each(tmp_path: Path) -> None:
    """The seal's piece tables take the spans of every tensor at once (`file_spans`): as `file_span` one by one."""
    maps = [_pages.Mapping(tmp_path / f"{i}.bin", write=True, size=1 << 16) for i in range(2)]
    try:
        ours = np.zeros(100, np.uint32)
        arrays = [
            maps[0].array(0, np.dtype(np.uint32), (10,)),
            maps[1].array(4096, np.dtype(np.uint32), (16384 - 1024,)),  # to the map's last byte
            ours,
            maps[0].array(64, np.dtype(np.uint8), (5,)),
            ours[10:20],
        ]
        addrs = np.array([a.ctypes.data for a in arrays], np.int64)
        fds, offs = _pages.file_spans(addrs, np.array([a.nbytes for a in arrays], np.int64))
        want = [_pages.file_span(a) for a in arrays]
        assert [None if f < 0 else (int(f), int(o)) for f, o in zip(fds, offs, strict=True)] == want
        assert want[1] == (maps[1].fileno(), 4096) and want[2] is None  # both kinds compared
        past = _pages.file_spans(addrs[1:2], np.array([arrays[1].nbytes + 1], np.int64))  # one byte past the map
        assert past[0][0] == -1
    finally:
        for m in maps:
            m.close()


@pytest.mark.parametrize("budget", ["0", "1024"])  # lane stores on disk, then in memory
def test_a_lane_seal_starts_writing_each_finished_chunk_to_disk(
    tmp_path: Path, key: paramseal.Key, monkeypatch: pytest.MonkeyPatch, budget: str
) -> None:
    """Every embedded chunk of a 16-bit model is handed to write_behind, so the final flush finds little left."""
    from paramseal import _sealing

    rng = np.random.default_rng(5)
    model = {
        "a": helpers.random_tensor(rng, helpers.BF16, (3000, 7)),
        "b": helpers.random_tensor(rng, np.float16, (77, 9)),
    }
    src = helpers.write_st(tmp_path / "m.safetensors", model, META)
    monkeypatch.setattr(_pages, "CHUNK_BYTES", 4096)
    monkeypatch.setenv("PARAMSEAL_SCRATCH_MIB", budget)
    spans: list[tuple[int, int]] = []
    real = _sealing.write_behind

    def hint(a: np.ndarray) -> bool:
        where = _pages.file_span(a)
        assert where is not None  # a stretch of the output file
        spans.append((where[1], where[1] + a.nbytes))
        return real(a)

    monkeypatch.setattr(_sealing, "write_behind", hint)
    out = tmp_path / "s.safetensors"
    files.seal_file(src, out, key, code="lanes")
    assert len(spans) > 2  # many chunks
    covered = sorted(spans)
    assert all(a[1] == b[0] for a, b in itertools.pairwise(covered))  # disjoint, no gaps
    assert covered[-1][1] - covered[0][0] == sum(v.nbytes for v in model.values())  # every tensor byte


def test_a_lane_seal_lets_its_data_store_go_before_the_embed_pass(
    tmp_path: Path, key: paramseal.Key, monkeypatch: pytest.MonkeyPatch, fixed_salt: None
) -> None:
    """Once coded, the lane store (most of the model's size) is freed: the output's pages reuse its memory.

    Kept through the embed pass, it cost a 1 GiB bf16 seal about twice the system time. The same file either way.
    """
    from paramseal import _code, _model

    rng = np.random.default_rng(6)
    model = {
        "a": helpers.random_tensor(rng, helpers.BF16, (3000, 70)),
        "b": helpers.random_tensor(rng, np.float16, (77, 9)),
    }
    src = helpers.write_st(tmp_path / "m.safetensors", model, META)
    out = tmp_path / "s.safetensors"
    files.seal_file(src, out, key)
    stores: list[weakref.ref[np.ndarray]] = []
    real_encode, real_write = _code.encode_into, _model.write_storage

    def encode(data: np.ndarray, parity: np.ndarray) -> None:
        stores.append(weakref.ref(data))
        real_encode(data, parity)

    alive: list[bool] = []

    def write(*a: object, **k: object) -> None:
        alive.append(stores[-1]() is not None)
        real_write(*a, **k)  # type: ignore[arg-type]

    monkeypatch.setattr(_code, "encode_into", encode)
    monkeypatch.setattr(_model, "write_storage", write)
    again = tmp_path / "again.safetensors"
    files.seal_file(src, again, key)
    assert len(stores) == 1 and alive and not any(alive)  # the lane code's store, gone in every embed chunk
    assert again.read_bytes() == out.read_bytes()


def test_progress_counts_steps_from_threads_and_takes_a_new_total() -> None:
    import io
    import threading

    from paramseal._progress import Progress

    out = io.StringIO()
    p = Progress("seal", 3, stream=out, enabled=True)
    p.step("one")
    p.expect(40)  # 40 more steps: 41 in all
    threads = [threading.Thread(target=lambda: [p.step("x") for _ in range(10)]) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert p.i == 41 and p.total == 41
    assert out.getvalue().count("\r") == 41 and out.getvalue().rstrip().endswith("41/41 x")


def test_progress_escapes_the_tensor_names_it_shows(
    tmp_path: Path, key: paramseal.Key, capsys: pytest.CaptureFixture[str]
) -> None:
    """The progress line printed each step's tensor name raw: an escape sequence in a model's tensor name drove the
    terminal while it was sealed, verified or recovered (error, warning and report lines escape it)."""
    src = helpers.write_st(tmp_path / "m.safetensors", {"w\x1b[2J\u202e": np.ones((64, 64), np.float32)})
    files.seal_file(src, tmp_path / "s.safetensors", key, progress=True)
    assert files.verify_file(tmp_path / "s.safetensors", key, progress=True).status == "intact"
    err = capsys.readouterr().err
    assert "\x1b" not in err and "\u202e" not in err, ascii(err)
    assert "w\\x1b[2J\\u202e" in err, ascii(err)


def test_read_ahead_yields_in_order_and_reads_the_next_item_while_one_is_worked_on() -> None:
    import threading

    from paramseal._pages import read_ahead

    started: list[int] = []
    gate = threading.Event()

    def read(i: int) -> int:
        started.append(i)
        if i == 1:
            gate.set()  # item 1 is read while item 0 is still in the caller's hands
        return 10 * i

    got = []
    for i, v in read_ahead(read, range(5)):
        if i == 0:
            assert gate.wait(5)
        got.append((i, v))
    assert got == [(i, 10 * i) for i in range(5)] and started == list(range(5))
    assert list(read_ahead(read, [])) == []


def test_read_ahead_raises_a_read_s_error_at_its_item_and_stops_reading() -> None:
    from paramseal._pages import read_ahead

    started: list[int] = []

    def read(i: int) -> int:
        started.append(i)
        if i == 2:
            raise InputError("cannot read chunk 2")
        return i

    seen = []
    with pytest.raises(InputError, match="chunk 2"):
        for i, _ in read_ahead(read, range(6)):
            seen.append(i)
    assert seen == [0, 1] and max(started) <= 3  # at most one read past the failed one


def _recovered_both_ways(
    tmp_path: Path, key: paramseal.Key, model: dict, flips: list[tuple[str, int, int]], monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[int, list[int]]]:
    """Seal ``model``, apply ``flips``, recover to a new file and then in place, each checked against
    the sealed model: ``(header bytes written, length of every pwrite)``."""
    sealed, t, meta = _sealed(tmp_path, model, key)
    real, wrote = os.pwrite, []

    def counted(fd: int, data: object, at: int) -> int:
        wrote.append(len(data))  # type: ignore[arg-type]
        return real(fd, data, at)  # type: ignore[arg-type]

    monkeypatch.setattr(files.os, "pwrite", counted)
    for in_place in (False, True):
        p = _edited_copy(sealed, tmp_path / "bad.safetensors", flips, meta)
        out = p if in_place else tmp_path / "out.safetensors"
        wrote.clear()
        assert files.recover_file(p, out, key, in_place=in_place).report.status == "recovered"
        got, got_meta = helpers.read_st(out)
        helpers.assert_model_equal(got, t)
        assert got_meta == meta
        yield 0 if in_place else _room(sealed) + 8, list(wrote)


@pytest.mark.parametrize("window", [1 << 16, 7])
def test_scattered_patches_are_written_a_window_at_a_time(
    tmp_path: Path, key: paramseal.Key, monkeypatch: pytest.MonkeyPatch, window: int
) -> None:
    """One pwrite per run of rebuilt blocks was a Python loop per block under scattered damage.

    Up to 4,095 runs a tensor still went out one call each (74,000 calls at 1% of a 256 MiB
    model, its recover 11.3 s against 9.6 s with them joined): these 800 runs did.
    """
    rng = np.random.default_rng(5)
    model = {"w": rng.standard_normal((512, 1024)).astype(np.float32), "b": rng.standard_normal(300).astype(np.float32)}
    spots = rng.choice(512 * 1024, 800, replace=False)  # about 800 runs of one block: 4 copies of the model's
    monkeypatch.setattr(_patch, "_WINDOW", window)
    flips = [("w", int(i), int(rng.integers(0, 32))) for i in spots]
    for header, wrote in _recovered_both_ways(tmp_path, key, model, flips, monkeypatch):
        windows = -(-(512 * 1024 // 64) // window)
        assert len(wrote) <= windows + (1 if header else 0), len(wrote)


def test_sparse_patches_do_not_rewrite_the_blocks_far_between(
    tmp_path: Path, key: paramseal.Key, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Many runs spread over a large tensor rewrote every window whole (GiBs written, a reflinked copy unshared)."""
    model = {"w": np.random.default_rng(6).standard_normal((512, 1024)).astype(np.float32)}
    flips = [("w", (i * 1000 + 17) * 64 + 5, 20) for i in range(8)]  # 8 blocks, 1000 blocks apart
    for header, wrote in _recovered_both_ways(tmp_path, key, model, flips, monkeypatch):
        blocks = sum(wrote) - header
        assert blocks <= 8 * 64 * 4, blocks  # the 8 rebuilt blocks, not the 7000 between


def test_recover_past_the_scratch_budget_does_not_keep_the_rebuilt_blocks_resident(
    tmp_path: Path, key: paramseal.Key
) -> None:
    """Scattered damage rebuilds half the blocks; with no scratch budget they live in a scratch file.

    Checking their tags and writing them out touched every page of that file and kept it resident
    (the workspace was closed, unregistering its maps, before the output was written): a 256 MiB
    model grew by about the rebuilt blocks' size (111 MiB more: 298 against 187) on top of the streaming baseline.
    """
    rng = np.random.default_rng(5)
    n = 8 << 20
    src, sealed, bad = tmp_path / "m.safetensors", tmp_path / "s.safetensors", tmp_path / "bad.safetensors"
    stn.save_file({f"l{i}.weight": (rng.standard_normal(n) * 0.02).astype(np.float32) for i in range(8)}, str(src))
    files.seal_file(src, sealed, key)
    warm = tmp_path / "warm.safetensors"
    files.seal_file(helpers.write_st(tmp_path / "w.safetensors", {"w": np.ones(1 << 16, np.float32)}), warm, key)
    w, wmeta = helpers.read_st(warm)
    w["w"][::500] = 2.0  # scattered damage: the warm-up recover loads the decoder's kernels too
    warm_bad = helpers.write_st(tmp_path / "warm_bad.safetensors", w, wmeta)
    t, meta = helpers.read_st(sealed)
    for a in t.values():  # 1% of the values replaced at random positions
        idx = rng.integers(0, a.size, a.size // 100)
        a.reshape(-1)[idx] = rng.standard_normal(idx.size).astype(a.dtype)
    helpers.write_st(bad, t, meta)
    del t
    script = tmp_path / "worker.py"
    script.write_text(_RSS_WORKER)
    env = {**os.environ, "K": key.secret.hex(), "WARM": str(warm), "PARAMSEAL_SCRATCH_MIB": "0"}
    env["WARM_BAD"] = str(warm_bad)
    for op, out in (("recover", tmp_path / "fixed.safetensors"), ("in-place", bad)):
        r = _rss_of(script, env, op, bad, out)
        assert r["peak"] - r["base"] < 240, (op, r)  # 298 MiB before the fix, 187 after
    assert files.verify_file(tmp_path / "fixed.safetensors", key).status == "intact"
    assert files.verify_file(bad, key).status == "intact"


def _file_size_limit_8mib() -> None:
    """``preexec_fn``: no file may grow past 8 MiB (writes past it fail with EFBIG, SIGXFSZ ignored)."""
    import resource
    import signal

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (8 << 20, resource.RLIM_INFINITY))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs POSIX rlimits")
@pytest.mark.parametrize("out", ["out.safetensors", "out.npy"])
def test_scratch_on_disk_that_cannot_be_written_is_exit_3_naming_the_folder(
    tmp_path: Path, key: paramseal.Key, out: str
) -> None:
    """Recover's scratch past the memory budget (a 64 MiB file) on a full disk was a traceback, exit 1."""
    src = helpers.write_st(tmp_path / "m.safetensors", helpers.fp32_model(64 * 64, seed=3))
    sealed = tmp_path / "s.safetensors"
    files.seal_file(src, sealed, key, code="lanes")
    t, meta = helpers.read_st(sealed)
    bad = helpers.write_st(tmp_path / "bad.safetensors", helpers.flip_bit(t, next(iter(t)), 70, 30), meta)
    before = helpers.sha256(bad)
    dst = tmp_path / "o"
    dst.mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "PARAMSEAL_SCRATCH_MIB": "0", "K": key.secret.hex()}
    cmd = [
        sys.executable,
        "-c",
        "import os, sys; from paramseal.cli import main; os.environ['PARAMSEAL_KEY'] = "
        "os.environ['K']; sys.exit(main(sys.argv[1:]))",
        "recover",
        str(bad),
        str(dst / out),
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, preexec_fn=_file_size_limit_8mib, check=False)
    assert r.returncode == 3, r.stderr
    assert "Traceback" not in r.stderr and f"cannot write scratch files in '{dst}'" in r.stderr
    assert list(dst.iterdir()) == []  # no output, no temporary file, no .paramseal-* folder
    assert helpers.sha256(bad) == before


def test_a_large_read_of_an_input_is_split_over_the_cores_exactly_and_a_cut_is_an_input_error(tmp_path: Path) -> None:
    """`_pages.read` past `_SPLIT_READ`: every byte of the map's span, into the reused buffer when given; then
    the file cut short inside the span is an `InputError` naming it (a read returns short; the map would SIGBUS)."""
    from paramseal.formats import safetensors as st_format

    n = (_pages._SPLIT_READ + 3 * 4096 + 12) // 4  # past the split, halves not page-aligned
    want = np.random.default_rng(3).integers(0, 1 << 32, n, dtype=np.uint64).astype(np.uint32)
    path = helpers.write_st(tmp_path / "m.safetensors", {"w": want})
    m, tensors, _ = st_format.map_tensors(path)
    try:
        view = tensors["w"].view(np.uint32)[1:]  # an odd start: not the file's first data byte
        buf = np.zeros(view.nbytes + 64, np.uint8)
        got = _pages.read(view, buf)
        assert np.shares_memory(got, buf) and np.array_equal(got, want[1:])
        assert np.array_equal(_pages.read(view), want[1:])  # a new array without a buffer
        os.truncate(path, path.stat().st_size - 100)
        with pytest.raises(InputError, match=f"'{path}' changed while it was read"):
            _pages.read(view)
    finally:
        m.close()

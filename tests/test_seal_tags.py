"""Tags written in the seal's superblock pass (`_seal_tags`): the same sealed bytes as tagging after it."""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import save_file

import paramseal
from paramseal import _bits, _mac, _native, _seal_tags, _sealing, _strata, files
from paramseal.keys import Key

needs_lib = pytest.mark.skipif(_native._lib() is None, reason="compiled library not built")
KEY = Key.generate()


def _vaes() -> bool:
    probe = np.zeros(64, np.uint32)
    wm, sh = _bits.tag_words(_bits.tag_mask(8, 32), 2, 8)
    return _mac.BlockMac(KEY).tag_runs(probe, np.zeros((0, 4), np.int64), wm, sh)


needs_vaes = pytest.mark.skipif(_native._lib() is None or not _vaes(), reason="no compiled library or no VAES")


@needs_vaes
@pytest.mark.parametrize("k", [4, 8, 12, 16])
def test_tag_runs_write_the_tags_of_the_mac_and_the_tag_writer(k: int) -> None:
    mac, salt = _mac.BlockMac(KEY), b"\x01" * 16
    rng = np.random.default_rng(k)
    buf = rng.integers(0, 2**32, 64 * 900 + 37, dtype=np.uint32)
    want, before = buf.copy(), buf.copy()
    wm, sh = _bits.tag_words(_bits.tag_mask(k, 32), 2, k)
    # runs of two tensors, one past the kernel's 256-block batch, one with a block counter past 2**32
    runs = [(5, 3, 17, 300), (5 + 64 * 300 + 3, 9, 2**33 + 5, 600)]
    rows = np.array([(off, mac.pad_nonce(salt, t), b0, n) for off, t, b0, n in runs], np.int64)
    assert mac.tag_runs(buf, rows, wm, sh)
    for off, t, b0, n in runs:
        ub = want[off : off + 64 * n].reshape(n, 64).copy()
        tags = mac.tags(ub, mac.pads(salt, t, n, b0), _bits.tag_mask(k, 32), np.ones(n, np.bool_))
        _bits.write_tags(ub, tags, k)
        want[off : off + 64 * n] = ub.reshape(-1)
    assert np.array_equal(buf, want)
    assert not np.array_equal(buf, before)  # tags were written: the comparison is not of two untouched copies


@needs_lib
def test_an_older_mac_tags_nothing_in_place() -> None:
    buf = np.arange(64, dtype=np.uint32)
    wm, sh = _bits.tag_words(_bits.tag_mask(8, 32), 2, 8)
    old = _mac.BlockMac(KEY, _mac.MAC_V2)
    assert not old.tag_runs(buf, np.array([[0, 1, 0, 1]], np.int64), wm, sh)
    assert np.array_equal(buf, np.arange(64, dtype=np.uint32))


@needs_lib
def test_joined_ranges_cover_exactly_the_ranges() -> None:
    rows = np.array([[10, 5], [0, 10], [30, 2], [15, 1], [31, 5], [50, 1], [40, 0]], np.int64)
    assert _seal_tags._joined(rows) == [(0, 16), (30, 6), (40, 0), (50, 1)]


def _model(n_big: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(n_big)
    # unaligned ends, one whose last block is too short for its tag (the header keeps it), a tiny (data) tensor
    sizes = [n_big, 64 * 4001, 777, 3, 262_144, 70_001, 4096 * 300 + 5, 64 * 500 + 2]
    t = {f"w{i}": rng.standard_normal(n).astype(np.float32) for i, n in enumerate(sizes)}
    t["ids"] = rng.integers(0, 100, 1000).astype(np.int32)
    return t


class _Spy:
    """Counts the batches the pass tagged, the cut blocks it tagged and those it left to `rest`; can turn it off."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, off: bool) -> None:
        self.tagged = 0
        self.passes: list[Any] = []
        real_init, real_tag = _seal_tags.InPass.__init__, _seal_tags.InPass.tag

        def init(obj: Any, *a: Any, **k: Any) -> None:
            real_init(obj, *a, **k)
            self.passes.append(obj)
            if off:
                obj.staged[:] = False

        def tag(obj: Any, *a: Any) -> None:
            self.tagged += 1
            real_tag(obj, *a)

        monkeypatch.setattr(_seal_tags.InPass, "__init__", init)
        monkeypatch.setattr(_seal_tags.InPass, "tag", tag)

    @property
    def cut(self) -> int:
        """Blocks a staged row cut that the pass tagged."""
        return sum(p._cuts.tagged for p in self.passes)

    @property
    def late(self) -> int:
        """Blocks a staged row cut that the pass left to `rest`."""
        return sum(p._cuts.incomplete()[0].size for p in self.passes)


def _seal_file(src: Path, dst: Path, monkeypatch: pytest.MonkeyPatch, off: bool, level: str) -> _Spy:
    with monkeypatch.context() as m:
        m.setattr("os.urandom", lambda n: b"\x07" * n)  # the same salt both ways
        spy = _Spy(m, off)
        files.seal_file(src, dst, KEY, level=level)
    return spy


@needs_vaes
@pytest.mark.parametrize("level", ["standard", "strong"])
def test_a_file_tagged_in_the_pass_is_the_file_tagged_after_it(
    level: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "m.safetensors"
    save_file(_model(6_500_000), str(src))  # two superblocks
    on = _seal_file(src, tmp_path / "on.safetensors", monkeypatch, False, level)
    off = _seal_file(src, tmp_path / "off.safetensors", monkeypatch, True, level)
    assert on.tagged >= 2 and on.cut > 100  # batches tagged in the pass, and the blocks their rows cut
    assert on.late == 0  # every cut block's parts are staged: none left to `rest`
    assert off.tagged == 0
    assert (tmp_path / "on.safetensors").read_bytes() == (tmp_path / "off.safetensors").read_bytes()
    assert files.verify_file(tmp_path / "on.safetensors", KEY).status == "intact"


@needs_vaes
def test_a_seal_in_memory_tagged_in_the_pass_is_the_one_tagged_after_it(monkeypatch: pytest.MonkeyPatch) -> None:
    model = _model(2_000_000)
    got = []
    for off in (False, True):
        with monkeypatch.context() as m:
            m.setattr("os.urandom", lambda n: b"\x07" * n)
            spy = _Spy(m, off)
            sealed = paramseal.seal(model, KEY)
        got.append((sealed, spy))
    (a, spy_a), (b, _) = got
    assert spy_a.tagged >= 1 and spy_a.cut > 0
    assert all(np.array_equal(a.tensors[n].view(np.uint8), b.tensors[n].view(np.uint8)) for n in model)
    assert a.header.to_json(KEY) == b.header.to_json(KEY)


@needs_vaes
@pytest.mark.parametrize("seed", [1, 2])
def test_superblocks_finishing_in_any_order_give_the_same_file(
    seed: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "m.safetensors"
    save_file(_model(13_000_000), str(src))  # four superblocks

    def shuffled(fn: Any, items: Any) -> list[Any]:  # one at a time, in a random order; results in order
        items = list(items)
        order = list(range(len(items)))
        random.Random(seed).shuffle(order)
        out: dict[int, Any] = {i: fn(items[i]) for i in order}
        return [out[i] for i in range(len(items))]

    _seal_file(src, tmp_path / "a.safetensors", monkeypatch, False, "standard")
    with monkeypatch.context() as m:
        m.setattr(_sealing, "task_map", shuffled)
        spy = _seal_file(src, tmp_path / "b.safetensors", m, False, "standard")
    assert spy.cut > 0
    assert (tmp_path / "a.safetensors").read_bytes() == (tmp_path / "b.safetensors").read_bytes()


def _recorder(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int, int, str]]:
    """`start_writing`'s calls (fd, offset, bytes, thread name), each a little slow, as a busy disk's are."""
    calls: list[tuple[int, int, int, str]] = []

    def record(fd: int, off: int, n: int) -> bool:
        time.sleep(0.005)
        calls.append((fd, off, n, threading.current_thread().name))
        return True

    monkeypatch.setattr(_seal_tags, "start_writing", record)
    return calls


def test_the_sender_asks_for_every_range_in_order_before_close_returns(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _recorder(monkeypatch)
    idle = _seal_tags._Sender(7)
    idle.close()  # nothing sent: nothing asked, and no thread to wait for
    assert calls == []
    s = _seal_tags._Sender(7)
    s.send([(0, 4096), (8192, 4096)])
    s.send([(4096, 100)])
    s.close()
    assert [c[:3] for c in calls] == [(7, 0, 4096), (7, 8192, 4096), (7, 4096, 100)]
    assert {c[3] for c in calls} == {"paramseal-write-behind"}  # not the caller's thread


def _in_turn(fn: Any, items: Any) -> list[Any]:
    return [fn(x) for x in items]


def _four_superblocks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, send_batches: int
) -> tuple[Path, list[tuple[int, int, int, str]]]:
    """A model of four superblocks, sealed one superblock at a time, its batches sent ``send_batches`` at a time."""
    src = tmp_path / "m.safetensors"
    save_file(_model(13_000_000), str(src))
    calls = _recorder(monkeypatch)
    monkeypatch.setattr(_seal_tags, "_SEND_BATCHES", send_batches)
    monkeypatch.setattr(_sealing, "task_map", _in_turn)
    return src, calls


@needs_vaes
def test_a_seal_hands_its_ranges_to_the_writer_thread_and_stops_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src, calls = _four_superblocks(tmp_path, monkeypatch, 1)  # every finished batch goes to the disk at once
    files.seal_file(src, tmp_path / "a.safetensors", KEY)
    assert calls and {c[3] for c in calls} == {"paramseal-write-behind"}
    assert sum(c[2] for c in calls) > 4 * 13_000_000 // 4  # a superblock's words at least
    assert not [t for t in threading.enumerate() if t.name == "paramseal-write-behind"]

    # the last superblock fails after the second's ranges were sent (final once the third is written):
    # the writer thread is still stopped
    real, done = _strata.Strata.scatter, []

    def fail_last(*a: Any) -> Any:
        done.append(1)
        if len(done) == 4:
            raise RuntimeError("encoder failed")
        return real(*a)

    monkeypatch.setattr(_strata.Strata, "scatter", fail_last)
    calls.clear()
    with pytest.raises(RuntimeError, match="encoder failed"):
        files.seal_file(src, tmp_path / "b.safetensors", KEY)
    assert calls  # sent before the failure
    assert not [t for t in threading.enumerate() if t.name == "paramseal-write-behind"]
    assert not (tmp_path / "b.safetensors").exists()


@needs_vaes
def test_the_batches_kept_back_go_to_the_disk_before_the_tag_pass_and_its_failure_stops_the_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src, calls = _four_superblocks(tmp_path, monkeypatch, 1000)  # none sent during the pass: all kept back
    sent_before_tags: list[int] = []
    real_rest = _seal_tags.InPass.rest

    def rest(obj: Any, *a: Any) -> Any:
        if not sent_before_tags:
            obj._sender.close()  # what was sent is asked for: count it
            sent_before_tags.append(sum(c[2] for c in calls))
        return real_rest(obj, *a)

    monkeypatch.setattr(_seal_tags.InPass, "rest", rest)
    files.seal_file(src, tmp_path / "a.safetensors", KEY)
    assert sent_before_tags[0] > 4 * 13_000_000  # every superblock's words, before the first tensor's tags
    assert files.verify_file(tmp_path / "a.safetensors", KEY).status == "intact"

    def fail(obj: Any, *a: Any) -> Any:
        raise RuntimeError("tagging failed")

    monkeypatch.setattr(_seal_tags.InPass, "rest", fail)
    calls.clear()
    with pytest.raises(RuntimeError, match="tagging failed"):
        files.seal_file(src, tmp_path / "b.safetensors", KEY)
    assert calls  # the kept-back batches were sent before the failure
    assert not [t for t in threading.enumerate() if t.name == "paramseal-write-behind"]
    assert not (tmp_path / "b.safetensors").exists()

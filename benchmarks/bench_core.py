#!/usr/bin/env python3
"""Core performance benchmark for ParamSeal: seal, verify and recover against SHA-256.

Usage::

    python benchmarks/bench_core.py --size-gib 1.0 [--dtype f32|bf16|f16] [--dir SCRATCH] [--keep] [--level standard]

It writes a synthetic safetensors checkpoint of about ``--size-gib`` bytes in
one dtype (fp32 by default, sealed with the irs4 code; bf16 or fp16, sealed
with the lane code), shaped like a decoder-only LLM (embedding, per-layer
attention and MLP matrices, norms and biases, an untied LM head; values
~ N(0, 0.02) drawn in fp32, cast for 16-bit dtypes; fixed seed), then
times, each in a fresh subprocess so that peak RSS is per operation:

* SHA-256 of the file in 8 MiB reads (the baseline);
* ``files.seal_file`` (read + seal + atomic write with fsync);
* ``files.verify_file`` of the sealed file;
* ``files.recover_file`` (read + recover + atomic write) of three tampered
  copies: 100 random single-bit flips (any bit of the value's word: 0..31 for
  fp32, 0..15 for bf16/fp16), a contiguous run of 1% of the parameters
  replaced, and 1% of the parameters replaced at uniformly random positions,
  with random values of the checkpoint's dtype (the last is beyond what the
  lane code can repair; its status is printed as measured).

Times are the API call as measured inside the worker with ``time.perf_counter``
(file read, all the work, the atomic write); the process column adds
interpreter start-up and imports. Peak RSS is each worker's own ``VmHWM``
(``ru_maxrss`` from ``os.wait4`` only as a fallback). Files are read from a warm
page cache (they were just written and the machine has the RAM to hold them).

A worker can be run on its own, e.g. to profile it::

    PARAMSEAL_KEY=<64 hex> python -m cProfile -s cumtime benchmarks/bench_core.py \
        --worker verify model.sealed.safetensors
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np

SEED = 20240601
CHUNK = 8 << 20
WRITE_PIECE = 64 << 10  # the "write" floor's pieces: about a stratum row's (a superblock writes 255 such)
MB = 1e6
MIB = 1 << 20
TARGET_VERIFY_VS_SHA = 1.0  # verify speed / SHA-256 speed, at least
TARGET_SEAL_VS_SHA = 0.5  # seal speed / SHA-256 speed, at least
TARGET_RECOVER_VS_VERIFY = 2.0  # recover time / verify time, at most
# --dtype: safetensors dtype name, numpy dtype, unsigned word of the same width
DTYPES: dict[str, tuple[str, Any, Any]] = {
    "f32": ("F32", np.float32, np.uint32),
    "bf16": ("BF16", ml_dtypes.bfloat16, np.uint16),
    "f16": ("F16", np.float16, np.uint16),
}
WORDS = {v[0]: v[2] for v in DTYPES.values()}  # safetensors dtype name -> word of its width


# --------------------------------------------------------------------------- checkpoint


def llm_shapes(total_params: int) -> tuple[list[tuple[str, tuple[int, ...]]], dict[str, int]]:
    """Tensor names and shapes of a LLaMA-like decoder with about ``total_params`` parameters.

    The hidden size is the largest of a few common ones that still gives at
    least 8 layers, so the file has many matrices of a few sizes, as real
    checkpoints do; the layer count then fills the budget.
    """
    best = None
    for d in (4096, 3072, 2048, 1536, 1024, 768, 512, 256, 128):
        inter = int(round(d * 11008 / 4096 / 64)) * 64  # LLaMA's MLP ratio
        vocab = 8 * d  # LLaMA: 32000 / 4096
        per_layer = 4 * d * d + 3 * d * inter + 2 * d + 3 * d  # q,k,v,o; gate,up,down; 2 norms; q,k,v biases
        fixed = 2 * vocab * d + d  # embedding, lm_head, final norm
        layers = (total_params - fixed) // per_layer
        if layers >= 8 or d == 128:
            best = (d, inter, vocab, max(1, int(layers)))
            break
    assert best is not None
    d, inter, vocab, layers = best
    shapes: list[tuple[str, tuple[int, ...]]] = [("model.embed_tokens.weight", (vocab, d))]
    for i in range(layers):
        p = f"model.layers.{i}."
        shapes += [
            (p + "input_layernorm.weight", (d,)),
            (p + "self_attn.q_proj.weight", (d, d)),
            (p + "self_attn.q_proj.bias", (d,)),
            (p + "self_attn.k_proj.weight", (d, d)),
            (p + "self_attn.k_proj.bias", (d,)),
            (p + "self_attn.v_proj.weight", (d, d)),
            (p + "self_attn.v_proj.bias", (d,)),
            (p + "self_attn.o_proj.weight", (d, d)),
            (p + "post_attention_layernorm.weight", (d,)),
            (p + "mlp.gate_proj.weight", (inter, d)),
            (p + "mlp.up_proj.weight", (inter, d)),
            (p + "mlp.down_proj.weight", (d, inter)),
        ]
    shapes += [("model.norm.weight", (d,)), ("lm_head.weight", (vocab, d))]
    return shapes, {"hidden": d, "intermediate": inter, "vocab": vocab, "layers": layers}


def n_params(size_gib: float, dtype: str) -> int:
    """Parameters in a checkpoint of about ``size_gib`` GiB of ``dtype`` values."""
    return int(size_gib * (1 << 30)) // np.dtype(DTYPES[dtype][1]).itemsize


def write_checkpoint(path: Path, size_gib: float, dtype: str = "f32") -> None:
    """Generate and save the synthetic checkpoint (runs in its own worker)."""
    import safetensors.numpy as stn

    shapes, _ = llm_shapes(n_params(size_gib, dtype))
    np_dtype = DTYPES[dtype][1]
    rng = np.random.default_rng(SEED)
    tensors: dict[str, np.ndarray] = {}
    for name, shape in shapes:
        a = rng.standard_normal(shape, dtype=np.float32)
        a *= np.float32(0.02)
        if name.endswith("norm.weight"):
            a += np.float32(1.0)  # RMSNorm gains sit around 1
        tensors[name] = a if np_dtype is np.float32 else a.astype(np_dtype)
    # One metadata key: safetensors writes __metadata__ in hash order, so two keys make the bytes vary run to run.
    stn.save_file(tensors, str(path), metadata={"format": "pt"})
    _fsync(path)


def _fsync(path: Path) -> None:
    """Write a file set up for a timed step out now, so its writeback is not charged to that step."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def data_section(path: Path) -> tuple[int, dict[str, Any]]:
    """Offset of the data section and the parsed safetensors header."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
    return 8 + n, header


# --------------------------------------------------------------------------- tampering (untimed)


def _words(path: Path) -> tuple[np.memmap, Any]:
    """The data section as little-endian words of the checkpoint's one dtype, and that dtype."""
    off, header = data_section(path)
    header.pop("__metadata__", None)
    names = {v["dtype"] for v in header.values()}
    assert len(names) == 1 and names <= WORDS.keys(), f"benchmark checkpoint has one of {list(WORDS)}, not {names}"
    name = names.pop()
    word = np.dtype(WORDS[name]).newbyteorder("<")
    np_dtype = next(v[1] for v in DTYPES.values() if v[0] == name)
    assert off % word.itemsize == 0
    n = (path.stat().st_size - off) // word.itemsize
    return np.memmap(path, dtype=word, mode="r+", offset=off, shape=(n,)), np_dtype


def _random_values(rng: np.random.Generator, m: int, np_dtype: Any, word: np.dtype) -> np.ndarray:
    """``m`` values ~ N(0, 0.02) of ``np_dtype`` (drawn in fp32 and cast), as raw words."""
    vals = rng.standard_normal(m, dtype=np.float32) * np.float32(0.02)
    return (vals if np_dtype is np.float32 else vals.astype(np_dtype)).view(word)


def tamper(sealed: Path, dst: Path, kind: str, seed: int) -> str:
    """Copy ``sealed`` to ``dst`` and damage it in place; return a description."""
    shutil.copyfile(sealed, dst)
    w, np_dtype = _words(dst)
    n = w.size
    nbits = 8 * w.dtype.itemsize
    rng = np.random.default_rng(seed)
    if kind == "bitflips":
        pos = _distinct(rng, n, 100)
        bits = rng.integers(0, nbits, size=pos.size, dtype=w.dtype.type)
        w[pos] ^= np.left_shift(w.dtype.type(1), bits)
        desc = f"{pos.size} single-bit flips at random values (random bit 0..{nbits - 1})"
    elif kind == "contiguous":
        m = n // 100
        start = int(rng.integers(0, n - m))
        vals = _random_values(rng, m, np_dtype, w.dtype)
        changed = int(np.count_nonzero(w[start : start + m] != vals))
        w[start : start + m] = vals
        desc = f"{m:,} consecutive values [{start:,}, {start + m:,}) replaced ({changed:,} changed)"
    elif kind == "scattered":
        pos = _distinct(rng, n, n // 100)
        vals = _random_values(rng, pos.size, np_dtype, w.dtype)
        changed = int(np.count_nonzero(w[pos] != vals))
        w[pos] = vals
        desc = f"{pos.size:,} values at uniformly random positions replaced ({changed:,} changed)"
    else:
        raise ValueError(kind)
    w.flush()
    del w
    _fsync(dst)
    return desc


def _distinct(rng: np.random.Generator, n: int, m: int) -> np.ndarray:
    """``m`` distinct indices below ``n``, uniformly at random, sorted."""
    out = np.unique(rng.integers(0, n, size=m, dtype=np.int64))
    while out.size < m:
        out = np.unique(np.concatenate([out, rng.integers(0, n, size=m - out.size, dtype=np.int64)]))
    return out


def compare_to_sealed(sealed: Path, out: Path) -> tuple[bool, int]:
    """Whether ``out`` holds exactly the sealed tensors and metadata; and how many values differ."""
    from safetensors import safe_open

    diff = 0
    same = True
    with safe_open(str(sealed), framework="numpy") as a, safe_open(str(out), framework="numpy") as b:
        if a.metadata() != b.metadata() or set(a.keys()) != set(b.keys()):
            same = False
        for name in a.keys():
            if name not in b.keys():
                continue
            x, y = a.get_tensor(name), b.get_tensor(name)
            if x.shape != y.shape or x.dtype != y.dtype:
                same = False
                diff += x.size
                continue
            word = np.dtype(f"u{x.dtype.itemsize}")  # the raw bits, at the values' own width
            diff += int(np.count_nonzero(x.reshape(-1).view(word) != y.reshape(-1).view(word)))
    return same and diff == 0, diff


# --------------------------------------------------------------------------- workers


def worker(op: str, argv: list[str]) -> None:
    """Run one operation and print one JSON line with its timing and outcome."""
    out: dict[str, Any] = {}
    if op == "gen":
        t0 = time.perf_counter()
        write_checkpoint(Path(argv[0]), float(argv[1]), argv[2] if len(argv) > 2 else "f32")
        out["seconds"] = time.perf_counter() - t0
    elif op == "sha256":
        import hashlib

        t0 = time.perf_counter()
        h = hashlib.sha256()
        with open(argv[0], "rb") as f:
            while chunk := f.read(CHUNK):
                h.update(chunk)
        out["digest"] = h.hexdigest()
        out["seconds"] = time.perf_counter() - t0
    elif op == "copy":
        # the least a file-to-file recover must add: copy the file in the kernel, then write it to disk
        t0 = time.perf_counter()
        n = os.path.getsize(argv[0])
        with open(argv[0], "rb") as fi, open(argv[1], "wb") as fo:
            done = 0
            while done < n:
                got = os.copy_file_range(fi.fileno(), fo.fileno(), n - done, done, done)
                if got <= 0:
                    raise SystemExit("copy_file_range copied nothing: this file system cannot measure the floor")
                done += got
            os.fsync(fo.fileno())
        out["seconds"] = time.perf_counter() - t0
        os.unlink(argv[1])
    elif op == "write":
        # the least a seal to a new file must pay for its output: as many bytes as argv[0] holds, written
        # from memory into a new file in 64 KiB pieces (new page-cache pages), then to disk
        n = os.path.getsize(argv[0])
        piece = memoryview(np.arange(WRITE_PIECE, dtype=np.uint8).tobytes())  # not zeros
        t0 = time.perf_counter()
        fd = os.open(argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            for at in range(0, n, WRITE_PIECE):
                rest = piece[: min(WRITE_PIECE, n - at)]
                while rest:
                    got = os.pwrite(fd, rest, at)
                    rest, at = rest[got:], at + got
            out["copy_s"] = time.perf_counter() - t0  # into new page-cache pages, before the fsync
            os.fsync(fd)
        finally:
            os.close(fd)
        out["seconds"] = time.perf_counter() - t0
        os.unlink(argv[1])
    elif op == "rs":
        # the coder alone: Reed-Solomon parity of random data shaped like this model's lanes
        from paramseal import _code, load_key
        from paramseal._layout import build_layout
        from paramseal.formats.safetensors import read_layout
        from paramseal.header import METADATA_KEY, parse_header

        key = load_key(None)
        h = parse_header(read_layout(Path(argv[0])).metadata[METADATA_KEY], key)
        if h.irs:  # the irs4 inner coder alone, on batches of random groups of this model's layout
            from paramseal import _irs, _native, _strata

            st = _strata.plan(list(h.tensors), key, h.salt, h.host, h.strata_perms, h.keyed_offset)
            rng = np.random.default_rng(SEED)
            spent = 0.0
            for g0 in range(0, st.G, 8192):
                w = rng.integers(0, 1 << 32, (min(8192, st.G - g0), 255), dtype=np.uint32)
                w[:, : st.free_strata] &= np.uint32(~((1 << st.k) - 1) & 0xFFFFFFFF)
                t0 = time.perf_counter()
                _irs.encode(st.code, w)
                spent += time.perf_counter() - t0
            how = "compiled GFNI kernel" if _native.available() else "compiled table kernel"
            how = how if _native.encodes(st.code) else "numba"
            out.update(seconds=spent, coder=f"irs4 inner code, k={st.k}, {st.G} groups, {how}, all cores")
        else:
            lay = build_layout(list(h.tensors), key, h.salt, h.lanes)
            step = _code.lanes_per_call(lay.K)
            rng = np.random.default_rng(SEED)
            spent = 0.0
            for s0 in range(0, lay.lanes, step):
                d = rng.integers(0, 1 << 32, (lay.K, min(step, lay.lanes - s0)), dtype=np.uint32)
                t0 = time.perf_counter()
                _code.encode(d, lay.M)
                spent += time.perf_counter() - t0
            out.update(seconds=spent, coder=f"leopard, K={lay.K}, M={lay.M}, {lay.lanes} lanes, one core")
    elif op == "idle":
        import paramseal
        from paramseal import _native, files, load_key  # noqa: F401  (import cost only)

        out["seconds"] = 0.0
        out["module"] = os.path.dirname(paramseal.__file__)
        out["native"] = _native.available()
        out["portable"] = _native.portable()
    else:
        from paramseal import files, load_key

        key = load_key(None)  # PARAMSEAL_KEY
        if op == "seal":
            level = argv[2]
            t0 = time.perf_counter()
            files.seal_file(argv[0], argv[1], key, level=level, progress=False)
            out["seconds"] = time.perf_counter() - t0
        elif op == "verify":
            t0 = time.perf_counter()
            rep = files.verify_file(argv[0], key, progress=False)
            out["seconds"] = time.perf_counter() - t0
            out.update(status=rep.status, exit_code=rep.exit_code)
        elif op in ("recover", "recover_inplace"):
            t0 = time.perf_counter()
            if op == "recover":
                res = files.recover_file(argv[0], argv[1], key, allow_partial=True, progress=False)
            else:  # the work copy argv[1] (made untimed by _settle) patched where it lies
                res = files.recover_file(argv[1], argv[1], key, in_place=True, progress=False)
            out["seconds"] = time.perf_counter() - t0
            rep = res.report
            out.update(
                status=rep.status,
                exit_code=rep.exit_code,
                restored=rep.restored_count,
                unrecoverable=rep.unrecoverable_count,
                tampered_blocks=rep.tampered_block_count,
                total_blocks=rep.total_blocks,
                lanes_failed=rep.lanes_failed,
            )
        else:
            raise SystemExit(f"unknown worker op {op}")
    out["hwm_kib"] = _vm_hwm_kib()
    print(json.dumps(out), flush=True)


def _vm_hwm_kib() -> int | None:
    """This process's peak resident set (VmHWM), which, unlike ru_maxrss, starts afresh at exec.

    ru_maxrss of a child survives execve and starts from its parent's resident set
    (subprocess forks with vfork), so a small worker would report the parent's size.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


@dataclass
class Run:
    seconds: float  # the operation, timed inside the worker
    process_s: float  # the whole worker process, as seen by the parent
    rss_mib: float
    cpu_s: float = 0.0  # user + system CPU seconds of the whole worker (robust to other load)
    info: dict[str, Any] = field(default_factory=dict)


class OpFailed(RuntimeError):
    pass


def spawn(op: str, args: list[str], env: dict[str, str], timeout: float) -> Run:
    """Run one worker in a fresh interpreter; per-process peak RSS via wait4."""
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", op, *args]
    with tempfile.TemporaryFile("w+") as so:
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=so, env=env)
        timer = threading.Timer(timeout, p.kill)
        timer.start()
        try:
            _, status, ru = os.wait4(p.pid, 0)
        finally:
            timer.cancel()
        wall = time.perf_counter() - t0
        p.returncode = os.waitstatus_to_exitcode(status)
        so.seek(0)
        text = so.read()
    if p.returncode != 0:
        why = "timed out" if p.returncode == -9 else f"exit code {p.returncode}"
        raise OpFailed(f"worker '{op}' failed ({why}) after {wall:.1f}s; output: {text[-500:]!r}")
    info = json.loads(text.strip().splitlines()[-1])
    cpu = ru.ru_utime + ru.ru_stime
    hwm = info.pop("hwm_kib", None)
    rss_kib = hwm if hwm else ru.ru_maxrss  # both KiB on Linux; VmHWM preferred (see _vm_hwm_kib)
    return Run(float(info.pop("seconds")), wall, rss_kib / 1024.0, cpu, info)


def best_of(
    op: str, args: list[str], env: dict[str, str], repeats: int, max_repeat_s: float, timeout: float
) -> tuple[Run, list[Run]]:
    """Run ``op`` up to ``repeats`` times (once if a run takes over ``max_repeat_s``); best by time."""
    return rounds([(op, op, args)], env, repeats, max_repeat_s, timeout)[op]


def rounds(
    ops: list[tuple[str, str, list[str]]], env: dict[str, str], repeats: int, max_repeat_s: float, timeout: float
) -> dict[str, tuple[Run, list[Run]]]:
    """Run ``(name, op, args)`` in turn, ``repeats`` rounds; best run of each by time.

    Interleaving keeps the baseline and the operations it is compared with under
    the same background load on a shared machine. An operation whose run took
    over ``max_repeat_s`` is not repeated.
    """
    runs: dict[str, list[Run]] = {name: [] for name, _, _ in ops}
    for i in range(repeats):
        for name, op, args in ops:
            if runs[name] and runs[name][-1].seconds > max_repeat_s:
                continue
            _settle(op, args)
            r = spawn(op, args, env, timeout)
            runs[name].append(r)
            _log(
                f"  {name} #{i + 1}: {r.seconds:.2f}s (process {r.process_s:.2f}s, cpu {r.cpu_s:.2f}s), "
                f"peak RSS {r.rss_mib:.0f} MiB {r.info or ''}"
            )
    return {name: (_best(rs), rs) for name, rs in runs.items()}


def _settle(op: str, args: list[str]) -> None:
    """Before a timed run: remove its output from the last round and flush the disk (untimed).

    Replacing a 1 GiB output frees its blocks, and the file system discards them at the next
    journal commit: inside the run's own fsync. Writeback left by earlier steps likewise
    landed in whichever run came next; both made file-writing runs vary 0.6-3 s here.
    """
    if op in ("seal", "recover", "copy", "write") and len(args) > 1:
        Path(args[1]).unlink(missing_ok=True)
    if op == "recover_inplace":  # a fresh tampered copy to patch: the last run repaired its own
        shutil.copyfile(args[0], args[1])
        with open(args[1], "rb") as f:
            os.fsync(f.fileno())
    os.sync()


def _best(runs: list[Run]) -> Run:
    best = min(runs, key=lambda r: r.seconds)
    best.info["all_s"] = [round(r.seconds, 2) for r in runs]
    best.info["all_cpu_s"] = [round(r.cpu_s, 2) for r in runs]
    best.rss_mib = max(r.rss_mib for r in runs)  # report the worst peak, not the luckiest
    return best


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- main


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version(), "numpy": np.__version__}
    for pkg in ("paramseal", "safetensors", "cryptography", "reed-solomon-leopard"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "?"
    return out


def _cpu() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def _load() -> str:
    """1-minute load average and CPU pressure (share of time some task waited for a CPU, last 60 s)."""
    out = f"loadavg1 {os.getloadavg()[0]:.2f}"
    try:
        with open("/proc/pressure/cpu") as f:
            some = f.readline().split()
        out += f", cpu pressure avg60 {float(some[2].split('=')[1]):.0f}%"
    except (OSError, IndexError, ValueError):
        pass
    return out


def _busy(load: str, cores: int | None) -> bool:
    try:
        return float(load.split()[1].rstrip(",")) > 0.5 * (cores or 1)
    except (IndexError, ValueError):
        return False


def _git_state(module: str | None) -> str:
    """Commit and dirtiness of the source tree the workers imported, when it is a git checkout."""
    if not module:
        return "unknown"
    try:
        head = subprocess.run(
            ["git", "-C", module, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10
        )
        if head.returncode != 0:
            return "not a git checkout"
        dirty = subprocess.run(
            ["git", "-C", module, "status", "--porcelain", "--", "."], capture_output=True, text=True, timeout=10
        )
        return f"git {head.stdout.strip()}" + (", with uncommitted changes" if dirty.stdout.strip() else ", clean")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def outcome(op: str, status: str | None, exact: bool | None) -> tuple[bool, bool, str]:
    """Whether an operation's time may count toward its target, whether the run is wrong, and a note.

    A verify counts only when it found the sealed file intact (else the run is wrong). A recover
    whose status says whole (``recovered`` or ``intact``) counts only when its output was
    compared with the sealed file and found bit-exact; otherwise its claim is false (wrong). A
    recover that says it could not restore everything is honest but cannot pass: a fast failure
    is no recovery (the lane code's 1% scattered case, beyond its bound, is one).
    """
    if op == "verify":
        if status == "intact":
            return True, False, ""
        return False, True, f"  [status {status}: the sealed file did not verify]"
    if status not in ("recovered", "intact"):
        return False, False, f"  [status {status}: not fully recovered]"
    if not exact:
        return False, True, f"  [FALSE CLAIM: status {status} but the output is not bit-exact to the sealed file]"
    return True, False, ""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-gib", type=float, default=1.0, help="checkpoint size in GiB (default 1.0)")
    ap.add_argument(
        "--dtype",
        choices=list(DTYPES),
        default="f32",
        help="checkpoint dtype: f32 (sealed with the irs4 code) or bf16/f16 (the lane code); default f32",
    )
    ap.add_argument("--dir", type=Path, default=None, help="scratch folder (default: a new temporary folder)")
    ap.add_argument("--keep", action="store_true", help="keep the scratch files")
    ap.add_argument("--level", default="standard", help="seal level (default standard)")
    ap.add_argument("--repeats", type=int, default=2, help="runs per operation, best taken (default 2)")
    ap.add_argument(
        "--max-repeat-s",
        type=float,
        default=300.0,
        help="do not repeat an operation whose first run took longer than this (default 300)",
    )
    ap.add_argument("--timeout", type=float, default=3600.0, help="kill a worker after this many seconds")
    ap.add_argument("--worker", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.worker:
        worker(a.worker[0], a.worker[1:])
        return 0
    # a size of 0 or less would still write the smallest model (hidden 128, one layer) and report it
    if not (math.isfinite(a.size_gib) and a.size_gib > 0):
        ap.error(f"--size-gib must be a positive number of GiB, not {a.size_gib}")
    if a.repeats < 1:
        ap.error(f"--repeats must be at least 1, not {a.repeats}")
    if not a.max_repeat_s >= 0:
        ap.error(f"--max-repeat-s must be 0 or more, not {a.max_repeat_s}")
    if not a.timeout > 0:
        ap.error(f"--timeout must be positive, not {a.timeout}")
    if a.dir is not None and a.dir.exists() and not a.dir.is_dir():
        ap.error(f"--dir {a.dir} exists and is not a folder")

    work, made_dir = scratch_dir(a.dir, "paramseal-bench-")
    model = work / "model.safetensors"
    sealed = work / "model.sealed.safetensors"
    env = workers_env()
    try:
        return _bench(a, work, model, sealed, env)
    finally:
        if not a.keep:
            for p in (model, sealed):
                p.unlink(missing_ok=True)
            if made_dir:
                shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"\nscratch files kept in {work}")


def scratch_dir(given: Path | None, prefix: str) -> tuple[Path, bool]:
    """The scratch folder: ``given`` (made if missing) or a new temporary one; and whether it is new."""
    work = Path(tempfile.mkdtemp(prefix=prefix)) if given is None else given
    work.mkdir(parents=True, exist_ok=True)
    return work, given is None


def workers_env() -> dict[str, str]:
    """This process's environment with a fresh key for the workers (``PARAMSEAL_KEY``; never printed)."""
    from paramseal import Key

    return {**os.environ, "PARAMSEAL_KEY": Key.generate().secret.hex()}


def _bench(a: argparse.Namespace, work: Path, model: Path, sealed: Path, env: dict[str, str]) -> int:
    st_dtype, np_dtype, _ = DTYPES[a.dtype]
    itemsize = np.dtype(np_dtype).itemsize
    shapes, dims = llm_shapes(n_params(a.size_gib, a.dtype))
    nparams = sum(int(np.prod(s)) for _, s in shapes)
    largest_name, largest_shape = max(shapes, key=lambda t: int(np.prod(t[1])))
    largest_bytes = itemsize * int(np.prod(largest_shape))

    load0 = _load()
    _log(f"writing {a.size_gib} GiB {st_dtype} checkpoint to {model}")
    gen = spawn("gen", [str(model), str(a.size_gib), a.dtype], env, a.timeout)
    fsize = model.stat().st_size
    mbytes = fsize / MB
    rep, mrs, tmo = a.repeats, a.max_repeat_s, a.timeout

    _log("baseline: idle worker (imports only)")
    idle = spawn("idle", [], env, tmo)
    _log("sha256, seal, verify (interleaved rounds)")
    core = rounds(
        [
            ("sha256", "sha256", [str(model)]),
            ("seal", "seal", [str(model), str(sealed), a.level]),
            ("verify", "verify", [str(sealed)]),
        ],
        env,
        rep,
        mrs,
        tmo,
    )
    sha, seal, ver = core["sha256"][0], core["seal"][0], core["verify"][0]
    ssize = sealed.stat().st_size

    _log("floors: copy + fsync of the sealed file; a new file's writes + fsync; Reed-Solomon encode alone")
    floor_copy, _ = best_of("copy", [str(sealed), str(work / "copy.tmp")], env, rep, mrs, tmo)
    floor_write, _ = best_of("write", [str(sealed), str(work / "write.tmp")], env, rep, mrs, tmo)
    floor_rs, _ = best_of("rs", [str(sealed)], env, rep, mrs, tmo)

    cases = [
        ("bitflips", "recover, 100 bit flips"),
        ("inplace", "recover --in-place, 100 flips"),
        ("contiguous", "recover, 1% contiguous"),
        ("scattered", "recover, 1% scattered"),
    ]
    rec: dict[str, tuple[Run | None, str, str, bool | None]] = {}
    for i, (kind, label) in enumerate(cases):
        src = work / f"tampered.{kind}.safetensors"
        dst = work / f"recovered.{kind}.safetensors"
        # in place: the same 100 flips as the first case, patched into a fresh copy each run
        desc = tamper(
            sealed, src, "bitflips" if kind == "inplace" else kind, SEED + 1 + (0 if kind == "inplace" else i)
        )
        _log(f"{label}: {desc}")
        try:
            r, _ = best_of(
                "recover_inplace" if kind == "inplace" else "recover", [str(src), str(dst)], env, rep, mrs, tmo
            )
            exact: bool | None = None
            if dst.exists():
                exact, ndiff = compare_to_sealed(sealed, dst)
                check = "bit-exact to sealed" if exact else f"{ndiff:,} values differ from sealed"
            else:
                check = "no output written"
            rec[kind] = (r, desc, check, exact)
        except OpFailed as e:
            rec[kind] = (None, desc, str(e), None)
        if not a.keep:
            src.unlink(missing_ok=True)
            dst.unlink(missing_ok=True)

    # ------------------------------------------------------------------ report
    load1 = _load()
    v = _versions()
    cores = os.cpu_count() or 1
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = cores
    print()
    print("ParamSeal core benchmark")
    print(f"machine   : {cores} cores ({usable} usable), {_cpu()}, {platform.system()} {platform.release()}")
    print("versions  : " + ", ".join(f"{k} {x}" for k, x in v.items()))
    print(
        "threads   : "
        + ", ".join(f"{k}={os.environ.get(k, 'unset')}" for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"))
    )
    print(
        f"checkpoint: {model}  {fsize:,} bytes ({fsize / (1 << 30):.3f} GiB), {len(shapes)} {st_dtype} tensors, "
        f"{nparams:,} parameters, generated in {gen.seconds:.1f}s"
    )
    print(
        f"            LLaMA-like: hidden {dims['hidden']}, MLP {dims['intermediate']}, vocab {dims['vocab']}, "
        f"{dims['layers']} layers; values N(0, 0.02)"
        + ("" if a.dtype == "f32" else f" drawn in fp32, cast to {a.dtype}")
        + f", seed {SEED}"
    )
    print(f"            largest tensor {largest_name} {list(largest_shape)} = {largest_bytes / MIB:.1f} MiB")
    print(f"seal level: {a.level}; sealed file {ssize:,} bytes")
    print(
        f"timing    : best of {a.repeats} fresh processes (one run if the first exceeds {a.max_repeat_s:.0f}s; sha256, "
        "seal and verify in interleaved rounds); "
        "'op s' = the API call (read + work + atomic write/fsync),"
    )
    print(
        "            'proc s' adds interpreter start-up and imports; MB/s = file bytes / op s (1 MB = 10^6 bytes); "
        "page cache warm"
    )
    print(
        f"load      : at start {load0}; at end {load1}"
        + (
            "  <- other work shared the CPUs: wall times are inflated, compare 'cpu s' too"
            if _busy(load0, usable) or _busy(load1, usable)
            else ""
        )
    )
    print(f"paramseal : imported from {idle.info.get('module')} ({_git_state(idle.info.get('module'))})")
    if idle.info.get("native"):
        kernels = "compiled library, irs4 coding with GFNI/AVX-512"
    elif idle.info.get("portable"):
        kernels = "compiled library, irs4 coding by nibble tables (this CPU has no GFNI/AVX-512)"
    else:
        kernels = "compiled library NOT used (numba only)"
    print(f"kernels   : {kernels}")
    print(
        "peak RSS  : per process (VmHWM of the worker, as /usr/bin/time reports it); "
        f"a worker that only imports paramseal peaks at {idle.rss_mib:.0f} MiB"
    )
    print()
    hdr = (
        f"{'operation':<26}{'op s':>9}{'proc s':>9}{'cpu s':>9}{'MB/s':>9}"
        f"{'RSS MiB':>10}{'x largest':>11}{'x file':>8}  outcome"
    )
    print(hdr)
    print("-" * (len(hdr) + 30))

    def row(label: str, r: Run | None, outcome: str) -> None:
        if r is None:
            print(f"{label:<26}{'-':>9}{'-':>9}{'-':>9}{'-':>9}{'-':>10}{'-':>11}{'-':>8}  {outcome}")
            return
        print(
            f"{label:<26}{r.seconds:>9.2f}{r.process_s:>9.2f}{r.cpu_s:>9.2f}{mbytes / r.seconds:>9.0f}"
            f"{r.rss_mib:>10.0f}{r.rss_mib * MIB / largest_bytes:>11.1f}{r.rss_mib * MIB / fsize:>8.2f}  {outcome}"
        )

    row("sha256 (8 MiB reads)", sha, "baseline")
    row(f"seal ({a.level})", seal, "written")
    row("verify (sealed file)", ver, f"status={ver.info.get('status')} exit={ver.info.get('exit_code')}")
    done: list[tuple[str, Run]] = [("sha256", sha), ("seal", seal), ("verify", ver)]
    for kind, label in cases:
        rr, _, check, _ = rec[kind]
        if rr is None:
            row(label, None, f"FAILED: {check}")
            continue
        done.append((kind, rr))
        inf = rr.info
        row(
            label,
            rr,
            f"status={inf['status']} exit={inf['exit_code']} restored={inf['restored']:,} "
            f"unrecoverable={inf['unrecoverable']:,} tampered_blocks={inf['tampered_blocks']:,}/"
            f"{inf['total_blocks']:,} lanes_failed={inf['lanes_failed']}; output {check}",
        )
    print()
    print(
        "all runs, op s [worker cpu s]: "
        + "; ".join(f"{n} {r.info.get('all_s')} {r.info.get('all_cpu_s')}" for n, r in done)
    )
    print()
    print("tampering:")
    for kind, label in cases:
        print(f"  {label:<24}: {rec[kind][1]}")
    print()
    print("targets:")
    sha_speed = mbytes / sha.seconds
    vr = (mbytes / ver.seconds) / sha_speed
    sr = (mbytes / seal.seconds) / sha_speed
    vr_p = sha.process_s / ver.process_s
    sr_p = sha.process_s / seal.process_s
    ver_ok, failed, ver_note = outcome("verify", ver.info.get("status"), None)
    print(
        f"  {'verify speed / SHA-256 speed':<38}{vr:7.3f}  (target >= {TARGET_VERIFY_VS_SHA})  "
        f"{verdict(ver_ok and vr >= TARGET_VERIFY_VS_SHA)}   [whole process: {vr_p:.3f}]{ver_note}"
    )
    print(
        f"  {'seal speed / SHA-256 speed':<38}{sr:7.3f}  (target >= {TARGET_SEAL_VS_SHA})  "
        f"{verdict(sr >= TARGET_SEAL_VS_SHA)}   [whole process: {sr_p:.3f}]"
    )
    for kind, label in cases:
        rk = rec[kind][0]
        name = f"recover/verify time, {label.removeprefix('recover').strip(' ,')}"
        if rk is None:
            print(f"  {name:<38}{'-':>7}  (target <= {TARGET_RECOVER_VS_VERIFY})  MISS (did not finish)")
            continue
        q = rk.seconds / ver.seconds
        ok, wrong, note = outcome("recover", rk.info["status"], rec[kind][3])
        failed |= wrong
        print(
            f"  {name:<38}{q:7.3f}  (target <= {TARGET_RECOVER_VS_VERIFY})  "
            f"{verdict(ok and q <= TARGET_RECOVER_VS_VERIFY)}"
            f"   [whole process: {rk.process_s / ver.process_s:.3f}]{note}"
        )
    print()
    print("floors (measured in this run; what the targets leave once these are paid):")
    print(
        f"  copy + fsync of the sealed file (any file-to-file recover writes this much): "
        f"{floor_copy.seconds:.2f}s = {floor_copy.seconds / ver.seconds:.2f}x verify time"
    )
    print(
        f"  a new file of the sealed file's size, written in {WRITE_PIECE >> 10} KiB pieces + fsync (any seal to a new "
        f"file writes this much): {floor_write.seconds:.2f}s = {floor_write.seconds / sha.seconds:.2f}x SHA-256 time "
        f"(all runs {floor_write.info['all_s']})"
    )
    print(
        f"  Reed-Solomon encode alone ({floor_rs.info['coder']}, random data): {floor_rs.seconds:.2f}s, "
        f"so seal can reach at most {(mbytes / floor_rs.seconds) / sha_speed:.3f}x SHA speed with this coder"
    )
    print(
        "  peak RSS (no target set): "
        + ", ".join(f"{n} {r.rss_mib * MIB / largest_bytes:.1f}x largest tensor" for n, r in done)
    )
    if failed:
        print("\nFAILED: the sealed file did not verify, or a recover said 'recovered' for an output not bit-exact")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

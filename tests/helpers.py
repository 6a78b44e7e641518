"""Shared helpers for the ParamSeal test suite: tiny models, bit surgery and ground truth.

Everything here works on plain numpy arrays and computes ground truth on its own
(byte comparisons), so tests never take the engine's word for what changed.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import json
import os
import struct
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
import pytest
import safetensors.numpy as stn

BLOCK = 64
BF16 = np.dtype(ml_dtypes.bfloat16)

#: numpy dtype -> (total bits, explicit mantissa bits, exponent bits) of the float dtypes.
FLOAT_LAYOUT: dict[np.dtype, tuple[int, int, int]] = {
    np.dtype(np.float64): (64, 52, 11),
    np.dtype(np.float32): (32, 23, 8),
    np.dtype(np.float16): (16, 10, 5),
    BF16: (16, 7, 8),
}
#: k per level, as documented in DESIGN.md section 3 / levels.py.
LEVEL_K: dict[str, dict[np.dtype, int]] = {
    "light": {np.dtype(np.float64): 8, np.dtype(np.float32): 4, np.dtype(np.float16): 1, BF16: 1},
    "standard": {np.dtype(np.float64): 16, np.dtype(np.float32): 8, np.dtype(np.float16): 2, BF16: 1},
    "strong": {np.dtype(np.float64): 24, np.dtype(np.float32): 12, np.dtype(np.float16): 4, BF16: 2},
}
INT_DTYPES = [np.dtype(t) for t in (np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64)]
ALL_DTYPES = [*FLOAT_LAYOUT, *INT_DTYPES, np.dtype(np.bool_)]
_UINT = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}


def default_signals() -> None:
    """``preexec_fn`` for a child a test signals: SIGINT, SIGTERM and SIGHUP at their defaults.

    A test run from a background job (``&``: SIGINT ignored) or under ``nohup`` (SIGHUP ignored)
    passes those on, and ParamSeal rightly leaves an ignored signal ignored.
    """
    import signal

    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, signal.SIG_DFL)


def pad_words(key: bytes, g0: int, ng: int) -> np.ndarray:
    """The keyed offset of groups ``[g0, g0 + ng)``: OpenSSL's AES-256-CTR keystream words from ``255 g0``."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    w0, w1 = 255 * g0, 255 * (g0 + ng)
    block = w0 // 4  # 4 words an AES block; the counter block is the block number, big-endian
    nbytes = 4 * (w1 - 4 * block)
    enc = Cipher(algorithms.AES(key), modes.CTR(block.to_bytes(16, "big"))).encryptor()
    raw = enc.update(bytes(-(-nbytes // 16) * 16))
    return np.frombuffer(raw[:nbytes], "<u4")[w0 - 4 * block :].reshape(ng, 255).copy()


def is_float(dt: np.dtype) -> bool:
    return np.dtype(dt) in FLOAT_LAYOUT


def width(dt: np.dtype) -> int:
    return np.dtype(dt).itemsize * 8


def uview(a: np.ndarray) -> np.ndarray:
    """Flat unsigned-integer view (copy) of an array's bytes, in C order."""
    flat = np.ascontiguousarray(a).reshape(-1)
    return flat.view(_UINT[flat.dtype.itemsize]).copy()


def from_uview(u: np.ndarray, like: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(u).view(like.dtype).reshape(like.shape)


def copy_model(tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: np.array(v, copy=True) for k, v in tensors.items()}


def same_bytes(a: np.ndarray, b: np.ndarray) -> bool:
    """Same dtype, same shape and the same bytes (NaN-safe, -0.0-safe; complex128 too, which no uint is as wide as)."""
    flat = [np.ascontiguousarray(x).reshape(-1).view(np.uint8) for x in (a, b)]
    return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(*flat)


def assert_model_equal(got: Mapping[str, np.ndarray], want: Mapping[str, np.ndarray]) -> None:
    assert set(got) == set(want), (sorted(got), sorted(want))
    for name in want:
        g, w = got[name], want[name]
        assert g.dtype == w.dtype, (name, g.dtype, w.dtype)
        assert g.shape == w.shape, (name, g.shape, w.shape)
        diff = np.flatnonzero(uview(g) != uview(w))
        assert diff.size == 0, f"{name}: {diff.size} values differ, first at {diff[:8].tolist()}"


def flip_bit(tensors: Mapping[str, np.ndarray], name: str, index: int, bit: int) -> dict[str, np.ndarray]:
    """Copy of the model with one bit of one value flipped (bit 0 = least significant)."""
    out = copy_model(tensors)
    a = out[name]
    u = uview(a)
    u[index] ^= u.dtype.type(1) << u.dtype.type(bit)
    out[name] = from_uview(u, a)
    return out


def changed(tampered: Mapping[str, np.ndarray], sealed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Ground truth: per sealed tensor, the flat indices whose bytes differ (same name, same numel)."""
    out = {}
    for name, s in sealed.items():
        t = tampered[name]
        assert t.size == s.size and t.dtype == s.dtype
        out[name] = np.flatnonzero(uview(t) != uview(s))
    return out


def changed_blocks(tampered: Mapping[str, np.ndarray], sealed: Mapping[str, np.ndarray]) -> dict[str, set[int]]:
    return {n: {int(i) // BLOCK for i in idx} for n, idx in changed(tampered, sealed).items()}


def xor_of(tampered: np.ndarray, sealed: np.ndarray, idx: Sequence[int]) -> list[int]:
    t, s = uview(tampered), uview(sealed)
    return [int(t[i] ^ s[i]) for i in idx]


def finite_bits(rng: np.random.Generator, dt: np.dtype, n: int) -> np.ndarray:
    """n random finite values of float dtype ``dt`` drawn over all bit patterns (subnormals, zeros, signs)."""
    total, man, exp = FLOAT_LAYOUT[np.dtype(dt)]
    u = rng.integers(0, 2**63, size=n, dtype=np.uint64, endpoint=False)
    u ^= rng.integers(0, 2, size=n, dtype=np.uint64) << np.uint64(63)
    u = (u >> np.uint64(64 - total)).astype(_UINT[total // 8])
    emask = ((1 << exp) - 1) << man
    inf_nan = (u & u.dtype.type(emask)) == u.dtype.type(emask)
    u[inf_nan] &= u.dtype.type(~(1 << man) & ((1 << total) - 1))  # clear the exponent's lowest bit
    return u.view(dt)


def random_tensor(rng: np.random.Generator, dt: np.dtype, shape: tuple[int, ...], *, wild: bool = False) -> np.ndarray:
    """Random values: normal-ish weights, or (``wild``) every finite bit pattern."""
    dt = np.dtype(dt)
    n = int(np.prod(shape, dtype=np.int64))
    if dt == np.bool_:
        a = rng.integers(0, 2, size=n).astype(np.bool_)
    elif dt in INT_DTYPES:
        info = np.iinfo(dt)
        a = rng.integers(info.min, info.max, size=n, dtype=dt, endpoint=True)
    elif wild:
        a = finite_bits(rng, dt, n)
    else:
        a = (rng.standard_normal(n) * 0.5).astype(np.float32).astype(dt)
    return a.reshape(shape)


def small_model(seed: int = 0) -> dict[str, np.ndarray]:
    """A few thousand parameters of every supported dtype (fp32 dominates, so capacity is ample)."""
    rng = np.random.default_rng(seed)
    return {
        "embed.weight": random_tensor(rng, np.float32, (64, 48)),
        "fc.weight": random_tensor(rng, np.float32, (40, 33)),
        "fc.bias": random_tensor(rng, np.float32, (40,)),
        "norm.weight": random_tensor(rng, np.float16, (130,)),
        "attn.weight": random_tensor(rng, BF16, (12, 20)),
        "head.weight": random_tensor(rng, np.float64, (70,)),
        "step": random_tensor(rng, np.int64, (3,)),
        "ids": random_tensor(rng, np.int32, (65,)),
        "codes": random_tensor(rng, np.uint8, (100,)),
        "mask": random_tensor(rng, np.bool_, (77,)),
    }


def fp32_model(n: int, seed: int = 0, tensors: int = 1) -> dict[str, np.ndarray]:
    """``tensors`` fp32 tensors holding about ``n`` values in all."""
    rng = np.random.default_rng(seed)
    per = max(1, n // tensors)
    return {f"layer{i}.weight": random_tensor(rng, np.float32, (per,)) for i in range(tensors)}


# --------------------------------------------------------------------------- recovery checks


def assert_honest_recovery(res, tampered: Mapping[str, np.ndarray], sealed: Mapping[str, np.ndarray]) -> None:
    """What every recover report must satisfy, whatever the damage."""
    rep = res.report
    truth = changed(tampered, sealed)
    assert set(res.tensors) == set(sealed)
    for name, s in sealed.items():
        f = rep.tensors[name]
        out = res.tensors[name]
        assert out.dtype == s.dtype and out.shape == s.shape
        lost = set(f.unrecoverable_indices)
        restored = set(f.restored_indices)
        assert not (lost & restored), name
        # Every truly changed value was either restored or named as lost.
        assert set(truth[name].tolist()) <= restored | lost, name
        # Restored values are exactly the sealed ones, and the reported XOR is the real one.
        assert restored <= set(truth[name].tolist()), name
        assert list(f.restored_xor) == xor_of(tampered[name], s, f.restored_indices), name
        # Everything not named as lost is exactly as sealed: recover never hands back a wrong value silently.
        keep = np.ones(s.size, dtype=bool)
        keep[list(lost)] = False
        assert np.array_equal(uview(out)[keep], uview(s)[keep]), name
    if rep.status == "recovered":
        assert_model_equal(res.tensors, sealed)
        assert rep.unrecoverable_count == 0 and rep.exit_code == 0 and rep.recoverable
    else:
        assert rep.status == "unrecoverable"
        assert rep.exit_code == 2 and not rep.recoverable and not rep.ok
        assert rep.unrecoverable_count > 0


# --------------------------------------------------------------------------- capacity oracle


def block_losses(a_shape: tuple[int, ...], dt: np.dtype, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per block of one tensor: data shards it holds and parity shards it stores (4-byte shards).

    This restates the documented budget independently of the engine: a block of
    64 values of ``w`` bits holds ``64 (w - k)`` data bits, and its ``r k`` low
    bits hold a 32-bit tag first (when they have room for it) and parity after.
    """
    n = int(np.prod(a_shape, dtype=np.int64))
    nb = max(1, -(-n // BLOCK))
    w = width(dt)
    kk = k if is_float(dt) else 0
    data = np.full(nb, BLOCK * (w - kk) // 32, dtype=np.int64)
    r = np.full(nb, BLOCK, dtype=np.int64)
    r[-1] = n - BLOCK * (nb - 1)
    bits = r * kk
    store = np.where(bits >= 32, (bits - 32) // 32, 0)
    return data, store


def single_lane_recoverable(
    sealed: Mapping[str, np.ndarray], ks: Mapping[str, int], bad: Mapping[str, set[int]]
) -> bool:
    """Erasure bound of a one-lane MDS code: lost data + lost parity <= total parity."""
    total_parity = 0
    lost = 0
    any_data = False
    for name, a in sealed.items():
        d, s = block_losses(a.shape, a.dtype, ks.get(name, 0))
        total_parity += int(s.sum())
        for b in bad.get(name, ()):
            lost += int(d[b] + s[b])
            any_data = True
    return (not any_data) or lost <= total_parity


# --------------------------------------------------------------------------- files


def write_st(path: Path, tensors: Mapping[str, np.ndarray], metadata: Mapping[str, str] | None = None) -> Path:
    """Write a safetensors file with the safetensors library itself (not the code under test)."""
    stn.save_file(
        {k: v if v.flags.c_contiguous else v.copy(order="C") for k, v in tensors.items()},
        str(path),
        metadata=dict(metadata) if metadata else None,
    )
    return Path(path)


def write_checkpoint(
    folder: Path,
    shards: Mapping[str, Mapping[str, np.ndarray]],
    metadata: Mapping[str, str] | None = None,
    index_metadata: Mapping[str, Any] | None = None,
) -> Path:
    """A sharded checkpoint as Hugging Face writes one: each shard (``metadata`` in every one) and the index naming
    the shard of each tensor (with ``index_metadata``, none if None). ``folder`` is made if it is not there."""
    folder.mkdir(parents=True, exist_ok=True)
    weight_map = {}
    for shard, tensors in shards.items():
        write_st(folder / shard, tensors, metadata)
        weight_map.update(dict.fromkeys(tensors, shard))
    index: dict[str, Any] = {"weight_map": weight_map}
    if index_metadata is not None:
        index = {"metadata": dict(index_metadata), **index}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    return folder


def read_st(path: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Read tensors and metadata with the safetensors library itself."""
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as f:
        meta = f.metadata() or {}
        return {k: f.get_tensor(k) for k in f.keys()}, dict(meta)


def move_tensor(name: str, src: Path, dst: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Move tensor ``name`` whole from shard ``src`` to ``dst``, both keeping their metadata; ``dst``'s new content."""
    ts, ms = read_st(src)
    td, md = read_st(dst)
    td[name] = ts.pop(name)
    write_st(src, ts, ms)
    write_st(dst, td, md)
    return td, md


def st_parts(raw: bytes) -> tuple[dict, bytes]:
    """Split raw safetensors bytes into (header dict, data section)."""
    n = struct.unpack("<Q", raw[:8])[0]
    return json.loads(raw[8 : 8 + n]), raw[8 + n :]


def st_build(header: dict, data: bytes) -> bytes:
    """Assemble raw safetensors bytes from a header dict and a data section (8-byte aligned header)."""
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + data


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def listing(folder: Path) -> dict[str, str]:
    """Every file in ``folder`` (recursively) with its hash."""
    return {str(p.relative_to(folder)): sha256(p) for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def run_cli(argv: Sequence[str]) -> tuple[int, str, str]:
    """Run ``paramseal.cli.main`` in-process; return (exit code, stdout, stderr).

    argparse errors raise SystemExit; its code is returned like any other.
    """
    from paramseal.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main([str(a) for a in argv])
        except SystemExit as e:
            rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    return rc, out.getvalue(), err.getvalue()


def block_list(tensors: Mapping[str, np.ndarray]) -> list[tuple[str, int]]:
    """Every (tensor, block) of a model in file order."""
    return [(n, b) for n, a in tensors.items() for b in range(-(-a.size // BLOCK))]


def randomize_blocks(
    tensors: Mapping[str, np.ndarray], blocks: Sequence[tuple[str, int]], seed: int = 0
) -> dict[str, np.ndarray]:
    """Copy of the model with every value of the given blocks replaced by random bits (finite for floats)."""
    rng = np.random.default_rng(seed)
    out = copy_model(tensors)
    for name, b in blocks:
        a = out[name]
        flat = a.reshape(-1)
        lo, hi = b * BLOCK, min(a.size, (b + 1) * BLOCK)
        flat[lo:hi] = random_tensor(rng, a.dtype, (hi - lo,), wild=is_float(a.dtype))
    return out


def record_fsyncs(monkeypatch) -> list[int]:
    """The inodes of the files ``os.fsync`` flushes from now on (each is still flushed)."""
    synced: list[int] = []
    real = os.fsync

    def record(fd: int) -> None:
        synced.append(os.fstat(fd).st_ino)
        real(fd)

    monkeypatch.setattr(os, "fsync", record)
    return synced


def as_a_user(monkeypatch: Any) -> None:
    """``os.access`` answering as a user who is not root would: a file without its owner's write bit is not writable."""
    import stat

    real = os.access

    def access(path: Any, mode: int, **kw: Any) -> bool:
        if mode & os.W_OK and os.path.isfile(path) and not os.stat(path).st_mode & stat.S_IWUSR:
            return False
        return real(path, mode, **kw)

    monkeypatch.setattr(os, "access", access)


def pin_salt(monkeypatch: Any, salt: bytes = bytes(range(16))) -> None:
    """Every seal from now on draws this salt (``os.urandom(16)``), so its interleaving is the same each run.

    Whether one damage pattern is within the code's reach depends on the interleaving: a test that needs
    "past the code's reach" must not leave that to the salt drawn.
    """
    real = os.urandom
    monkeypatch.setattr(os, "urandom", lambda n: salt if n == 16 else real(n))


_SILERO_SPEC = importlib.util.find_spec("silero_vad")
#: silero-vad's model folder (its ONNX variants hold their weights in initializers and in If branches' Constants)
SILERO = Path(_SILERO_SPEC.origin).parent / "data" if _SILERO_SPEC and _SILERO_SPEC.origin else None
needs_silero = pytest.mark.skipif(
    SILERO is None or not (SILERO / "silero_vad.onnx").exists(), reason="silero-vad is not installed"
)
SILERO_VARIANTS = [
    "silero_vad.onnx",
    "silero_vad_16k_op15.onnx",
    "silero_vad_16k_sequence.onnx",
    "silero_vad_half.onnx",
    "silero_vad_op18_ifless.onnx",
    "silero_vad_openvino_16k.onnx",
]

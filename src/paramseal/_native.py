"""Optional compiled kernels (``_native.c``, built at install when a C compiler is there), via ctypes.

With GFNI and AVX-512 (BW, VBMI): the irs4 inner encoder, the decoder's syndromes, the
outer code's content and parity (`_rs16`). On any CPU: the same encoder and syndromes by numba's nibble tables
(about twice numba's speed, no numba kernel to load and none of its parallel kernels: seal runs
its superblocks side by side) and the outer content, the seal gather and its inverse placement, the block MAC's hash,
the tag read and write, the recovery gather (words and flags of damaged groups), the irs4
decoder (used with the compiled syndromes, so a light recover loads no numba kernel) and the
lane code's data movers (bit fields, stripes and blocks to and from the lane store, the
coder's split layout).
Each has a numba (or numpy) counterpart that stays the reference and
the fallback; the tests compare the two bit for bit. Where the library is missing or unusable
the functions here return False or None and the caller uses the reference.
``PARAMSEAL_NATIVE=0`` turns the library off; ``PARAMSEAL_NATIVE=require`` makes a missing or
unloadable library an error (CI sets it, so a silently skipped build cannot pass). A CPU without
GFNI and AVX-512 is not an error under it: the portable coding kernels serve it.

This module loads the library and wraps the coding kernels and the recovery gather;
`_native_strata` wraps the seal's strata movers, `_native_blocks` the block kernels (MAC hash,
tags, bit fields, lane store, row sort), and `_gfni_plan` builds the tables the GFNI kernels take.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import sys
import threading
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from . import _gfni_affine, _gfni_plan, _irs, _irs_consts
from ._parallel import halves, parallel_map
from .errors import NativeUnavailableError, UsageError

_ABI = 7
_LIB_NAME = "_psnative.so"


def library_path() -> Path:
    """Where the build puts the compiled library (next to this module)."""
    return Path(__file__).with_name(_LIB_NAME)


_MODES = ("", "1", "on", "yes", "true", "0", "off", "no", "false", "require")


def _mode() -> str:
    mode = os.environ.get("PARAMSEAL_NATIVE", "").strip().lower()
    if mode not in _MODES:  # a typo of 'require' must not pass as the default
        raise UsageError(
            f"PARAMSEAL_NATIVE={mode!r} is not a setting: use 0 (off), require, or leave it unset (on where it builds)"
        )
    return mode


def _refuse(why: str) -> None:
    if _mode() == "require":
        raise NativeUnavailableError(
            f"PARAMSEAL_NATIVE=require, but the compiled kernels are unusable: {why}; "
            "or unset PARAMSEAL_NATIVE to run the same code in numba"
        ) from None


@functools.lru_cache(maxsize=1)
def _lib() -> ctypes.CDLL | None:
    """The library with its portable kernels (the block MAC's hash), or None."""
    if _mode() in ("0", "off", "no", "false"):
        return None
    if sys.byteorder != "little":  # the kernels read and write little-endian words (as safetensors stores them)
        _refuse("this host is big-endian")
        return None
    try:
        lib = ctypes.CDLL(str(library_path()))
    except OSError as e:
        _refuse(f"cannot load {library_path()} ({e}); install with a C compiler present to build it")
        return None
    src = library_path().with_name("_native.c")
    want = hashlib.sha256(src.read_bytes()).hexdigest()[:16].encode() if src.is_file() else None
    try:
        lib.ps_src_hash.restype = ctypes.c_char_p
        stale = lib.ps_abi() != _ABI or (want is not None and lib.ps_src_hash() != want)
    except AttributeError:  # a library from before the hash
        stale = True
    if stale:
        _refuse(f"{library_path()} was built from other source than {src.name}; reinstall the package to rebuild it")
        return None
    p, i32, i64 = ctypes.c_void_p, ctypes.c_int, ctypes.c_int64
    lib.ps_mlh.argtypes = [p, i64, i64, i32, p, p, p, i32, p, p, i32, p, i32]
    lib.ps_mlh.restype = None
    lib.ps_read_tag.argtypes = [p, i64, i64, i32, p, p, i32, p]
    lib.ps_read_tag.restype = None
    lib.ps_write_tag.argtypes = [p, i64, i64, i32, p, p, i32, p]
    lib.ps_write_tag.restype = None
    lib.ps_gather_runs.argtypes = [p, i64, i64, p, p, i64, i64, i64, p, p, i64, i32, i64, p, i32, ctypes.c_uint32]
    lib.ps_gather_runs.argtypes += [i32, i32, p, p]
    lib.ps_gather_runs.restype = i64
    lib.ps_irs_decode.argtypes = [p, p, i64, i64, p, i32, p, p, p]
    lib.ps_irs_decode.restype = i32
    lib.ps_pack.argtypes = [p, i32, i64, i64, i64, i32, i32, i32, p]
    lib.ps_unpack.argtypes = [p, i64, i64, i32, i32, i32, p, i32, i64]
    lib.ps_find_packed.argtypes, lib.ps_find_packed.restype = [p, i32, i64, i32, i32, p, i32, i64], i64
    lib.ps_split.argtypes = [p, i64, i64, i64, i64, i64, p, i64]
    lib.ps_stripes.argtypes = [p, i64, i64, i64, i64, p, i64, i64, i64, p, i64, i64, i64, i32]
    lib.ps_blocks.argtypes = [p, i64, i64, p, p, p, i64, i64, p, i64, i64, i32]
    for f in (lib.ps_pack, lib.ps_unpack, lib.ps_split, lib.ps_stripes, lib.ps_blocks):
        f.restype = None
    lib.ps_max_masked16.argtypes, lib.ps_max_masked16.restype = [p, i64, i64], i64
    lib.ps_argsort_rows.argtypes = [p, i64, i64, i64, p]
    lib.ps_argsort_rows.restype = i32
    lib.ps_gather.argtypes = [p, i64, i64, i64, p, i32, i32, p, p, p, p, p, i64, p, p, ctypes.c_uint32, i32, i32]
    lib.ps_gather.argtypes += [p, i64]  # the content rows and their bytes
    lib.ps_gather.restype = i64
    lib.ps_to_strata.argtypes = [p, p, i64, i64, i64, p, i32, i32, p, i64, i32]
    lib.ps_to_strata.restype = i32
    for fn in (lib.ps_put_strata, lib.ps_get_strata):
        fn.argtypes = [p, i64, i32, i32, p, p, p, p]
        fn.restype = i64
    lib.ps_move_parts.argtypes, lib.ps_move_parts.restype = [p, p, p, p, p, i64, p, i32], None
    lib.ps_shares.argtypes = [p, p, i64, i64, p, i32, p]
    lib.ps_shares.restype = i32
    lib.ps_encode_tab.argtypes = [p, i64, i64, p, i32, p, p, i64, p]
    lib.ps_encode_tab.restype = i32
    lib.ps_content_any.argtypes = [p, i64, i64, i32, i32, p, i64]
    lib.ps_content_any.restype = None
    lib.ps_gf2_eliminate.argtypes = [p, i64, i64]
    lib.ps_gf2_eliminate.restype = i32
    lib.ps_vaes.argtypes = []
    lib.ps_vaes.restype = i32
    lib.ps_aes256_ctr.argtypes = [ctypes.c_char_p, ctypes.c_uint64, i64, p]
    lib.ps_aes256_ctr.restype = i32
    lib.ps_tag_runs.argtypes = [p, p, i64, ctypes.c_char_p, p, p, p, p, i32]
    lib.ps_tag_runs.restype = i32
    return lib


@functools.lru_cache(maxsize=1)
def _load() -> ctypes.CDLL | None:
    """The library where this CPU has GFNI and AVX-512 (BW, VBMI) for the coding kernels, or None."""
    lib = _lib()
    if lib is None:
        return None
    if not lib.ps_gfni():  # not a failed build: even under require, this CPU codes with the portable kernels
        return None
    p, i32, u64 = ctypes.c_void_p, ctypes.c_int, ctypes.c_uint64
    lib.ps_irs_encode.argtypes = [p, ctypes.c_int64, p, i32, p, p, u64, p, p, i32, p, p, p, u64, p, p, i32]
    lib.ps_irs_encode.restype = i32
    i64 = ctypes.c_int64
    lib.ps_irs_encode_affine.argtypes = [p, i64, p, p, p, p, p, p, p, p, p, i64, p, i32, i32, p, i64, p, p, i32]
    lib.ps_irs_encode_affine.restype = i32
    lib.ps_content.argtypes = [p, i64, i64, i32, i32, p, i64]
    lib.ps_content.restype = None
    lib.ps_irs_syndromes.argtypes = [p, p, i64, i64, p, i32, p, u64, u64, p, i32, p]
    lib.ps_irs_syndromes.restype = i32
    return lib


def available() -> bool:
    """Whether the compiled coding kernels are loaded and usable on this CPU."""
    return _load() is not None


def gf2_eliminate(packed: NDArray[np.uint64]) -> bool | None:
    """`_irs._gf2_inverse`'s elimination on ``packed`` (``[n, pw]``, in place).

    True, False where the matrix is singular, or None without the library.
    """
    lib = _lib()
    if lib is None:
        return None
    assert packed.dtype == np.uint64 and packed.ndim == 2 and packed.flags.c_contiguous
    return int(lib.ps_gf2_eliminate(packed.ctypes.data, packed.shape[0], packed.shape[1])) == 0


def portable() -> bool:
    """Whether the library's portable kernels (any CPU: MAC hash, tag read and write, gather, decoder) are loaded."""
    return _lib() is not None


def gather_runs(
    runs: NDArray[np.int64],
    G: int,
    offs: NDArray[np.int64],
    ipermt: NDArray[np.int64],
    t0: int,
    t1: int,
    src: NDArray[np.uint32] | None,
    bad: NDArray[np.bool_],
    nb: int,
    last_internal: bool,
    reserved: int,
    tagb: NDArray[np.uint8],
    free: int,
    keep: int,
    seal: bool,
    w: NDArray[np.uint32],
    fl: NDArray[np.uint8] | None,
) -> int:
    """`_strata_kernels._gather_nb` compiled (``ps_gather_runs``); ``src`` None is padding. Needs `portable`."""
    lib = _lib()
    assert lib is not None
    for a in (runs, offs, ipermt, bad, tagb, w):
        assert a.flags.c_contiguous
    assert runs.dtype == offs.dtype == ipermt.dtype == np.int64 and ipermt.shape[0] == _irs_consts.N_POS
    assert w.dtype == np.uint32 and w.shape[1] == _irs_consts.N_POS and tagb.size == 64 and bad.dtype == np.bool_
    assert fl is None or (fl.shape == w.shape and fl.dtype == np.uint8 and fl.flags.c_contiguous)
    if src is not None:
        assert src.dtype == np.uint32 and src.flags.c_contiguous and src.size >= t1 - t0
        assert fl is None or bad.size >= nb  # read only for the flags
    return int(
        lib.ps_gather_runs(
            runs.ctypes.data, runs.shape[0], G, offs.ctypes.data, ipermt.ctypes.data, ipermt.shape[1], t0, t1,
            None if src is None else src.ctypes.data, bad.ctypes.data, nb, int(last_internal), reserved,
            tagb.ctypes.data, free, keep, int(seal), int(fl is not None), w.ctypes.data,
            None if fl is None else fl.ctypes.data,
        )
    )  # fmt: skip


def decode(
    code: _irs.Code, W: NDArray[np.uint32], flags: NDArray[np.uint8], pre: NDArray[np.uint64]
) -> NDArray[np.int8] | None:
    """`_irs.decode`'s kernel compiled (``ps_irs_decode``), from the syndromes ``pre``; None without the library.

    Corrects ``W`` in place and returns each group's status, as the numba kernel does.
    """
    lib = _lib()
    if lib is None:
        return None
    ng = W.shape[0]
    assert pre.shape == (4 * ng, code.words) and pre.dtype == np.uint64 and pre.flags.c_contiguous
    d, first = np.ascontiguousarray(code.d, np.int64), np.ascontiguousarray(code.first, np.int64)
    status = np.zeros(ng, np.int8)
    a = (W.ctypes.data, flags.ctypes.data, pre.ctypes.data, d.ctypes.data, first.ctypes.data, status.ctypes.data)
    rcs = parallel_map(
        lambda r: lib.ps_irs_decode(a[0], a[1], r[0], r[1], a[2], code.words, a[3], a[4], a[5]), _rows(ng)
    )
    if any(rcs):
        raise RuntimeError("compiled irs4 decoder refused the code's parameters")
    return status


def _rows(n: int, at: int = 256) -> list[tuple[int, int]]:
    """Row ranges for one call per core (one call below ``at`` rows: threads cost more than small calls)."""
    return halves(n) if n >= at else [(0, n)]


COMPACT = True  # the encoder's syndromes skip the free bytes where a quarter allows (tests set False: all bytes)
AFFINE = True  # the encoder as one linear map where _gfni_affine builds it (tests set False: the syndromes)
# fewer groups a call: the syndrome kernel, whose tables cost nothing more (building the map takes 30-45 ms,
# once a process: a seal's superblocks have 16384 groups; a light recover re-encodes a few)
AFFINE_MIN_GROUPS = 2048
_AFFINE_LOCK = threading.Lock()
SIMD = True  # the seal's data movers take their AVX-512 paths where the CPU has them (tests set False: plain C)

_TAB_WORDS = (4, 8, 12, 16)  # packed vector sizes the table kernels are built for (every irs4 code in use)


def encodes(code: _irs.Code) -> bool:
    """Whether `encode` and `syndromes` take this code compiled (else numba's parallel kernel does)."""
    return _lib() is not None and code.words in _TAB_WORDS


def encode(code: _irs.Code, W: NDArray[np.uint32]) -> bool:
    """`_irs.encode` compiled, one thread per core (GFNI where the CPU has it); False without the library."""
    return _encode_gfni(code, W) or _encode_tab(code, W)


def _encode_tab(code: _irs.Code, W: NDArray[np.uint32]) -> bool:
    """`_irs.encode` by ``ps_encode_tab`` (numba's nibble tables in C, any CPU); False without the library."""
    lib = _lib()
    if lib is None or not encodes(code):
        return False
    _irs._check(W)
    # the whole free bytes of each position are skipped (their rows of enc are zero), but for the
    # hosted bytes, which carry the outer code: numba reads them all where there is a host
    b0s = np.zeros(_irs_consts.N_POS, np.uint8)
    b0s[: code.free_strata] = code.k // 8
    b0s[code.hosted.reshape(-1)] = 0
    fn, d = np.ascontiguousarray(code.fn, np.int64), np.ascontiguousarray(code.d, np.int64)
    enc = code.enc  # held while the kernel runs: only `_irs._tables`'s cache holds it otherwise
    a = (W.ctypes.data, enc.ctypes.data, b0s.ctypes.data, fn.ctypes.data, d.ctypes.data)
    assert enc.flags.c_contiguous and enc.dtype == np.uint64
    rcs = parallel_map(
        lambda r: lib.ps_encode_tab(a[0], r[0], r[1], a[1], code.words, a[2], a[3], fn.shape[1], a[4]),
        _rows(W.shape[0]),
    )
    if any(rcs):
        raise RuntimeError(f"compiled irs4 table encoder refused the code's parameters (code {min(rcs)})")
    return True


def _encode_gfni(code: _irs.Code, W: NDArray[np.uint32]) -> bool:
    """`_irs.encode` by the GFNI kernels; False where they are unavailable or the code is past their limits."""
    lib = _load()
    if lib is None:
        return False
    _irs._check(W)
    a = _affine(code.k, code.free_strata, code.host) if AFFINE and W.shape[0] >= AFFINE_MIN_GROUPS else None
    if a is None:
        return _encode_syndromes(code, W)
    _run_affine(lib, code, a, W, None)
    return True


def encode_placed(
    code: _irs.Code,
    W: NDArray[np.uint32],
    pad: NDArray[np.uint32] | bytes,
    g0: int,
    perm: NDArray[np.int16],
    F: int,
    out: NDArray[np.uint32],
    hosted: tuple[NDArray[np.uint8], NDArray[np.int16]] | None = None,
) -> bool:
    """`encode`, each 32 groups then placed as `_native_strata.to_strata` places them (into ``out``, ``[F, >= ng]``).

    One pass where the linear-map encoder serves (and `SIMD`): the groups are still in L1 when they
    are placed. False, nothing done, elsewhere: the caller encodes and places in two. ``hosted``:
    the outer parity (`_outer.Outer.hosted_bytes`), written into each group just before it is encoded.
    ``pad``: the keyed offset's words, or its key (`_native_strata.makes_pad`: the kernel makes them).
    """
    lib = _load()
    if lib is None or not (SIMD and AFFINE and W.shape[0] >= AFFINE_MIN_GROUPS):
        return False
    _irs._check(W)
    a = _affine(code.k, code.free_strata, code.host)
    if a is None:
        return False
    for x in (perm, out):
        assert x.flags.c_contiguous
    ng = W.shape[0]
    if not isinstance(pad, bytes):
        assert pad.shape == W.shape and pad.dtype == np.uint32 and pad.flags.c_contiguous
    assert perm.dtype == np.int16 and perm.shape[1] == 255
    assert out.dtype == np.uint32 and out.ndim == 2 and out.shape[0] == F and out.shape[1] >= ng and 0 < F <= 255
    if hosted is not None:
        assert hosted[0].shape == (ng, hosted[1].size) and hosted[0].flags.c_contiguous and hosted[1].dtype == np.int16
    _run_affine(lib, code, a, W, (pad, g0, perm, F, out), hosted)
    return True


def _run_affine(
    lib: ctypes.CDLL,
    code: _irs.Code,
    a: _gfni_affine.AffinePlan,
    W: NDArray[np.uint32],
    place: tuple[NDArray[np.uint32] | bytes, int, NDArray[np.int16], int, NDArray[np.uint32]] | None,
    hosted: tuple[NDArray[np.uint8], NDArray[np.int16]] | None = None,
) -> None:
    """``ps_irs_encode_affine`` on W, one call per core, placing the words where ``place`` is given."""
    ptr = [x.ctypes.data for x in (a.nsrc, a.nblk, a.src, a.mats)]
    p = _gfni_plan._plan(code.k, code.free_strata, code.host)

    def run(r: tuple[int, int]) -> None:
        rows = W[r[0] : r[1]]
        to: tuple[int | bytes | None, ...] = (0, None, 0, 0, 0, 0, 0, 0)
        if place is not None:
            pad, g0, perm, F, out = place
            # the key: the kernel makes the offset
            at, key = (None, pad) if isinstance(pad, bytes) else (pad.ctypes.data + 4 * 255 * r[0], None)
            to = (at, key, g0 + r[0], perm.ctypes.data, perm.shape[0], F, out.ctypes.data + 4 * r[0], out.shape[1])
        put = (0, 0, 0) if hosted is None else (hosted[0][r[0] :].ctypes.data, hosted[1].ctypes.data, hosted[1].size)
        rc = lib.ps_irs_encode_affine(rows.ctypes.data, rows.shape[0], p.keep.ctypes.data, *ptr,
                                      p.spread.ctypes.data, p.masks.ctypes.data, *to, *put)  # fmt: skip
        if rc == -2:
            raise MemoryError("the compiled encoder could not allocate its placement table")
        if rc:
            raise RuntimeError(f"compiled irs4 encoder refused its matrices (code {rc})")

    parallel_map(run, _rows(W.shape[0]))


def prepare(code: _irs.Code, groups: int) -> bool:
    """Build the encoder's linear map for ``code`` now, where calls of ``groups`` groups would build it.

    True where it was built now (not there already).
    """
    if not (AFFINE and groups >= AFFINE_MIN_GROUPS and _load() is not None):
        return False
    before = _affine_built.cache_info().misses
    _affine(code.k, code.free_strata, code.host)
    return _affine_built.cache_info().misses > before


def _affine(k: int, free_strata: int, host: int) -> _gfni_affine.AffinePlan | None:
    """The encoder's linear map for this code (`_gfni_affine`), or None where the syndrome encoder must serve."""
    with _AFFINE_LOCK:  # the superblocks' first calls come together: one builds it
        return _affine_built(k, free_strata, host)


@functools.lru_cache(maxsize=16)
def _affine_built(k: int, free_strata: int, host: int) -> _gfni_affine.AffinePlan | None:
    if not 1 <= _gfni_plan._plan(k, free_strata, host).dmax <= 128:
        return None
    code = _irs.code_for(k, free_strata, host)

    def by_syndromes(W: NDArray[np.uint32]) -> None:
        assert _encode_syndromes(code, W)

    return _gfni_affine.plan(k, free_strata, host, by_syndromes)


def _encode_syndromes(code: _irs.Code, W: NDArray[np.uint32]) -> bool:
    """`_irs.encode` by the GFNI syndrome kernel (``ps_irs_encode``); False past its limits."""
    lib = _load()
    assert lib is not None
    p = _gfni_plan._plan(code.k, code.free_strata, code.host)
    if not 1 <= p.dmax <= 128:  # no parity (d = 0) or past the kernel's limits: the table kernel serves these
        return False
    args = (p.powers, p.perm, p.keep, p.tabs, p.d, p.spread, p.masks, p.cidx, p.cpowers)
    ptr = [a.ctypes.data for a in args]
    cols = None if p.cols is None else p.cols.ctypes.data

    def run(r: tuple[int, int]) -> None:
        rows = W[r[0] : r[1]]
        rc = lib.ps_irs_encode(
            rows.ctypes.data, rows.shape[0], ptr[0], p.dmax, ptr[1], ptr[2], p.phi, ptr[3], ptr[4], p.rowbytes,
            ptr[5], ptr[6], cols, p.phi_inv, ptr[7], ptr[8], p.cmask if COMPACT else 0,
        )  # fmt: skip
        if rc:
            raise RuntimeError(f"compiled irs4 encoder refused its tables (code {rc})")

    parallel_map(run, _rows(W.shape[0]))
    return True


def syndromes(code: _irs.Code, W: NDArray[np.uint32], flags: NDArray[np.uint8] | None) -> NDArray[np.uint64] | None:
    """Every group's packed syndromes ``[4 ng, code.words]`` as `_irs`'s decoder takes them, or None.

    With ``flags``, fixed bytes (flag bits 0-3) count as zero. The GFNI kernel where the CPU has
    it, else the table kernel; None without the library.
    """
    got = _syndromes_gfni(code, W, flags)
    return got if got is not None else _syndromes_tab(code, W, flags)


def _syndromes_tab(
    code: _irs.Code, W: NDArray[np.uint32], flags: NDArray[np.uint8] | None
) -> NDArray[np.uint64] | None:
    """`syndromes` by ``ps_shares`` (numba's nibble tables in C, any CPU); None without the library."""
    lib = _lib()
    if lib is None or not encodes(code):
        return None
    _irs._check(W, flags)
    syn = code.syn  # held while the kernel runs: only `_irs._tables`'s cache holds it otherwise
    assert syn.flags.c_contiguous and syn.dtype == np.uint64
    out = np.empty((4 * W.shape[0], code.words), np.uint64)
    fptr = None if flags is None else flags.ctypes.data
    a = (W.ctypes.data, syn.ctypes.data, out.ctypes.data)
    rcs = parallel_map(lambda r: lib.ps_shares(a[0], fptr, r[0], r[1], a[1], code.words, a[2]), _rows(W.shape[0]))
    if any(rcs):
        raise RuntimeError(f"compiled syndrome table kernel refused the code's parameters (code {min(rcs)})")
    return out


def _syndromes_gfni(
    code: _irs.Code, W: NDArray[np.uint32], flags: NDArray[np.uint8] | None
) -> NDArray[np.uint64] | None:
    """`syndromes` by the GFNI kernel; None where it is unavailable or the code is past its limits."""
    lib = _load()
    if lib is None:
        return None
    _irs._check(W, flags)
    p = _gfni_plan._plan(code.k, code.free_strata, code.host)
    if not 1 <= p.dmax <= 128:  # the kernel's limits; the table kernel serves the rest
        return None
    ng = W.shape[0]
    out = np.empty((4 * ng, code.words), np.uint64)
    fptr = None if flags is None else flags.ctypes.data
    a = (W.ctypes.data, p.powers.ctypes.data, p.perm.ctypes.data, p.d.ctypes.data, out.ctypes.data)
    rcs = parallel_map(
        lambda r: lib.ps_irs_syndromes(
            a[0], fptr, r[0], r[1], a[1], p.dmax, a[2], p.phi, p.phi_inv, a[3], code.words, a[4]
        ),
        _rows(ng),
    )
    if any(rcs):
        raise RuntimeError(f"compiled syndrome kernel refused its tables (code {max(rcs)})")
    return out


def content(
    w: NDArray[np.uint32], F: int, k: int, shard: int, out: NDArray[np.uint8] | None = None
) -> NDArray[np.uint8] | None:
    """`_outer.Outer.content` compiled (AVX-512 with GFNI, else portable): ``[ng, shard]`` bytes, or None.

    Into ``out`` if given (a new array if not).
    """
    gfni, lib = _load(), _lib()
    if lib is None or k not in (8, 12, 16) or shard < 4 * _irs_consts.N_POS - (k // 8) * F:
        return None
    assert w.flags.c_contiguous and w.dtype == np.uint32 and w.shape[1] == _irs_consts.N_POS
    fn = lib.ps_content_any if gfni is None else gfni.ps_content
    if out is None:
        out = np.empty((w.shape[0], shard), np.uint8)
    assert out.shape == (w.shape[0], shard) and out.dtype == np.uint8 and out.flags.c_contiguous
    parallel_map(lambda r: fn(w.ctypes.data, r[0], r[1], F, k, out.ctypes.data, shard), _rows(w.shape[0]))
    return out


__all__ = [
    "available",
    "content",
    "decode",
    "encode",
    "gather_runs",
    "library_path",
    "portable",
    "syndromes",
]

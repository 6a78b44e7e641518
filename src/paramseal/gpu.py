"""Verify a sealed model where its weights live: on the GPU, in one pass, with no copy to the host.

:class:`GpuVerifier` recomputes every block tag of a live ``nn.Module`` (or a
mapping of tensors) on the tensors' own device and compares it with the tag the
block carries, exactly as :func:`paramseal.verify` does on the CPU: the set of
failing blocks is the same, bit for bit, for every dtype and both seal codes.

Everything that depends on the key is derived once, on the CPU, when the
verifier is built, and uploaded next to the weights: the two hashes' keys, each
block's pad, multiplier and second hash's weight (AES-CTR) reduced mod p, the masks
of the tag bits, and the tags kept in the header. A check then reads each weight
once as raw 16-bit words (so NaN payloads, -0.0 and subnormals are exact) and writes
one byte per 64-value block. Only when a block fails are the flags copied to the host.

Two engines compute the tags:

* a tiled Triton kernel, used on CUDA when ``triton`` imports (a program checks 8 to
  64 consecutive blocks; one launch covers every tensor of a device, block size and k);
* plain torch ops, on any device (the reference the Triton kernel is tested
  against, and what runs on the CPU). It works through a tensor in chunks of
  ``CHUNK_WORDS`` 16-bit words, so its temporaries stay below about
  ``5 * 8 * CHUNK_WORDS`` bytes (80 MiB) whatever the tensor's size.

The arithmetic is the CPU engine's (``_mac``): tag = (r (H + x H') + pad) mod p with
p = 2**32 - 5, H = sum k_i m_i and H' = sum k'_i m_i over the 16-bit words m_i, keys
below p (x = 0 in seals of the two older MACs, r = 1 in the oldest's). A product is
below 2**48 and a block has at most 256 words, so each sum stays below 2**56 and is
exact in 64-bit integers; it is reduced mod p once per block.

This module verifies only. Recovery of a tampered model stays on the CPU
(:func:`paramseal.torch.recover_module`); :meth:`GpuVerifier.verify` copies the
weights to the host only when something failed, to say whether they can be
recovered. Keys and pads never appear in a repr, a log or an error.

Example::

    import paramseal, paramseal.torch as pst
    from paramseal.gpu import GpuVerifier
    header = pst.seal_module(net, key).header_json   # once, on the CPU
    net.cuda()
    verifier = GpuVerifier(net, key, header)          # derives and uploads the key material
    verifier.check().ok                               # True: every block carries its tag
    verifier.verify().status                          # 'intact' (a full paramseal Report)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from numpy.typing import NDArray

from . import _bits, _model
from ._findings import metadata_findings
from ._gpu_tensors import _Consts, _dtype_name, _host, _Plan, _refuse_unreadable, _tags_bad, _words_of
from ._gpu_triton import _Group, _triton_kernel, triton_available
from ._layout import TensorSpec
from ._mac import BlockMac, P
from ._weights_header import header_from_weights
from .errors import TamperedError, UsageError
from .formats.pytorch import import_torch, untie
from .header import Header, parse_header
from .keys import Key, require_key
from .levels import BLOCK
from .report import Moved, Report, seal_id_arg
from .torch import _state, _with_ties, module_tensors, verify_module
from .verify import Check, _match_moved, pinned_check, report_of
from .verify import verify as cpu_verify

_torch = import_torch("paramseal.gpu")

if TYPE_CHECKING:  # pragma: no cover
    import torch

Backend = Literal["auto", "torch", "triton"]

#: 16-bit words per chunk of the torch engine (bounds its temporaries; see the module docstring).
CHUNK_WORDS = 1 << 21
#: Triton tile per block size (16-bit words per block -> blocks per program, warps per program):
#: 32 words a thread, the best of a sweep on an H200 (docs/gpu.md).
_TILES = {64: (64, 2), 128: (16, 2), 256: (8, 2)}
#: Overrides of the tile for every block size (None: ``_TILES``); for tuning and tests.
BLOCKS_PER_PROGRAM: int | None = None
NUM_WARPS: int | None = None
#: One launch per device, block size and k (True) rather than one per tensor (see ``_gpu_triton._Group``).
GROUPED = True
_ALIGN = 16  # per-tensor segments of the flag and pad buffers start on 16 elements
_NO_TRITON = (
    "backend='triton' needs triton (pip install triton, on CUDA) and PARAMSEAL_NO_TRITON unset; or use backend='auto'"
)


@dataclass(frozen=True, slots=True)
class GpuCheck:
    """What :meth:`GpuVerifier.check` found: the failing blocks (none for an intact model)."""

    failing: int  # failing blocks over all tensors
    blocks: Mapping[str, tuple[int, ...]] = field(default_factory=dict)  # tensor name -> failing block indices

    @property
    def ok(self) -> bool:
        """True when every block carries its tag."""
        return self.failing == 0


class GpuVerifier:
    """Verifies a sealed live module (or mapping of tensors) on the device its weights are on.

    ``header_json`` is what sealing returned; None reads the copy embedded in the
    weights (this copies the model to the host once). A wrong key raises
    :class:`~paramseal.errors.KeyMismatchError`; tensors that are missing, extra,
    retyped or reshaped against the seal raise :class:`~paramseal.errors.TamperedError`
    naming every difference, with the CPU engine's report (for a module, ``verify_module``'s). ``backend`` picks the
    engine: "auto" (Triton on CUDA when it imports, else torch ops), "torch" or "triton".

    The verifier keeps a reference to the module or mapping and reads its current
    tensors at every check, so parameters replaced since are checked, not stale copies.
    A mapping is checked name by name, ties included: a tied module's ``state_dict()`` holds
    a name the seal does not (it sealed the tied tensor once), so pass the module itself,
    whose ties are checked as `paramseal.torch.verify_module` checks them.
    """

    def __init__(
        self,
        module_or_state: torch.nn.Module | Mapping[str, torch.Tensor],
        key: Key,
        header_json: str | None = None,
        *,
        backend: Backend = "auto",
    ) -> None:
        if backend not in ("auto", "torch", "triton"):
            raise UsageError(f"unknown backend '{backend}'; choose auto, torch or triton")
        if backend == "triton" and _triton_kernel() is None:
            raise UsageError(_NO_TRITON)
        require_key(key)
        if header_json is not None and not isinstance(header_json, str):
            raise UsageError(
                "header_json must be the seal header text (SealedModel.header_json, or what seal_module returned), "
                f"not {type(header_json).__name__}"
            )
        if not isinstance(module_or_state, Mapping | _torch.nn.Module):
            raise UsageError(
                f"GpuVerifier checks a torch.nn.Module or a mapping of names to tensors, not "
                f"{type(module_or_state).__name__}"
            )
        self._source = module_or_state
        tensors = self._tensors()
        _refuse_unreadable(tensors)
        if header_json is None:
            header_json = header_from_weights(_host(tensors), key)
        self._header: Header = parse_header(header_json, key)  # KeyMismatchError on a wrong key
        self._header_json = header_json
        self._key = key
        self._mac = BlockMac(key, self._header.mac)
        self._specs = list(self._header.tensors)
        self._backend = backend
        self._raise_if_mismatched(tensors, None)
        self._plans = self._build(tensors)
        self._devices = {p.device for p in self._plans}

    def __repr__(self) -> str:
        devices = ", ".join(sorted(str(d) for d in self._devices))
        return f"GpuVerifier({len(self._specs)} tensors on {devices}, backend={self._backend!r})"

    # --- what a user calls ---------------------------------------------------------------------

    def check(self) -> GpuCheck:
        """Recompute every block tag on the device; return the failing blocks (transferred only if any)."""
        tensors = self._tensors()
        self._raise_if_mismatched(tensors, self._plans)
        done: set[int] = set()
        if GROUPED and self._backend != "torch" and _triton_kernel() is not None:
            for group in self._groups:
                if self._use_triton(group.plans[0]):
                    done.update(p.t for p in group.launch(tensors, tile(group.plans[0].words)))
        for plan in self._plans:
            if plan.t not in done:
                self._run(plan, tensors[plan.spec.name])
        buffers = self._flag_buffers
        failing = sum(int(_torch.count_nonzero(buf)) for buf in buffers.values())  # the one sync
        if failing == 0:
            return GpuCheck(0, {})
        host = {dev: buf.cpu().numpy() for dev, buf in buffers.items()}
        found: dict[str, tuple[int, ...]] = {}
        for plan in self._plans:
            seg = host[plan.device][self._offsets[plan.t] : self._offsets[plan.t] + plan.spec.nblocks]
            if (idx := np.flatnonzero(seg)).size:
                found[plan.spec.name] = tuple(int(i) for i in idx)
        return GpuCheck(failing, found)

    def verify(self, *, expect_seal: str | None = None) -> Report:
        """A full :class:`~paramseal.Report`, as :func:`paramseal.verify` gives for the same weights.

        An intact model is decided on the device alone. When blocks fail, the weights
        are copied to the host to decide ``recoverable`` exactly as the CPU engine does.
        ``expect_seal``: as in :func:`paramseal.verify`, the seal id the model must carry; another
        seal of it (an older version put back) is tampering that cannot be recovered
        (`paramseal.report.pinned`).
        """
        expect_seal = seal_id_arg(expect_seal)  # a typo fails before the check
        found = self.check()
        arrays: Mapping[str, NDArray[np.generic]] = {}  # the host copy: only when blocks failed
        bad = [np.zeros(s.nblocks, dtype=np.bool_) for s in self._specs]
        for t, spec in enumerate(self._specs):
            if spec.name in found.blocks:
                bad[t][list(found.blocks[spec.name])] = True
        issues: list[list[str]] = [[] for _ in self._specs]
        moved: dict[int, tuple[Moved, str]] = {}
        if found.ok:
            blocks: list[_model.Blocks] = [np.zeros((0, BLOCK), np.uint8) for _ in self._specs]
        else:
            arrays = _host(self._tensors())
            blocks = [_model.blocks_of(arrays[s.name], s, copy=False) for s in self._specs]
            # a tensor failing in every block may be another's data (swapped): matched up as the CPU engine does
            moved = _match_moved(arrays, self._header, self._mac, self._specs, blocks, bad, issues, [])
        # a module's metadata is its ties, checked as paramseal.torch.verify_module does; a mapping has none
        metadata: Mapping[str, str] | None = None
        kept: bool | None = None
        if not isinstance(self._source, Mapping):
            given = _with_ties({}, self._header_json, self._key, untie(_state(self._source))[1])
            metadata, kept = given["metadata"], given.get("metadata_kept")
        meta, notes = metadata_findings(self._header, metadata, kept)
        chk = Check(
            self._header, self._specs, self._key, self._mac, blocks, bad,
            issues, [], meta, notes, None if metadata is None else dict(metadata), moved,
        )  # fmt: skip
        # the weights are read again only when blocks failed (another seal's?): they are on the host then
        return pinned_check(report_of(chk), chk, arrays, expect_seal)

    # --- construction ----------------------------------------------------------------------------

    def _tensors(self) -> dict[str, torch.Tensor]:
        src = self._source
        if isinstance(src, Mapping):
            return {str(k): v for k, v in src.items()}
        return module_tensors(src)

    def _raise_if_mismatched(self, tensors: Mapping[str, torch.Tensor], plans: list[_Plan] | None) -> None:
        if plans is not None and len(tensors) == len(plans):  # the common case, cheaply: nothing changed
            try:
                if all(
                    (y := tensors[p.spec.name]).dtype == p.dtype
                    and y.shape == p.spec.shape
                    and y.device == p.device
                    and y.layout == _torch.strided
                    for p in plans
                ):
                    return
            except (KeyError, AttributeError):
                pass
        _refuse_unreadable(tensors)
        issues = []
        names = {s.name for s in self._specs}
        for spec in self._specs:
            x = tensors.get(spec.name)
            if x is None:
                issues.append(f"'{spec.name}' is missing")
            elif (dt := _dtype_name(x)) != spec.dtype:
                issues.append(f"'{spec.name}' has dtype {dt}, sealed as {spec.dtype}")
            elif tuple(x.shape) != spec.shape:
                issues.append(f"'{spec.name}' has shape {list(x.shape)}, sealed as {list(spec.shape)}")
        extra = [n for n in tensors if n not in names]
        issues += [f"'{n}' is not in the seal" for n in extra]
        if extra and isinstance(self._source, Mapping) and untie(dict(tensors))[1]:
            issues.append("the mapping holds tied tensors, which a seal holds once: pass the module itself")
        if issues:
            src = self._source
            report = (  # a module's report is verify_module's: its ties checked, and whether recover_module can help
                cpu_verify(_host(tensors), self._key, self._header_json)
                if isinstance(src, Mapping)
                else verify_module(src, self._key, self._header_json)
            )
            raise TamperedError(
                f"the tensors do not match the seal ({'; '.join(issues)}); the GPU check needs the sealed "
                "structure: the report (from the CPU engine) names every finding, and "
                "paramseal.torch.recover_module can restore what is recoverable",
                report,
            )
        moved = [
            f"'{p.spec.name}' from {p.device} to {tensors[p.spec.name].device}"
            for p in plans or []
            if tensors[p.spec.name].device != p.device
        ]
        if moved:
            raise UsageError(
                f"tensors moved since the verifier was built ({'; '.join(moved)}); its key material lives on "
                "the old device: build a new GpuVerifier"
            )

    def _build(self, tensors: Mapping[str, torch.Tensor]) -> list[_Plan]:
        consts: dict[tuple[str, int, int], _Consts] = {}
        sizes: dict[torch.device, int] = {}
        self._offsets: dict[int, int] = {}
        for t, spec in enumerate(self._specs):
            dev = tensors[spec.name].device
            self._offsets[t] = sizes.get(dev, 0)
            sizes[dev] = self._offsets[t] + -(-spec.nblocks // _ALIGN) * _ALIGN
        self._flag_buffers = {d: _torch.zeros(n, dtype=_torch.uint8, device=d) for d, n in sizes.items()}
        c_buffers = {d: _torch.zeros(n, dtype=_torch.int64, device=d) for d, n in sizes.items()}
        x_buffers = {d: _torch.zeros(n, dtype=_torch.int64, device=d) for d, n in sizes.items()}
        self._c_buffers, self._x_buffers = c_buffers, x_buffers
        plans = []
        dtypes = {s.name: tensors[s.name].dtype for s in self._specs}
        for t, spec in enumerate(self._specs):
            dev = tensors[spec.name].device
            words = BLOCK * spec.width // 16
            kk = spec.k if spec.is_float else 0
            ck = (str(dev), words, kk)
            if ck not in consts:
                consts[ck] = self._consts(dev, words, kk, spec.width)
            internal = spec.block_storage()[1]
            full_internal = bool(internal[0]) if spec.nblocks > 1 else bool(internal[-1])
            if internal[:-1].size and not bool(np.all(internal[:-1] == full_internal)):
                raise AssertionError(f"tensor '{spec.name}': blocks before the last differ in where they keep tags")
            c, x, ext_ok = self._constants(t, spec, internal)
            o = self._offsets[t]
            seg = c_buffers[dev][o : o + spec.nblocks]
            seg.copy_(_torch.from_numpy(c.view(np.int64)))
            xseg = x_buffers[dev][o : o + spec.nblocks]
            xseg.copy_(_torch.from_numpy(x.view(np.int64)))
            flags = self._flag_buffers[dev][o : o + spec.nblocks]
            plans.append(
                _Plan(
                    t,
                    spec,
                    dev,
                    words,
                    full_internal,
                    bool(internal[-1]),
                    ext_ok,
                    consts[ck],
                    dtypes[spec.name],
                    seg,
                    flags,
                    xseg,
                )
            )
        # A launch passes one set of constants: group by them (device, block size and k), not by shape
        # alone, or a k=0 tensor (integers, a float holding NaN/Inf) would lend its masks to a float one.
        # An empty tensor has nothing to check: grouped, one on another device (the host, say) added a launch there.
        by_consts: dict[int, list[_Plan]] = {}
        for p in plans:
            if p.spec.width >= 16 and p.spec.numel:
                by_consts.setdefault(id(p.consts), []).append(p)
        self._groups = [
            _Group(g, self._offsets, c_buffers[g[0].device], self._flag_buffers[g[0].device], x_buffers[g[0].device])
            for g in by_consts.values()
        ]
        return plans

    def _consts(self, dev: torch.device, words: int, k: int, width: int) -> _Consts:
        keys, keys2 = self._mac._keys[:words], self._mac._keys2[:words]  # keys2: zeros for the older MACs
        nm = 16
        wmask = np.zeros(nm, np.int64)
        shift = np.zeros(nm, np.int64)
        if k:
            m = _bits.tag_mask(k, width).view(np.uint16)
            used = int(np.flatnonzero(m).max()) + 1
            nm = max(16, 1 << (used - 1).bit_length())
            per = width // 16
            i = np.arange(nm)
            wmask = np.zeros(nm, np.int64)
            wmask[:used] = m[:used]
            shift = np.where(wmask != 0, k * (i // per) + 16 * (i % per), 0).astype(np.int64)

        def up(a: NDArray[Any]) -> torch.Tensor:
            out: torch.Tensor = _torch.from_numpy(np.ascontiguousarray(a)).to(dev)
            return out

        keep = np.full(words, 0xFFFF, np.int32)
        keep[: min(nm, words)] &= ~wmask[:words].astype(np.int32)
        return _Consts(
            up(keys.astype(np.int64)), up(keys.astype(np.uint32).view(np.int32)), up(wmask), up(shift), nm,
            up(keep), up(wmask.astype(np.int32)), up(shift.astype(np.int32)),
            up(keys2.astype(np.int64)), up(keys2.astype(np.uint32).view(np.int32)), self._mac.per_block_hash,
        )  # fmt: skip

    def _constants(
        self, t: int, spec: TensorSpec, internal: NDArray[np.bool_]
    ) -> tuple[NDArray[np.uint64], NDArray[np.uint64], bool]:
        """Per block (r, c) packed as r << 32 | c, and x: intact <=> (r H + c) mod p == its stored tag.

        H is the block's hash, H_k + x H_k' (x = 0 in the older MACs, whose k' are zeros).

        A block that keeps its tag has (r, c) = the MAC's (r_b, s_b) and its stored tag in its
        low bits. One whose tag is in the header has c = (s_b - tag) mod p and "stored tag" 0,
        which is the same test as the CPU engine's (r_b H + s_b) mod p == tag, for tags < p.
        A header whose tags do not fit this tensor (or are not residues) fails those blocks,
        as the CPU engine does.
        """
        pads = self._mac.pads(self._header.salt, t, spec.nblocks, name=spec.name)
        c, r, x = pads[:, 0].copy(), pads[:, 1], pads[:, 2].copy()
        outside = np.flatnonzero(~internal)
        ok = True
        if outside.size:
            ext = self._header.external_tags.get(t)
            ok = ext is not None and ext.size == outside.size and not bool(np.any(ext >= P))
            if ext is not None and ok:
                c[outside] = (c[outside] + np.uint64(P) - ext.astype(np.uint64)) % np.uint64(P)
        packed: NDArray[np.uint64] = (r << np.uint64(32)) | c
        return packed, x, ok

    # --- the engines -----------------------------------------------------------------------------

    def _run(self, plan: _Plan, x: torch.Tensor) -> None:
        kernel = _triton_kernel() if self._use_triton(plan) else None
        flat = x.detach().reshape(-1)
        if not flat.numel():  # from_numpy gives an empty tensor stride (0,), which a 16-bit view refuses
            flat = _torch.empty(0, dtype=flat.dtype, device=flat.device)
        elif not flat.is_contiguous():
            flat = flat.contiguous()
        if kernel is not None and plan.spec.width >= 16 and plan.spec.numel:
            _launch(kernel, plan, flat.view(_torch.int16))
            return
        _bad_torch(plan, flat)

    def _use_triton(self, plan: _Plan) -> bool:
        if self._backend == "torch":
            return False
        if self._backend == "triton":
            if _triton_kernel() is None:
                raise UsageError(_NO_TRITON)
            return True
        return plan.device.type == "cuda"


def _bad_torch(plan: _Plan, flat: torch.Tensor) -> None:
    """The torch engine: write the failing flags of every block of ``plan``'s tensor, chunk by chunk."""
    spec = plan.spec
    full, tail = _words_of(plan, flat)
    nfull = full.shape[0]
    step = max(1, CHUNK_WORDS // plan.words)
    parts = [(r0, full[r0 : r0 + step]) for r0 in range(0, nfull, step)]
    if nfull < spec.nblocks:  # the last block is partial (or the tensor is empty): padded with zeros
        parts.append((nfull, tail))
    for r0, w16 in parts:
        n = w16.shape[0]
        inside = _torch.full((n,), plan.full_internal, dtype=_torch.bool, device=plan.device)
        if r0 + n == spec.nblocks:
            inside[-1] = plan.last_internal
        c, x = plan.c[r0 : r0 + n], plan.x[r0 : r0 + n]
        plan.flags[r0 : r0 + n] = _tags_bad(w16, c, x, inside, plan.consts, plan.ext_ok)


def tile(words: int) -> tuple[int, int]:
    """Blocks per program and warps per program of the Triton kernel for blocks of ``words`` 16-bit words."""
    bpp, warps = _TILES.get(words, (16, 2))
    return BLOCKS_PER_PROGRAM or bpp, NUM_WARPS or warps


def _launch(kernel: Any, plan: _Plan, words: torch.Tensor) -> None:
    spec, k = plan.spec, plan.consts
    bpp, warps = tile(plan.words)
    kernel[(-(-spec.nblocks // bpp),)](
        words, plan.c, plan.flags, k.keys32, k.keep32, k.mask32, k.shift32, k.keys2_32, plan.x,
        spec.nblocks, spec.numel // BLOCK, words.numel(),
        int(plan.full_internal), int(plan.last_internal), int(plan.ext_ok),
        P, plan.words, k.nm, bpp,
        num_warps=warps,
    )  # fmt: skip


__all__ = [
    "BLOCKS_PER_PROGRAM",
    "CHUNK_WORDS",
    "GROUPED",
    "NUM_WARPS",
    "GpuCheck",
    "GpuVerifier",
    "tile",
    "triton_available",
]

"""The Triton engine of `paramseal.gpu`: its kernels, and the table that checks many tensors in one launch.

Triton is optional (only a CUDA machine has and needs it): where it does not import, or
``PARAMSEAL_NO_TRITON`` is set, `_triton_kernel` gives None and the verifier uses torch ops.
The tile (blocks and warps per program) comes from `paramseal.gpu.tile`, whose settings
users change there.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from ._gpu_tensors import _Plan
from ._mac import P
from .formats.pytorch import import_torch
from .levels import BLOCK

_torch = import_torch("paramseal.gpu")

if TYPE_CHECKING:  # pragma: no cover
    import torch


class _Group:
    """Tensors of one device, block size and k (one set of constants), checked by one launch of the grouped kernel.

    One launch per tensor costs a Python launch each (tens of microseconds), which is more than
    the kernel takes on a tensor of a few megabytes; an LLM has hundreds of tensors. The grouped
    kernel reads a table: per program, the tensor and its first block; per tensor, where its
    words are (an offset in 16-bit words from the first tensor's), its sizes and its rules.
    Offsets are recomputed whenever a tensor's storage moved. A tensor the kernel cannot read in
    place (not contiguous, or not 16-byte aligned) is left out of the table and launched on its own.
    """

    def __init__(
        self, plans: list[_Plan], offsets: dict[int, int], c: torch.Tensor, flags: torch.Tensor, x: torch.Tensor
    ) -> None:
        self.plans, self.c, self.flags, self.x = plans, c, flags, x
        self.device = plans[0].device
        specs = [p.spec for p in plans]
        self.nblocks = self._up([s.nblocks for s in specs])
        self.nfull = self._up([s.numel // BLOCK for s in specs])
        self.nwords = self._up([s.numel * s.width // 16 for s in specs])
        self.g0 = self._up([offsets[p.t] for p in plans])
        self.rules = self._up([p.full_internal | p.last_internal << 1 | p.ext_ok << 2 for p in plans], _torch.int32)
        self._ptrs: tuple[tuple[int, ...], int] = ((), -1)  # the pointers and base the offsets are from
        self._woff: torch.Tensor | None = None
        self._programs: dict[tuple[int, tuple[int, ...]], tuple[torch.Tensor, torch.Tensor]] = {}

    def _up(self, values: list[int], dtype: Any = None) -> torch.Tensor:
        out: torch.Tensor = _torch.tensor(values, dtype=dtype or _torch.int64, device=self.device)
        return out

    def programs(self, bpp: int, skip: tuple[int, ...] = ()) -> tuple[torch.Tensor, torch.Tensor]:
        """Per program: its tensor (index in the group) and first block, for ``bpp`` blocks per program.

        The tensors in ``skip`` get no program.
        """
        if (bpp, skip) not in self._programs:
            counts = np.array(
                [0 if i in skip else -(-p.spec.nblocks // bpp) for i, p in enumerate(self.plans)], dtype=np.int64
            )
            tid = np.repeat(np.arange(len(self.plans), dtype=np.int32), counts)
            first = np.arange(tid.size, dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)
            self._programs[bpp, skip] = (
                _torch.from_numpy(tid).to(self.device),
                _torch.from_numpy(first * bpp).to(self.device),
            )
        return self._programs[bpp, skip]

    def launch(self, tensors: Mapping[str, torch.Tensor], tile: tuple[int, int]) -> list[_Plan]:
        """Check in one launch every tensor of the group laid out for it; return their plans (the rest: one by one).

        ``tile``: blocks and warps per program, as `paramseal.gpu.tile` gives them for the group's block size.
        """
        xs = [tensors[p.spec.name] for p in self.plans]
        ptrs = tuple(x.data_ptr() for x in xs)
        # the kernel reads a tensor in place: contiguous and 16-byte aligned (what its loads assume)
        skip = tuple(i for i, x in enumerate(xs) if not x.is_contiguous() or ptrs[i] % 16)
        sized = [i for i in range(len(xs)) if i not in skip and xs[i].numel()]
        if not sized:  # nothing to read (empty tensors only: their last blocks go the per-tensor path)
            return []
        base = max(sized, key=lambda i: xs[i].numel())  # never an empty tensor's null pointer
        if (ptrs, base) != self._ptrs or self._woff is None:
            self._woff = self._up([(q - ptrs[base]) // 2 for q in ptrs])
            self._ptrs = (ptrs, base)
        bpp, warps = tile
        prog_t, prog_b0 = self.programs(bpp, skip)
        k = self.plans[0].consts
        _GROUPED_KERNEL[(prog_t.numel(),)](
            xs[base].detach().reshape(-1).view(_torch.int16), self.c, self.flags,
            k.keys32, k.keep32, k.mask32, k.shift32, k.keys2_32, self.x,
            prog_t, prog_b0, self._woff, self.nblocks, self.nfull, self.nwords, self.g0, self.rules,
            P, self.plans[0].words, k.nm, bpp,
            num_warps=warps,
        )  # fmt: skip
        return [p for i, p in enumerate(self.plans) if i not in skip]


def _triton_kernel() -> Any:
    """The Triton kernel, or None where triton does not import (or PARAMSEAL_NO_TRITON is set)."""
    return None if os.environ.get("PARAMSEAL_NO_TRITON") else _KERNEL


try:  # optional: only a CUDA machine has (and needs) it
    import triton
    import triton.language as tl
except ImportError:
    _KERNEL: Any = None
    _GROUPED_KERNEL: Any = None
else:

    @triton.jit  # type: ignore[misc, untyped-decorator, unused-ignore]
    def _blocks_bad(  # type: ignore[no-untyped-def]
        w_ptr, c_ptr, flag_ptr, key_ptr, keep_ptr, mask_ptr, shift_ptr, key2_ptr, x_ptr,
        b0, nblocks, nfull, nwords, full_internal, last_internal, ext_ok,
        PRIME: tl.constexpr, W: tl.constexpr, NM: tl.constexpr, BPP: tl.constexpr,
    ):  # fmt: skip
        # Blocks b0 .. b0 + BPP - 1 of one tensor, as a [BPP, W] tile of 16-bit words.
        b = b0 + tl.arange(0, BPP)
        j = tl.arange(0, W)
        off = b[:, None] * W + j[None, :]
        jm = tl.arange(0, NM)  # the first NM words hold the tag bits (loaded again: the lines are in L1)
        offm = b[:, None] * W + jm[None, :]
        keep = tl.load(keep_ptr + j)  # [W]: the bits hashed in a block that keeps its tag (0xFFFF past NM)
        ins = tl.where(b < nblocks - 1, full_internal, last_internal)
        if b0 + BPP <= nfull:  # whole blocks only, which all follow the full-block rule: unmasked loads
            w = tl.load(w_ptr + off)
            head = tl.load(w_ptr + offm)
            kept = w.to(tl.int32) & tl.where(full_internal != 0, keep, 0xFFFF)[None, :]
        else:  # the tensor's end: past it, the padded block reads zeros
            w = tl.load(w_ptr + off, mask=off < nwords, other=0)
            head = tl.load(w_ptr + offm, mask=offm < nwords, other=0)
            kept = w.to(tl.int32) & tl.where(ins[:, None] != 0, keep[None, :], 0xFFFF)
        key = tl.load(key_ptr + j).to(tl.uint32, bitcast=True).to(tl.uint64)
        # 16-bit words times 32-bit keys, summed over at most 256 words: below 2**56, exact in uint64
        kept64 = kept.to(tl.uint32, bitcast=True).to(tl.uint64)
        h = tl.sum(kept64 * key[None, :], axis=1)
        # the second hash (zero keys and x for the older MACs): H_k + x_b H_k', each word read once
        key2 = tl.load(key2_ptr + j).to(tl.uint32, bitcast=True).to(tl.uint64)
        h2 = tl.sum(kept64 * key2[None, :], axis=1)
        # the stored tag: disjoint bit fields below bit 32, so a uint32 sum is their concatenation
        bits = head.to(tl.uint16, bitcast=True).to(tl.uint32) & tl.load(mask_ptr + jm).to(tl.uint32)[None, :]
        stored = tl.sum(bits << tl.load(shift_ptr + jm).to(tl.uint32)[None, :], axis=1).to(tl.uint64)
        stored = stored * (ins != 0).to(tl.uint64)
        inb = b < nblocks
        rc = tl.load(c_ptr + b, mask=inb, other=0).to(tl.uint64, bitcast=True)  # r << 32 | c
        xb = tl.load(x_ptr + b, mask=inb, other=0).to(tl.uint64, bitcast=True)
        hm = (h % PRIME + (h2 % PRIME) * xb % PRIME) % PRIME  # every factor < 2**32
        tag = (hm * (rc >> 32) % PRIME + (rc & 0xFFFFFFFF)) % PRIME
        bad = (tag != stored) | ((ins == 0) & (ext_ok == 0))
        tl.store(flag_ptr + b, bad.to(tl.uint8), mask=inb)

    @triton.jit  # type: ignore[misc, untyped-decorator, unused-ignore]
    def _tags_bad_kernel(  # type: ignore[no-untyped-def]
        w_ptr, c_ptr, flag_ptr, key_ptr, keep_ptr, mask_ptr, shift_ptr, key2_ptr, x_ptr,
        nblocks, nfull, nwords, full_internal, last_internal, ext_ok,
        PRIME: tl.constexpr, W: tl.constexpr, NM: tl.constexpr, BPP: tl.constexpr,
    ):  # fmt: skip
        # One tensor per launch: program i checks blocks i*BPP ...
        b0 = tl.program_id(0).to(tl.int64) * BPP
        _blocks_bad(
            w_ptr, c_ptr, flag_ptr, key_ptr, keep_ptr, mask_ptr, shift_ptr, key2_ptr, x_ptr,
            b0, nblocks, nfull, nwords, full_internal, last_internal, ext_ok, PRIME, W, NM, BPP,
        )  # fmt: skip

    @triton.jit  # type: ignore[misc, untyped-decorator, unused-ignore]
    def _grouped_kernel(  # type: ignore[no-untyped-def]
        base_ptr, c_ptr, flag_ptr, key_ptr, keep_ptr, mask_ptr, shift_ptr, key2_ptr, x_ptr,
        prog_t_ptr, prog_b0_ptr, woff_ptr, nblocks_ptr, nfull_ptr, nwords_ptr, g0_ptr, rules_ptr,
        PRIME: tl.constexpr, W: tl.constexpr, NM: tl.constexpr, BPP: tl.constexpr,
    ):  # fmt: skip
        # Many tensors per launch (see _Group): look up this program's tensor, then as above.
        pid = tl.program_id(0)
        t = tl.load(prog_t_ptr + pid)
        b0 = tl.multiple_of(tl.load(prog_b0_ptr + pid), BPP)
        woff = tl.multiple_of(tl.load(woff_ptr + t), 8)  # tensors are 16-byte aligned (checked on the host)
        g0 = tl.load(g0_ptr + t)
        rules = tl.load(rules_ptr + t)
        _blocks_bad(
            base_ptr + woff, c_ptr + g0, flag_ptr + g0, key_ptr, keep_ptr, mask_ptr, shift_ptr, key2_ptr, x_ptr + g0,
            b0, tl.load(nblocks_ptr + t), tl.load(nfull_ptr + t), tl.load(nwords_ptr + t),
            rules & 1, (rules >> 1) & 1, (rules >> 2) & 1, PRIME, W, NM, BPP,
        )  # fmt: skip

    _KERNEL = _tags_bad_kernel
    _GROUPED_KERNEL = _grouped_kernel


def triton_available() -> bool:
    """Whether the Triton kernel can be used here (triton imports)."""
    return _triton_kernel() is not None


__all__ = ["triton_available"]

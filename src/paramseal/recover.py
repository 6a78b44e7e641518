"""Recover a tampered model bit-exactly from the redundancy in its own low bits.

Tampered blocks are erasures (their tags fail); every lane that lost no more
than its parity count is decoded. Restored blocks get their parity and tags
rebuilt, and the whole result is verified again before success is claimed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from . import _code, _embed, _model
from ._bits import write_tags
from ._layout import ranges_mask
from ._progress import Progress
from .keys import Key
from .report import Report, Status, TensorFinding
from .verify import Check, check, report_of


@dataclass(frozen=True, slots=True)
class RecoverResult:
    """Recovered tensors (as sealed: names, order, shapes) and the report."""

    tensors: dict[str, NDArray[np.generic]]
    report: Report
    metadata: dict[str, str]


def recover(
    tensors: Mapping[str, NDArray[np.generic]],
    key: Key,
    header_json: str,
    *,
    metadata: Mapping[str, str] | None = None,
    progress: Progress | None = None,
) -> RecoverResult:
    """Recover a sealed model. Check ``result.report.status``: only "intact" and "recovered" are whole."""
    chk = check(tensors, key, header_json, metadata=metadata, progress=progress)
    return recover_from(chk)


def recover_from(chk: Check) -> RecoverResult:
    """Recover from a finished check."""
    base = report_of(chk)
    # A header read from the weights knows only the metadata's digest: keep what the file has.
    meta = dict(chk.header.user_metadata if chk.header.user_metadata is not None else chk.file_metadata or {})
    if base.status == "intact":
        return RecoverResult(_outputs(chk), base, meta)
    lay, specs = chk.layout, chk.specs
    bad_g = chk.bad_global
    bad_b = np.flatnonzero(bad_g)
    lane_ok = np.ones(lay.lanes, dtype=np.bool_)
    before: dict[int, tuple[NDArray[np.int64], _model.Blocks]] = {}
    if bad_b.size:
        damaged = np.unique(lay.lane[bad_b])
        col = np.full(lay.lanes, -1, dtype=np.int64)
        col[damaged] = np.arange(damaged.size)
        shape_d, shape_p = (damaged.size, lay.K), (damaged.size, lay.M)
        lost_d = ranges_mask(col[lay.lane[bad_b]], lay.off_data[bad_b], lay.n_data[bad_b], shape_d)
        lost_p = ranges_mask(col[lay.lane[bad_b]], lay.off_store[bad_b], lay.n_store[bad_b], shape_p)
        lost_p |= ~lay.stored(damaged)
        # Only the damaged lanes are read, decoded and re-encoded: light damage costs little.
        data, parity = _model.gather_selected(lay, specs, chk.blocks, col, damaged.size)
        cols = np.arange(damaged.size)
        ok = _code.decode(data, parity, cols, lost_d, lost_p)
        good = cols[ok]
        if good.size and lay.M:
            every = good.size == cols.size
            fresh = _code.encode(data if every else np.ascontiguousarray(data[:, good]), lay.M)
            # Surviving parity must agree with the decoded data: a last guard against forged blocks.
            agree = np.all((fresh == (parity if every else parity[:, good])) | lost_p[ok].T, axis=0)
            lane_ok[damaged[good[~agree]]] = False
            if every:
                parity = fresh
            else:
                parity[:, good] = fresh
        lane_ok[damaged[~ok]] = False
        for t in range(len(specs)):
            rows, old = _rebuild(chk, t, data, parity, lane_ok, col)
            if rows.size:
                before[t] = (rows, old)
    findings = _findings(chk, base, before)
    # Blocks not rebuilt were verified by check() and are unchanged; blocks in failed lanes stay
    # tampered. Rebuilt data is trusted because decoding used only MAC-verified shards and the
    # surviving parity agreed with it; rebuilt blocks whose tag lives in the header are checked
    # against that authenticated tag here (for the others this re-reads the tag just written).
    all_ok = not any(b.any() for b in chk.bad)
    for t, (rows, _) in before.items():
        s, ub = specs[t], chk.blocks[t]
        internal = s.block_storage()[1]
        want = _model.compute_tags(chk.mac, chk.header.salt, t, s, ub, internal, rows)
        have = _model.stored_tags(s, ub, internal, chk.header.external_tags.get(t))[rows]
        all_ok &= bool(np.all(want == have))
    status: Status = "recovered" if all_ok else "unrecoverable"
    report = Report(
        kind="recover",
        status=status,
        recoverable=all_ok,
        tensors=findings,
        extra_tensors=base.extra_tensors,
        metadata_issues=base.metadata_issues,
        notes=base.notes,
        key_fingerprint=base.key_fingerprint,
        level=base.level,
        total_blocks=base.total_blocks,
        lanes_failed=int((~lane_ok).sum()),
    )
    return RecoverResult(_outputs(chk), report, meta)


def _rebuild(
    chk: Check,
    t: int,
    data: NDArray[np.uint32],
    parity: NDArray[np.uint32],
    lane_ok: NDArray[np.bool_],
    col: NDArray[np.int64],
) -> tuple[NDArray[np.int64], _model.Blocks]:
    """Rebuild tampered blocks of tensor ``t`` in decoded lanes; return their rows and old content."""
    lay, spec, ub = chk.layout, chk.specs[t], chk.blocks[t]
    b0 = int(lay.block_start[t])
    lanes = lay.lane[b0 : b0 + spec.nblocks]
    rows = np.flatnonzero(chk.bad[t] & lane_ok[lanes])
    if not rows.size:
        return rows, ub[:0]
    ub = chk.blocks[t] = ub.copy()  # may be a view of the caller's arrays: never write into those
    before = ub[rows].copy()
    _model.set_data(ub, spec, rows, _model.lane_block_data(lay, t, spec, data, rows, col))
    _model.write_storage(lay, spec, t, ub, parity, rows, col)
    if spec.reserved:
        h = chk.header
        copy = h.to_json(chk.key, embedded=True).encode() if t in h.carriers else None
        _embed.write_reserved(ub, spec, _embed.reserved_content(spec, t, len(chk.specs), h.salt, copy), rows)
    internal = lay.tag_internal[b0 : b0 + spec.nblocks]
    tags = _model.compute_tags(chk.mac, chk.header.salt, t, spec, ub, internal, rows)
    inside = internal[rows]
    if spec.is_float and inside.any():
        sub = ub[rows[inside]]
        write_tags(sub, tags[inside], spec.k)
        ub[rows[inside]] = sub
    chk.bad[t] = chk.bad[t].copy()
    chk.bad[t][rows] = False
    return rows, before


def _findings(
    chk: Check, base: Report, before: dict[int, tuple[NDArray[np.int64], _model.Blocks]]
) -> dict[str, TensorFinding]:
    out: dict[str, TensorFinding] = {}
    for t, spec in enumerate(chk.specs):
        f = base.tensors[spec.name]
        restored_i: list[int] = []
        restored_x: list[int] = []
        if t in before:
            rows, old = before[t]
            new = chk.blocks[t][rows]
            diff = (old ^ new).astype(np.uint64)
            r, c = np.nonzero(diff)
            flat = rows[r] * 64 + c
            keep = flat < spec.numel
            restored_i = flat[keep].tolist()
            restored_x = diff[r, c][keep].tolist()
        out[spec.name] = TensorFinding(
            spec.name,
            f.tampered_blocks,
            f.issues,
            tuple(restored_i),
            tuple(restored_x),
            tuple(np.flatnonzero(chk.bad[t]).tolist()),
            spec.numel,
        )
    return out


def _outputs(chk: Check) -> dict[str, NDArray[np.generic]]:
    return {s.name: _model.to_tensor(ub, s) for s, ub in zip(chk.specs, chk.blocks, strict=True)}


__all__ = ["RecoverResult", "recover", "recover_from"]

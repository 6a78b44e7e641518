"""Scores of one attacked run against its ground truth: localisation and recovery.

Localisation is scored at three granularities against the bits that really changed:

* tensor: the tensors verify names as tampered;
* block: the 64-value blocks whose tags fail;
* parameter: after recovery, the values recover restored (it knows each one exactly), plus
  every value of the blocks it could not restore (which of them changed is unknown).

Precision is ``None`` when nothing was flagged, recall ``None`` when nothing changed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .._bits import uint_view
from .._lost_ranges import lost_ranges, ranges_mask
from ..attacks import GroundTruth
from ..levels import BLOCK
from ..report import Report


def _pr(hit: int, flagged: int, true: int) -> dict[str, float | int | None]:
    return {
        "precision": hit / flagged if flagged else None,
        "recall": hit / true if true else None,
        "hit": hit,
        "flagged": flagged,
        "true": true,
    }


def _mask(size: int, idx: Any) -> NDArray[np.bool_]:
    m = np.zeros(size, dtype=np.bool_)
    if len(idx):
        m[np.asarray(idx, dtype=np.int64)] = True
    return m


def localisation(truth: GroundTruth, verify_report: Report, recover_report: Report | None) -> dict[str, Any]:
    """Precision and recall at tensor, block and parameter level (boolean masks: linear in model size)."""
    real = truth.by_name()
    t_true = set(truth.changed_tensors)
    t_flag = set(verify_report.tampered_tensors)
    out: dict[str, Any] = {"tensor": _pr(len(t_true & t_flag), len(t_flag), len(t_true))}
    hit = flagged = true = 0
    for name, f in verify_report.tensors.items():
        ch = real.get(name)
        flagged += len(f.tampered_blocks)
        if ch is not None and ch.count and f.tampered_blocks:
            nb = -(-ch.numel // BLOCK)
            hit += int(_mask(nb, f.tampered_blocks)[ch.blocks].sum())
    true = sum(int(c.blocks.size) for c in real.values())
    out["block"] = _pr(hit, flagged, true)
    if recover_report is None:
        out["parameter"] = _pr(0, 0, truth.changed_parameters)
        return out
    hit = flagged = 0
    for name, f in recover_report.tensors.items():
        if not (f.restored_indices or f.unrecoverable_blocks):
            continue
        ch = real.get(name)
        numel = ch.numel if ch is not None else f.numel
        masks = None if f.unrecoverable_masks is None else f.unrecoverable_masks.array
        # whole blocks, or (irs4) the values left unknown: as arrays, as heavy damage names millions of values
        lost = ranges_mask(*lost_ranges(f.unrecoverable_blocks.array, masks, numel), numel)
        pred = lost | _mask(numel, f.restored_indices)
        flagged += int(pred.sum())
        if ch is not None and ch.count:
            hit += int(pred[ch.indices].sum())
    out["parameter"] = _pr(hit, flagged, truth.changed_parameters)
    return out


def restored(
    truth: GroundTruth, sealed: Mapping[str, NDArray[Any]], recovered: Mapping[str, NDArray[Any]] | None
) -> tuple[bool, float | None]:
    """Whether ``recovered`` is bit-identical to ``sealed``, and the fraction of changed values restored."""
    if recovered is None:
        return False, 0.0 if truth.changed_parameters else None
    exact = set(recovered) == set(sealed) and all(
        recovered[n].dtype == a.dtype
        and recovered[n].shape == a.shape
        and np.array_equal(uint_view(recovered[n]), uint_view(a))
        for n, a in sealed.items()
    )
    if not truth.changed_parameters:
        return exact, None
    ok = 0
    for ch in truth.changes:
        r = recovered.get(ch.name)
        if r is None or r.size != sealed[ch.name].size or r.dtype != sealed[ch.name].dtype:
            continue
        ok += int(np.sum(uint_view(r)[ch.indices] == uint_view(sealed[ch.name])[ch.indices]))
    return exact, ok / truth.changed_parameters


def heat_rows(
    truth: GroundTruth, verify_report: Report, numel: Mapping[str, int], bins: int = 64
) -> list[dict[str, Any]]:
    """Per tensor, ``bins`` position bins coded 0 untouched, 1 tampered and flagged, 2 flagged only, 3 missed."""
    real = truth.by_name()
    rows = []
    for name, n in numel.items():
        nb = max(1, -(-n // BLOCK))
        f = verify_report.tensors.get(name)
        fl = np.zeros(nb, dtype=np.bool_)
        if f and f.tampered_blocks:
            fl[np.asarray(f.tampered_blocks, dtype=np.int64)] = True
        tr = np.zeros(nb, dtype=np.bool_)
        if name in real and real[name].count:
            tr[real[name].blocks] = True
        edges = np.linspace(0, nb, min(bins, nb) + 1).astype(np.int64)
        code = []
        for a, b in zip(edges[:-1], edges[1:], strict=True):
            t_, f_ = bool(tr[a:b].any()), bool(fl[a:b].any())
            code.append(1 if t_ and f_ else 2 if f_ else 3 if t_ else 0)
        rows.append({"tensor": name, "codes": code})
    return rows


def max_relative_change(before: Mapping[str, NDArray[Any]], after: Mapping[str, NDArray[Any]]) -> float:
    """Largest |after - before| / |before| over normal (non-zero, finite) float values."""
    worst = 0.0
    for n, a in before.items():
        if a.dtype.kind not in "fV" or a.size == 0:
            continue
        x, y = a.astype(np.float64).reshape(-1), after[n].astype(np.float64).reshape(-1)
        tiny = np.finfo(np.float16).tiny if a.dtype.itemsize == 2 and a.dtype.kind == "f" else 1e-30
        m = np.abs(x) >= tiny
        if m.any():
            worst = max(worst, float(np.max(np.abs(y[m] - x[m]) / np.abs(x[m]))))
    return worst

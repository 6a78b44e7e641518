"""Recover a tampered model bit-exactly from the redundancy in its own low bits.

Tampered blocks are erasures (their tags fail); every lane that lost no more
than its parity count is decoded. Restored blocks get their parity and tags
rebuilt. A rebuilt block whose tag lives in the header is checked against that
authenticated tag before success is claimed; one that carries its own tag cannot be
(the old tag is not part of the code), so it is trusted from the decoding (see
`_conclude`). The blocks verify passed are written as they were read (the written
file is not read back: verify it to check the copy on disk). The input is read more
than once: it must not change while recover runs (README, "A writer during recover").
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

import numpy as np
from numpy.typing import NDArray

from . import _code, _embed, _model
from ._bits import set_lo, write_tags
from ._layout import ranges_mask
from ._lost_ranges import ALL
from ._pages import SCATTERED_BLOCKS, Workspace, is_mapped, release
from ._parallel import task_map
from ._progress import Progress
from .errors import UsageError
from .keys import Key
from .levels import BLOCK
from .report import Ints, Report, Status, TensorFinding, seal_id_arg
from .verify import Check, check, pinned_check, report_of


@dataclass(frozen=True, slots=True)
class RecoverResult:
    """Recovered tensors (as sealed: names, order, shapes) and the report.

    A tensor recover did not rebuild may be the caller's own array (a view of the same memory,
    not a copy): copy it before writing into it, or the input changes too (and the other way round).
    """

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
    metadata_kept: bool | None = None,
    expect_seal: str | None = None,
) -> RecoverResult:
    """Recover a sealed model. Check ``result.report.status``: only "intact" and "recovered" are whole.

    ``metadata_kept``: whether the model's format stores user metadata (see `verify.check`).
    Damage that cannot be undone is reported (status "unrecoverable"), not raised; the errors
    raised are `paramseal.verify`'s. The input is not modified. ``expect_seal``: as in
    `paramseal.verify`; a model of another seal is not rebuilt (its tensors come back as given).
    """
    expect_seal = seal_id_arg(expect_seal)
    chk = check(tensors, key, header_json, metadata=metadata, progress=progress, metadata_kept=metadata_kept)
    other = not_the_expected_seal(chk, expect_seal, tensors)
    if other is not None:
        return recover_from_plan(chk, Recovery(other, {}, {}))
    return recover_from(chk)


def not_the_expected_seal(
    chk: Check, expect_seal: str | None, tensors: Mapping[str, NDArray[np.generic]], also: Iterable[str] = ()
) -> Report | None:
    """The recover report of a model that carries another seal than ``expect_seal`` (a checked id), else None.

    The seal carried is the header's, or another seal's that the weights verify under better
    (`carried_seal`: the approved header given with an older version's weights); ``also`` as there.
    Nothing is decoded: the expected model's weights are not in it (`paramseal.report.pinned`).
    """
    if expect_seal is None:
        return None
    refused = replace(report_of(chk), kind="recover", written=False, decoded=False)
    rep = pinned_check(refused, chk, tensors, expect_seal, also)
    return None if rep.seal_id == expect_seal else rep


@dataclass(frozen=True, slots=True)
class Patch:
    """Rebuilt blocks of one tensor: block rows and their new content.

    The content before is the checked model's (``chk.blocks``), read again when reported: a
    second copy of every rebuilt block would double the memory heavy damage takes.
    """

    rows: NDArray[np.int64]
    new: _model.Blocks


@dataclass(frozen=True, slots=True)
class Recovery:
    """What recover decided, before any output exists: the report and the blocks to rewrite."""

    report: Report
    patches: dict[int, Patch]  # by tensor index in the header
    metadata: dict[str, str]


def recover_from(chk: Check, ws: Workspace | None = None) -> RecoverResult:
    """Recover from a finished check; the tensors come back as sealed (names, order, shapes)."""
    return recover_from_plan(chk, plan_recovery(chk, ws))


def recover_from_plan(chk: Check, rec: Recovery) -> RecoverResult:
    """The recovered tensors in memory: the checked model with the rebuilt blocks written in (copies)."""
    tensors: dict[str, NDArray[np.generic]] = {}
    for t, (spec, ub) in enumerate(zip(chk.specs, chk.blocks, strict=True)):
        if t in rec.patches:
            p = rec.patches[t]
            ub = ub.copy()  # may be a view of the caller's arrays: never write into those
            ub[p.rows] = p.new
        tensors[spec.name] = _model.to_tensor(ub, spec)
    return RecoverResult(tensors, rec.report, rec.metadata)


def plan_recovery(chk: Check, ws: Workspace | None = None) -> Recovery:
    """Decode what can be decoded and rebuild those blocks; nothing is written anywhere.

    Memory: the damaged lanes' data and parity (in ``ws``, on disk for a large model)
    plus the rebuilt blocks; the model itself is only read, chunk by chunk.
    """
    if not chk.complete:
        raise UsageError("recover needs every tensor checked; this check read only some (verify's tensor selection)")
    ws = ws or Workspace()
    if chk.header.irs and any(b.any() for b in chk.bad):
        chk.irs_outcome(ws)  # decoded once, rebuilding: the report below reads its answer from it
    base = report_of(chk)
    # A header read from the weights knows only the metadata's digest: keep what the file has.
    meta = dict(chk.header.user_metadata if chk.header.user_metadata is not None else chk.file_metadata or {})
    if base.status == "intact":  # a recover report still, so --json's kind says which command ran
        return Recovery(replace(base, kind="recover"), {}, meta)
    if chk.header.irs:
        outcome = chk.irs_outcome()
        patches: dict[int, Patch] = outcome.patches
        for t, p in patches.items():
            chk.bad[t] = chk.bad[t].copy()
            chk.bad[t][p.rows if t not in outcome.partly else p.rows[~outcome.partly[t]]] = False
        failed = outcome.failed_groups
        partly, unknown = outcome.partly, outcome.unknown
    else:
        patches, failed = _decode_lanes(chk, ws)
        partly, unknown = {}, None
    return _conclude(chk, base, patches, failed, meta, partly, unknown)


def _decode_lanes(chk: Check, ws: Workspace) -> tuple[dict[int, Patch], int]:
    """Decode the damaged lanes and rebuild the blocks they restore; returns the patches and failed lanes."""
    lay, specs = chk.layout, chk.specs
    bad_b = np.flatnonzero(chk.bad_global)
    lane_ok = np.ones(lay.lanes, dtype=np.bool_)
    patches: dict[int, Patch] = {}
    if bad_b.size:
        lane_of_bad = lay.lane[bad_b]
        damaged = np.unique(lane_of_bad)
        if 4 * damaged.size >= lay.lanes:  # most lanes damaged (a contiguous attack spreads evenly): take all
            damaged = np.arange(lay.lanes)
        col = np.full(lay.lanes, -1, dtype=np.int64)
        col[damaged] = np.arange(damaged.size)
        # Only the damaged lanes are read, decoded and re-encoded: light damage costs little.
        data, parity = _model.gather_selected(lay, specs, chk.blocks, col, damaged.size, ws)
        order = np.argsort(lane_of_bad, kind="stable")
        bad_sorted, lanes_sorted = bad_b[order], lane_of_bad[order]
        step = _code.lanes_per_call(lay.K)
        for i in range(0, damaged.size, step):  # a batch of lanes at a time: masks stay small
            lanes = damaged[i : i + step]
            lo, hi = np.searchsorted(lanes_sorted, [lanes[0], lanes[-1] + 1])
            bb, ll = bad_sorted[lo:hi], lanes_sorted[lo:hi]
            row = np.searchsorted(lanes, ll)
            lost_d = ranges_mask(row, lay.off_data[bb], lay.n_data[bb], (lanes.size, lay.K))
            lost_p = ranges_mask(row, lay.off_store[bb], lay.n_store[bb], (lanes.size, lay.M))
            lost_p |= ~lay.stored(lanes)
            cols = col[lanes]
            ok = _code.decode(data, parity, cols, lost_d, lost_p)
            redo = ok & lost_d.any(axis=1)
            # Surviving parity must agree with the decoded data: a last guard against forged blocks.
            agree = _code.reencode(data, parity, cols[redo], lost_p[redo])
            lane_ok[lanes[redo][~agree]] = False
            lane_ok[lanes[~ok]] = False
        for t in range(len(specs)):
            p = _rebuild(chk, t, data, parity, lane_ok, col, ws)
            release(data, parity)
            if p is not None:
                patches[t] = p
    return patches, int((~lane_ok).sum())


def _conclude(
    chk: Check,
    base: Report,
    patches: dict[int, Patch],
    failed: int,
    meta: dict[str, str],
    partly: dict[int, NDArray[np.bool_]] | None = None,
    unknown: dict[int, NDArray[np.uint64]] | None = None,
) -> Recovery:
    """The recover report: what was restored, and whether every rebuilt block carries its authentic tag.

    ``partly`` (irs4, per tensor a mask over its patch's blocks): failed blocks not rebuilt but with the
    decoded groups' corrections written in, and the tags they were found with. Those whose tag then holds
    are restored whole; the others stay tampered, are written with the rest (a partial result), and name
    as unrecoverable only the values ``unknown`` masks (per tensor, a mask per block ``partly`` marks;
    `_lost_ranges`). The patches are written as they are: no copy of them is made unless a rebuilt
    block's tag fails (it is then left out).
    """
    specs = chk.specs
    # Blocks not rebuilt were verified by check() and are unchanged; blocks in failed lanes stay
    # tampered. Rebuilt data is trusted because decoding used only MAC-verified shards and the
    # surviving parity agreed with it (irs4: or, decoding errors-only, the errors it located lie in
    # failed blocks and reproduce every syndrome, and the keyed group layout keeps anyone without
    # the key from making the words it trusts a codeword: see _strata). Rebuilt blocks whose tag
    # lives in the header are checked against that authenticated tag here (the others carry the
    # tag just written, which a check could only confirm). A block that fails is not restored: it
    # stays tampered, and the report names it.
    patches, partly = dict(patches), dict(partly or {})
    for t, p in list(patches.items()):
        part = partly.get(t)
        # A float block that carries its own tag holds the one `finish_rebuilt` computed from this
        # content: computing it again (a MAC over every rebuilt block) could only agree.
        which = ~specs[t].tag_inside(p.rows) if specs[t].is_float else np.ones(p.rows.size, np.bool_)
        good = _tags_hold(chk, t, p, which if part is None else which | part)
        if part is not None and (good & part).any():  # the corrections may have been all a block lacked
            chk.bad[t] = chk.bad[t].copy()
            chk.bad[t][p.rows[good & part]] = False
        keep = good if part is None else good | part  # a partly decoded block is written either way
        if not keep.all():
            chk.bad[t] = chk.bad[t].copy()
            chk.bad[t][p.rows[~keep]] = True
            patches[t] = Patch(p.rows[keep], p.new[keep])
            if part is not None:
                partly[t] = part[keep]
            if not keep.any():
                del patches[t]
    all_ok = not any(b.any() for b in chk.bad) and not chk.metadata_lost  # sealed metadata known only by digest
    findings = _findings(chk, base, patches, partly, unknown)
    status: Status = "recovered" if all_ok else "unrecoverable"
    report = Report(
        kind="recover",
        status=status,
        recoverable=all_ok,
        tensors=findings,
        extra_tensors=base.extra_tensors,
        tensor_places=base.tensor_places,
        metadata_issues=base.metadata_issues,
        notes=base.notes,
        key_fingerprint=base.key_fingerprint,
        level=base.level,
        seal_id=base.seal_id,
        total_blocks=base.total_blocks,
        lanes_failed=failed,
    )
    return Recovery(report, patches, meta)


def _tags_hold(chk: Check, t: int, p: Patch, which: NDArray[np.bool_] | None = None) -> NDArray[np.bool_]:
    """Which blocks of ``p`` (tensor ``t``) carry the tag their content computes; ``which``: only those checked."""
    good = np.ones(p.rows.size, np.bool_)
    at = np.arange(p.rows.size) if which is None else np.flatnonzero(which)
    if not at.size:  # most often: every rebuilt block keeps its tag inside, just written (see `_conclude`)
        return good
    s = chk.specs[t]
    internal = s.block_storage()[1]
    ext = chk.header.external_tags.get(t)
    before = np.cumsum(~internal) - 1  # index of each external block's tag
    for a in range(0, at.size, _FINDINGS_STEP):  # a step at a time: the blocks may lie in a scratch file
        i = at[a : a + _FINDINGS_STEP]
        rows, new = p.rows[i], p.new[i]
        want = _model.compute_tags(chk.mac, chk.header.salt, t, s, new, internal, at=rows)
        mine = None if ext is None else ext[before[rows][~internal[rows]]]
        good[i] = want == _model.stored_tags(s, new, internal[rows], mine)
        release(p.new[i[0] : i[-1] + 1])  # only the pages this step read (p.new may be a whole scratch file)
    return good


def _rebuild(
    chk: Check,
    t: int,
    data: NDArray[np.uint32],
    parity: NDArray[np.uint32],
    lane_ok: NDArray[np.bool_],
    col: NDArray[np.int64],
    ws: Workspace,
) -> Patch | None:
    """Rebuild the tampered blocks of tensor ``t`` that lie in decoded lanes (the input is not touched)."""
    lay, spec, ub = chk.layout, chk.specs[t], chk.blocks[t]
    b0 = int(lay.block_start[t])
    rows = np.flatnonzero(chk.bad[t])
    rows = rows[lane_ok[lay.lane[b0 + rows]]]  # lanes of the tampered blocks only: each is a keyed permutation
    if not rows.size:
        return None
    # Into an array of ws (a scratch file past the budget), a bounded group at a time: each rebuilt
    # block reads its own lane of the stores, and the blocks built so far need not stay resident.
    new = ws.zeros((rows.size, ub.shape[1]), ub.dtype.type)
    # Only the rebuilt rows' entries are read (finish_rebuilt): the whole tensor's from the layout cost a
    # search per block, a pass over most of the model for a few damaged blocks in each tensor.
    internal = np.zeros(spec.nblocks, np.bool_)
    internal[rows] = spec.tag_inside(rows)
    step = SCATTERED_BLOCKS // 4 if is_mapped(data) or is_mapped(new) else rows.size
    for i in range(0, rows.size, step):
        part = rows[i : i + step]
        sub = ub[part]  # fancy indexing: a copy
        release(ub)
        every = np.arange(part.size)
        _model.set_data(sub, spec, every, _model.lane_block_data(lay, t, spec, data, part, col))
        if spec.is_float:
            words = _model.block_parity(lay, t, spec, parity, part, col)
            lo = np.zeros((part.size, 2 * spec.k), dtype=np.uint32)
            lo[:, 1:] = words
            set_lo(sub, lo.view(np.uint8), spec.k)
        release(data, parity)
        finish_rebuilt(chk, t, sub, part, internal)
        new[i : i + part.size] = sub
        release(new[i : i + part.size])
    chk.bad[t] = chk.bad[t].copy()
    chk.bad[t][rows] = False
    return Patch(rows, new)


def finish_rebuilt(
    chk: Check,
    t: int,
    new: _model.Blocks,
    rows: NDArray[np.int64],
    internal: NDArray[np.bool_],
    found: NDArray[np.uint64] | None = None,
) -> None:
    """Rebuilt blocks ``rows`` of tensor ``t`` (``new``, one row each) get their header copy and tags back.

    ``found``: tags to write instead of computed ones (the ones a block not wholly rebuilt was found with).
    """
    spec = chk.specs[t]
    if spec.reserved:
        h = chk.header
        copy = h.to_json(chk.key, embedded=True).encode() if t in h.carriers else None
        content = _embed.reserved_content(spec, t, len(chk.specs), h.salt, copy, h.copies)
        _embed.write_reserved(new, spec, content, np.arange(rows.size), at=rows)
    tags = _model.compute_tags(chk.mac, chk.header.salt, t, spec, new, internal, at=rows) if found is None else found
    inside = internal[rows]
    if spec.is_float and inside.all():  # most often: written where they lie, without two copies of every block
        write_tags(new, tags, spec.k)
    elif spec.is_float and inside.any():
        sub = new[inside]
        write_tags(sub, tags[inside], spec.k)
        new[inside] = sub


_FINDINGS_STEP = 1 << 16  # rebuilt blocks compared with their tampered content at a time


def _findings(
    chk: Check,
    base: Report,
    patches: dict[int, Patch],
    partly: dict[int, NDArray[np.bool_]],
    unknown: dict[int, NDArray[np.uint64]] | None,
) -> dict[str, TensorFinding]:
    # Tensors side by side: under heavy damage every rebuilt block is read and compared (numpy only).
    found = task_map(lambda tp: _restored(chk, tp[0], tp[1]), list(patches.items()))
    restored = dict(zip(patches, found, strict=True))
    out: dict[str, TensorFinding] = {}
    for t, spec in enumerate(chk.specs):
        f = base.tensors[spec.name]
        restored_i, restored_x = restored.get(t, ([], []))
        ri = np.concatenate(restored_i) if restored_i else np.zeros(0, np.int64)
        rx = np.concatenate(restored_x) if restored_x else np.zeros(0, np.uint64)
        bad = np.flatnonzero(chk.bad[t])
        masks = None
        if t in partly and unknown is not None and bad.size:  # partly decoded blocks name only their unknown values
            masks = np.full(bad.size, ALL)
            part = patches[t].rows[partly[t]]
            still = chk.bad[t][part]  # the others' tags hold: wholly restored
            masks[np.searchsorted(bad, part[still])] = unknown[t][still]
            at = np.minimum(np.searchsorted(bad, ri // BLOCK), max(bad.size - 1, 0))
            hit = (bad[at] == ri // BLOCK) & ((masks[at] >> (ri % BLOCK).astype(np.uint64)) & np.uint64(1) != 0)
            ri, rx = ri[~hit], rx[~hit]  # a value whose sealed bits stay unknown is not restored
        out[spec.name] = TensorFinding(
            spec.name,
            f.tampered_blocks,
            f.issues,
            Ints(ri),
            Ints(rx),
            Ints(bad),
            spec.numel,
            f.moved_from,
            f.moved_how,
            unrecoverable_masks=None if masks is None else Ints(masks),
        )
    return out


def _restored(chk: Check, t: int, p: Patch) -> tuple[list[NDArray[np.int64]], list[NDArray[np.uint64]]]:
    """The values of tensor ``t`` that ``p`` changes: their flat indices, and the XOR of old and new bits (parts)."""
    spec, ub = chk.specs[t], chk.blocks[t]
    restored_i: list[NDArray[np.int64]] = []
    restored_x: list[NDArray[np.uint64]] = []
    for a in range(0, p.rows.size, _FINDINGS_STEP):  # bounded temporaries
        rows = p.rows[a : a + _FINDINGS_STEP]
        diff = (ub[rows] ^ p.new[a : a + _FINDINGS_STEP]).reshape(-1)
        release(ub, p.new[a : a + _FINDINGS_STEP])
        at = np.flatnonzero(diff)  # flat: a 2-D nonzero and fancy index took twice as long
        r, c = np.divmod(at, ub.shape[1])
        flat = rows[r] * 64 + c
        keep = flat < spec.numel
        restored_i.append(flat[keep])
        restored_x.append(diff[at][keep].astype(np.uint64))
    return restored_i, restored_x


__all__ = [
    "Patch",
    "RecoverResult",
    "Recovery",
    "not_the_expected_seal",
    "plan_recovery",
    "recover",
    "recover_from",
    "recover_from_plan",
]

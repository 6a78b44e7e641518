"""Recovery with the irs4 code: decode the groups that touch failed blocks, rebuild the blocks they restore.

Blocks whose tag failed mark their words as possible errors (``FLAG_BAD``). A group whose
flagged words fit as erasures is decoded from its verified words alone; otherwise (scattered
damage flags nearly every block) it is decoded errors-only, and each error it locates must lie
in a failed block. A block is rebuilt only if every group holding one of its words decoded.
Errors-only decoding trusts the flagged words it does not locate as errors: that is sound
only because the keyed group layout (``_strata``: rotations and position permutations) keeps
an attacker without the key from making them a codeword in every group; in the first irs4
layout, without permutations, such groups count as failed. Nothing here writes to the model.

A failed block holding a word of a group that failed is not rebuilt, but the corrections of the
groups that decoded are still written into a copy of it (``Outcome.partly``: its tag bits and the
failed groups' words left as found; recover restores it whole where its tag then holds): what stays
unknown there is named value by value (``Outcome.unknown``), not the whole block. Those corrections
are trusted under the same rules as in a whole recovery: a group's decoding does not depend on the
others'.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from . import _irs, _native, _outer, _strata
from ._bits import read_tags, tag_mask
from ._irs_consts import FLAG_BAD, N_POS
from ._pages import Workspace, release
from ._parallel import in_turn, task_map
from ._strata import GROUP_BATCH, DataRegion, Strata
from .errors import FormatError
from .levels import BLOCK

if TYPE_CHECKING:
    from .recover import Patch
    from .verify import Check

UNTRUSTED = -5  # group status: decoded errors-only in a layout where that cannot be trusted
_REBUILD_STEP = 1 << 15  # blocks rebuilt at a time
_SCAN = 1 << 16  # failed blocks mapped to groups per step (bounds the index temporaries)
#: Below this share of failed blocks, a batch's corrections are looked for among its flagged words only
#: (sparse damage: few of them); above it (scattered damage flags about half the words) in its whole.
_FEW_FAILED = 1 / 8


@dataclass(frozen=True, slots=True)
class Outcome:
    """What decoding found: the blocks to write per tensor, and the groups that failed.

    A tensor's rebuilt blocks and its partly decoded ones are one patch, in block order (the output's):
    merging two afterwards took a third copy of them all, as large as the model under scattered damage.
    """

    patches: dict[int, Patch]
    failed_groups: int
    ok: bool  # every failed block was rebuilt
    # Per tensor, which blocks of its patch were not rebuilt but only corrected by the decoded groups (float
    # tensors only), and per such block a mask of its values whose sealed bits stay unknown (bit j: value j).
    partly: dict[int, NDArray[np.bool_]] = field(default_factory=dict)
    unknown: dict[int, NDArray[np.uint64]] = field(default_factory=dict)


def strata_of(chk: Check) -> Strata:
    """The stratum layout the header describes (rebuilt from the tensor table, key and salt)."""
    h = chk.header
    if h.host not in (0, *_outer.KNOWN_HOSTS) or h.strata_perms not in (0, _strata.PERMS):
        known = " or ".join(map(str, _outer.KNOWN_HOSTS))
        raise FormatError(
            f"the seal header records outer code {h.host} and {h.strata_perms} stratum permutations, which this "
            f"ParamSeal does not know (it writes {known} and {_strata.PERMS}); the header was written by an "
            "incompatible ParamSeal"
        )
    st = _strata.plan(chk.specs, chk.key, h.salt, h.host, h.strata_perms, h.keyed_offset)
    if st.G != h.strata:
        raise FormatError(
            f"the seal header records {h.strata} words per stratum but its tensor table gives {st.G}; "
            "the header was written by an incompatible ParamSeal"
        )
    return st


def _decode(st: Strata, w: NDArray[np.uint32], f: NDArray[np.uint8]) -> NDArray[np.int8]:
    """`_irs.decode`; in the unpermuted layout of the first irs4 seals a group decoded errors-only fails.

    There (``strata_perms`` 0) its flagged words cannot be trusted: see `_strata`.
    """
    status = _irs.decode(st.code, w, f)
    if not st.trusted:
        status[(status >= 0) & ~_irs.fits(st.code, f)] = UNTRUSTED
    return status


def _flats(chk: Check) -> list[NDArray[np.unsignedinteger]]:
    return [ub.reshape(-1)[: s.numel] for s, ub in zip(chk.specs, chk.blocks, strict=True)]


def _block_runs(
    st: Strata, t: int, rows: NDArray[np.int64]
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int64]]:
    """The groups holding the words of blocks ``rows`` of tensor ``t``, as runs of consecutive groups.

    A block's words are consecutive in the stream, so within one stratum they fall in consecutive
    groups: ``(first group, count, index into rows)`` per piece, a block cut where it crosses a
    stratum or the groups wrap. Constant work per block, none per word.
    """
    wpb = st.words_per_block(t)
    v0 = int(st.start[t]) + rows * wpb
    n = np.minimum(wpb, int(st.start[t] + st.nwords[t]) - v0)
    which = np.arange(rows.size)
    parts = []
    while v0.size:  # cut at stratum ends (once, unless a tiny model's strata are shorter than a block)
        n1 = np.minimum(n, st.G - v0 % st.G)
        parts.append((v0, n1, which))
        more = n > n1
        v0, n, which = (v0 + n1)[more], (n - n1)[more], which[more]
    v0, n, which = (np.concatenate(x) for x in zip(*parts, strict=True)) if parts else (v0, n, which)
    g0 = st.groups_of(v0)
    # cut where the groups wrap past G - 1 back to 0
    n2 = np.minimum(n, st.G - g0)
    g0, n, which = np.r_[g0, np.zeros_like(g0)], np.r_[n2, n - n2], np.r_[which, which]
    keep = n > 0
    return g0[keep], n[keep], which[keep]


def damaged_groups(st: Strata, chk: Check) -> NDArray[np.bool_]:
    """Groups holding at least one word of a failed block."""
    edges = np.zeros(st.G + 1, np.int64)
    for t, bad in enumerate(chk.bad):
        rows = np.flatnonzero(bad)
        for i in range(0, rows.size, _SCAN):
            g0, n, _ = _block_runs(st, t, rows[i : i + _SCAN])
            np.add.at(edges, g0, 1)
            np.add.at(edges, g0 + n, -1)
    return np.cumsum(edges[: st.G]) > 0


def _failed_blocks(st: Strata, t: int, rows: NDArray[np.int64], lost: NDArray[np.int64]) -> NDArray[np.bool_]:
    """Which blocks ``rows`` of tensor ``t`` hold a word in a group that could not be decoded.

    ``lost``: running count of undecoded groups (``lost[g]`` = those before g).
    """
    failed = np.zeros(rows.size, np.bool_)
    for i in range(0, rows.size, _SCAN):
        g0, n, which = _block_runs(st, t, rows[i : i + _SCAN])
        hit = lost[g0 + n] > lost[g0]
        failed[i + which[hit]] = True
    return failed


def estimate(chk: Check) -> bool:
    """Whether recovery should succeed, from the flags alone (used when not every tensor was read).

    A group counts as recoverable when its failed words fit as erasures (`_irs.within_reach`: with
    every failed word taken as wrong, errors-only decoding reaches no further, and erasure decoding
    is trusted in every layout); the groups that do not must be few enough in their superblock for
    the outer code. Scattered damage flags most words of a group although few are wrong, so there
    it says no where decoding would tell; tensors not read count as intact.
    """
    st = strata_of(chk)
    code, outer = st.code, st.outer
    gids = np.flatnonzero(damaged_groups(st, chk))
    lost = np.zeros(st.G, np.bool_)
    for g, f in _flag_batches(st, chk, gids):
        lost[g] = ~_irs.within_reach(code, f)
    for sb in np.unique(np.searchsorted(outer.sb_start, np.flatnonzero(lost), side="right") - 1):
        a, b = outer.span(int(sb))
        if not (st.host and outer.can_repair(lost[a:b], int(sb))):
            return False
    return True


def _flag_batches(
    st: Strata, chk: Check, gids: NDArray[np.int64]
) -> Iterator[tuple[NDArray[np.int64], NDArray[np.uint8]]]:
    """``(groups, flags)`` of groups ``gids`` a batch at a time (by runs when most groups are damaged)."""
    if 4 * gids.size >= st.G:
        for g0 in range(0, st.G, GROUP_BATCH):
            g1 = min(st.G, g0 + GROUP_BATCH)
            yield np.arange(g0, g1, dtype=np.int64), st.flags_range(g0, g1, chk.bad)
        return
    for i in range(0, gids.size, GROUP_BATCH):
        g = gids[i : i + GROUP_BATCH]
        yield g, st.flags(st.vindex(g), chk.bad)


def _few_failed(chk: Check) -> bool:
    """Whether under `_FEW_FAILED` of the model's blocks failed: how `decode_check`'s batches look for corrections."""
    nfailed = sum(int(np.count_nonzero(b)) for b in chk.bad)
    return nfailed < _FEW_FAILED * sum(s.nblocks for s in chk.specs)


def decode_check(chk: Check, *, rebuild: bool = True, ws: Workspace | None = None) -> Outcome:
    """Decode every damaged group and rebuild the failed blocks it can (the model is not modified).

    ``rebuild`` False only decides whether every failed block can be rebuilt (``ok``, for verify):
    no corrections are kept and no blocks built, so memory does not grow with the damage.
    ``ws`` holds the rebuilt blocks (in memory when None).
    """
    st = strata_of(chk)
    flats = _flats(chk)
    data = st.pack_data(flats)
    gids = np.flatnonzero(damaged_groups(st, chk))
    status = np.zeros(st.G, np.int8)
    few = rebuild and _few_failed(chk)
    nbatch = -(-gids.size // GROUP_BATCH)
    chk.progress.expect(nbatch)  # heavy damage decodes for seconds a GiB: the bar goes on through it

    def batch(i: int) -> tuple[NDArray[np.int64], NDArray[np.uint32]]:
        """Decode groups ``gids[i : i + GROUP_BATCH]``; their corrections: stream indices, words as stored."""
        chk.progress.step(f"decode {i // GROUP_BATCH + 1}/{nbatch}")
        g = gids[i : i + GROUP_BATCH]
        w, f = st.groups(flats, data, g, chk.bad)
        assert f is not None
        pad = st.pad(g)
        w ^= pad  # the code runs on the words plus the keyed offset
        flat_w, flat_f = w.reshape(-1), f.reshape(-1)
        # Corrections are words of failed blocks (FLAG_BAD) that decoding changed: under sparse damage only
        # those words are kept aside and compared (a copy and comparison of the whole batch cost more); under
        # heavy damage the whole batch is, and only the words that changed are indexed.
        at = np.flatnonzero(flat_f & FLAG_BAD) if few else None
        before = flat_w[at] if at is not None else w.copy() if rebuild else w
        status[g] = ok = _decode(st, w, f)
        if not rebuild:
            return np.zeros(0, np.int64), np.zeros(0, np.uint32)
        # Corrections: words of failed blocks changed outside the free bits of their fixed bytes
        # (tag and header-copy bits, which the rebuild writes anew; at k = 12 a fixed byte also
        # holds value bits). Counting those too made 4x as many under scattered damage (a tagged
        # word in every failed block), each one sorted and written.
        # Flat indices: a 2-D nonzero and 2-D fancy indexing took twice as long.
        if at is None:
            at = np.flatnonzero(flat_w != before.reshape(-1))
            before = before.reshape(-1)[at]
        fl, new = flat_f[at], flat_w[at]
        r, c = np.divmod(at, N_POS)
        rewritten = ~_irs.byte_mask(fl) & np.where(c < st.free_strata, np.uint32((1 << st.k) - 1), np.uint32(0))
        keep = ((fl & FLAG_BAD) != 0) & (ok[r] >= 0) & (((new ^ before) & ~rewritten) != 0)
        at, r, c = at[keep], r[keep], c[keep]
        return st.vindex_at(g[r], c), new[keep] ^ pad.reshape(-1)[at]

    # Batches side by side, one per core (as seal's superblocks): one's gather and numpy steps
    # overlap another's kernels. Only with the compiled decoder: numba's is a parallel kernel.
    side_by_side = task_map if _native.encodes(st.code) else in_turn
    found = side_by_side(batch, range(0, gids.size, GROUP_BATCH))
    fixes = ([v for v, _ in found], [w for _, w in found]) if rebuild else None
    if st.host:
        for sb in np.unique(np.searchsorted(st.outer.sb_start, np.flatnonzero(status < 0), side="right") - 1):
            _outer_repair(st, chk, flats, data, int(sb), status, fixes)
    fv, fw = np.zeros(0, np.int64), np.zeros(0, np.uint32)
    if fixes is not None and fixes[0]:
        fv, fw = np.concatenate(fixes[0]), np.concatenate(fixes[1])
        order = np.argsort(fv, kind="stable")
        fv, fw = fv[order], fw[order]
    all_ok = True
    lost = np.r_[0, np.cumsum(status < 0)]
    todo: list[tuple[int, NDArray[np.int64], NDArray[np.unsignedinteger], NDArray[np.bool_] | None]] = []
    unknown: dict[int, NDArray[np.uint64]] = {}
    for t in range(len(chk.specs)):
        rows = np.flatnonzero(chk.bad[t])
        if not rows.size:
            continue
        failed = _failed_blocks(st, t, rows, lost)
        all_ok &= not failed.any()
        if not rebuild:
            continue
        ub = chk.blocks[t]
        # Failed blocks are written only with a correction in (float tensors: the others stay as found), in
        # the one array of their tensor's rebuilt blocks: rows stays in block order, as the output needs.
        written = ~failed
        if st.is_float[t]:
            written[failed] = _corrected(st, t, rows[failed], fv)
        rows, failed = rows[written], failed[written]
        partly = failed if failed.any() else None
        if rows.size:
            todo.append((t, rows, (ws or Workspace()).zeros((rows.size, ub.shape[1]), ub.dtype.type), partly))
        if partly is not None:
            unknown[t] = _unknown_masks(st, chk, t, rows[partly], lost)

    def rebuilt(item: tuple[int, NDArray[np.int64], NDArray[np.unsignedinteger], NDArray[np.bool_] | None]) -> Patch:
        t, rows, new, partly = item
        p = _rebuild(chk, st, t, rows, fv, fw, new, partly)
        release(chk.blocks[t])
        return p

    # Tensors side by side (their arrays taken above: a workspace is not shared between threads): heavy
    # damage rebuilds half the blocks, a copy and a MAC each, for half a second a GiB on one core.
    # Only with the compiled MAC: numba's is a parallel kernel.
    done = (task_map if _native.portable() else in_turn)(rebuilt, todo)
    patches = {t: p for (t, _, _, _), p in zip(todo, done, strict=True)}
    partly_of = {t: partly for (t, _, _, partly), _ in zip(todo, done, strict=True) if partly is not None}
    return Outcome(patches, int((status < 0).sum()), all_ok, partly_of, unknown)


def _corrected(st: Strata, t: int, rows: NDArray[np.int64], fv: NDArray[np.int64]) -> NDArray[np.bool_]:
    """Which of blocks ``rows`` of tensor ``t`` hold a correction (``fv``: sorted stream indices)."""
    lo, hi = np.searchsorted(fv, [st.start[t], st.start[t] + st.nwords[t]])
    return np.isin(rows, (fv[lo:hi] - st.start[t]) // st.words_per_block(t))


def _unknown_masks(
    st: Strata, chk: Check, t: int, rows: NDArray[np.int64], lost: NDArray[np.int64]
) -> NDArray[np.uint64]:
    """Per failed block ``rows`` of float tensor ``t`` (not rebuilt), a mask of its values of unknown sealed bits.

    They are the words of groups that failed (``lost``: running count, as `_failed_blocks`), and
    the values holding tag bits in a block that keeps its tag inside (the tag is not part of the
    code: any of its bits may have been changed). Bit j stands for value j of the block.
    """
    spec = chk.specs[t]
    internal = spec.block_storage()[1]
    holds_tag = tag_mask(spec.k, spec.width) != 0
    out = np.zeros(rows.size, np.uint64)
    for i in range(0, rows.size, _SCAN):  # bounded temporaries: 64 indices a block
        r = rows[i : i + _SCAN]
        local = r[:, None] * BLOCK + np.arange(BLOCK)
        g = st.groups_of(int(st.start[t]) + np.minimum(local, spec.numel - 1))
        unk = (lost[g + 1] > lost[g]) | (internal[r][:, None] & holds_tag)
        unk &= local < spec.numel
        out[i : i + r.size] = np.packbits(unk, axis=1, bitorder="little").view("<u8").reshape(-1)
    return out


def _outer_repair(
    st: Strata,
    chk: Check,
    flats: list[NDArray[np.unsignedinteger]],
    data: DataRegion,
    sb: int,
    status: NDArray[np.int8],
    fixes: tuple[list[NDArray[np.int64]], list[NDArray[np.uint32]]] | None,
) -> None:
    """Rebuild the groups of superblock ``sb`` that the inner code could not, from the outer code.

    The whole superblock is decoded (an undamaged group still needs its tag bytes re-derived
    to give back the parity it hosts). A rebuilt group must agree with every word of it whose
    block verified; then its words in failed blocks are corrections like the inner decoder's.
    """
    code, outer = st.code, st.outer
    a, b = outer.span(sb)
    groups = np.arange(a, b, dtype=np.int64)
    v = st.vindex(groups)
    pad = st.pad(groups)
    w, f = st.groups(flats, data, groups, chk.bad)
    assert f is not None
    w ^= pad
    received = w.copy()
    failed = _decode(st, w, f) < 0
    rows = outer.repair(code, w, failed, sb)
    if rows is None:
        return
    lost = np.flatnonzero(failed)
    keep = _irs.byte_mask(f[lost])  # the bytes stored as the code expects them
    bad = (f[lost] & FLAG_BAD) != 0
    agree = np.all(bad | ((rows & keep) == (received[lost] & keep)), axis=1)
    if not agree.all():  # a verified word disagrees: the rebuilt content cannot be trusted
        return
    if fixes is not None:
        changed = bad & (rows != received[lost])
        fixes[0].append(v[lost][changed])
        fixes[1].append((rows ^ pad[lost])[changed])
    status[a + lost] = 2


def _rebuild(
    chk: Check,
    st: Strata,
    t: int,
    rows: NDArray[np.int64],
    fv: NDArray[np.int64],
    fw: NDArray[np.uint32],
    new: NDArray[np.unsignedinteger],
    partly: NDArray[np.bool_] | None = None,
) -> Patch:
    """Blocks ``rows`` of tensor ``t`` with the decoded words written in, then their header copy and tags.

    A bounded number of blocks at a time, into ``new`` (zeros, one row per block: a workspace's array).
    Those ``partly`` marks (blocks holding a word of a failed group) keep the tags they were found with.
    """
    from .recover import Patch, finish_rebuilt

    spec, ub = chk.specs[t], chk.blocks[t]
    internal = spec.block_storage()[1]
    lo, hi = np.searchsorted(fv, [st.start[t], st.start[t] + st.nwords[t]])
    local, words = fv[lo:hi] - st.start[t], fw[lo:hi]
    wpb = st.words_per_block(t)
    blk = local // wpb
    pos = np.searchsorted(rows, blk)
    inside = (pos < rows.size) & (rows[np.minimum(pos, rows.size - 1)] == blk)
    pos, off, words = pos[inside], (local % wpb)[inside], words[inside]
    cut = np.searchsorted(pos, np.arange(0, rows.size + _REBUILD_STEP, _REBUILD_STEP))  # pos is sorted
    for i, a in enumerate(range(0, rows.size, _REBUILD_STEP)):
        at = rows[a : a + _REBUILD_STEP]
        part = ub[at]  # fancy indexing: a copy
        release(ub)
        kept = None if partly is None or not partly[a : a + _REBUILD_STEP].any() else partly[a : a + _REBUILD_STEP]
        found = None if kept is None else read_tags(part, spec.k)[kept]  # before the corrections go in
        as_words = part.view(np.uint8).reshape(part.shape[0], -1).view(np.uint32)  # [rows, wpb]
        as_words[pos[cut[i] : cut[i + 1]] - a, off[cut[i] : cut[i + 1]]] = words[cut[i] : cut[i + 1]]
        if kept is None or kept.all():
            finish_rebuilt(chk, t, part, at, internal, found)
        else:  # rebuilt and partly decoded blocks side by side: each kind's tags (copies of one step)
            for which, tags in ((~kept, None), (kept, found)):
                sub = part[which]
                finish_rebuilt(chk, t, sub, at[which], internal, tags)
                part[which] = sub
        new[a : a + part.shape[0]] = part
        release(new[a : a + part.shape[0]])  # in a scratch file past the budget: let its pages go
    return Patch(rows, new)


__all__ = ["Outcome", "decode_check", "estimate", "strata_of"]

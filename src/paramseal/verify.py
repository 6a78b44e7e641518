"""Verify a sealed model: recompute every block tag and check the tensor table and metadata.

Verification never trusts the file's tensor table: the authenticated header
says which tensors must exist, with which dtype and shape. Missing, renamed,
reshaped, retyped, swapped and extra tensors are all named.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import Any

import numpy as np
from numpy.typing import NDArray

from . import _embed, _model
from ._findings import (
    DECLARED_SHAPE,
    GRAPH_EDITED,
    GRAPH_EDITED_V1,
    GRAPH_STRIPPED,
    META_DIFFERS,
    META_STRIPPED,
    OWN_DIFFERS,
    OWN_LOST,
    UnfoundedTableError,
    converted,
    dtype_label,
    metadata_findings,
    refuse_unfounded,
    unmatched,
    usable,
)
from ._layout import Layout, TensorSpec, build_layout
from ._mac import MAC_V1, MAC_V2, BlockMac
from ._pages import chunks, read
from ._progress import Progress
from .errors import FormatError, KeyMismatchError, UsageError
from .header import Header, HeaderAuthError, parse_header
from .keys import Key, require_key
from .report import Ints, Moved, Report, TensorFinding, pinned, seal_id_arg


@dataclass(slots=True)
class Check:
    """Everything verify learned; recover continues from it."""

    header: Header
    specs: list[TensorSpec]
    key: Key = field(repr=False)
    mac: BlockMac
    blocks: list[_model.Blocks]
    bad: list[NDArray[np.bool_]]  # per tensor, per block
    issues: list[list[str]]
    extra: list[str]
    metadata_issues: list[str]
    notes: list[str] = field(default_factory=list)
    file_metadata: dict[str, str] | None = None  # the file's own metadata, as given
    # tensors whose data was found under another name: index -> (how, that name)
    moved: dict[int, tuple[Moved, str]] = field(default_factory=dict)
    chosen: tuple[bool, ...] = ()  # partial verification: the tensors checked (empty: all)
    shown: Mapping[str, str] = field(default_factory=dict)  # `check`'s: where the file keeps such tensors
    progress: Progress = field(default_factory=Progress.null, repr=False)  # the check's; a decode steps it on

    _layout: Layout | None = field(default=None, repr=False)
    _irs: Any = field(default=None, repr=False)  # the irs4 decode with rebuilt blocks, run once (recover)
    _irs_ok: bool | None = field(default=None, repr=False)  # verify's answer: decoded, nothing rebuilt

    @property
    def layout(self) -> Layout:
        """The lane layout, built on first use (an intact model never needs it)."""
        if self._layout is None:
            self._layout = build_layout(self.specs, self.key, self.header.salt, self.header.lanes)
        return self._layout

    @property
    def total_blocks(self) -> int:
        """Blocks in the model."""
        return sum(s.nblocks for s in self.specs)

    @property
    def checked_blocks(self) -> int:
        """Blocks checked: the whole model's, or those of the tensors a partial verification chose."""
        if not self.chosen:
            return self.total_blocks
        return sum(s.nblocks for s, c in zip(self.specs, self.chosen, strict=True) if c)

    @property
    def bad_global(self) -> NDArray[np.bool_]:
        """Tampered flag of every block, in global order."""
        return np.concatenate(self.bad)

    def lane_losses(self) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        """Per lane: lost data shards and lost parity shards (including never-stored ones)."""
        lay = self.layout
        b = np.flatnonzero(self.bad_global)
        nd = np.bincount(lay.lane[b], weights=lay.n_data[b], minlength=lay.lanes).astype(np.int64)
        npar = np.bincount(lay.lane[b], weights=lay.n_store[b], minlength=lay.lanes).astype(np.int64)
        return nd, npar + lay.holes

    @property
    def complete(self) -> bool:
        """Whether every tensor's blocks were read (not a partial verification)."""
        return all(ub.shape[0] == s.nblocks for s, ub in zip(self.specs, self.blocks, strict=True))

    def irs_outcome(self, ws: Any = None) -> Any:
        """The irs4 decode of this model (``_irs_recover.Outcome``), computed on first use.

        ``ws``: the `Workspace` that holds the rebuilt blocks (on disk past its memory budget).
        """
        if self._irs is None:
            from . import _irs_recover

            self._irs = _irs_recover.decode_check(self, ws=ws)
        return self._irs

    @property
    def metadata_lost(self) -> bool:
        """What recover cannot restore: metadata the weights know only by digest, or an edited graph."""
        lost = (GRAPH_STRIPPED, META_DIFFERS, META_STRIPPED, OWN_DIFFERS, OWN_LOST)
        if {GRAPH_EDITED, GRAPH_EDITED_V1} & set(self.metadata_issues):  # values can be rebuilt; a graph cannot
            return True
        if any(m.startswith(DECLARED_SHAPE) for m in self.metadata_issues):  # nor its declared shapes
            return True
        return self.header.user_metadata is None and any(m in self.metadata_issues for m in lost)

    def recoverable(self) -> bool:
        """Whether every damaged block can be rebuilt (irs4: by decoding; lanes: enough surviving shards)."""
        if self.metadata_lost:
            return False
        if not any(b.any() for b in self.bad):
            return True
        if self.header.irs:
            from . import _irs_recover

            if not self.complete:
                return _irs_recover.estimate(self)
            if self._irs is not None:
                return bool(self._irs.ok)
            if self._irs_ok is None:
                # verify needs only the answer: decoding without rebuilding keeps memory flat under
                # scattered damage (the rebuilt blocks would be twice the damaged part of the model)
                self._irs_ok = bool(_irs_recover.decode_check(self, rebuild=False).ok)
            return self._irs_ok
        nd, npar = self.lane_losses()
        return bool(np.all((nd == 0) | (nd + npar <= self.layout.M)))


def _tags_ok(mac: BlockMac, header: Header, t: int, spec: TensorSpec, ub: _model.Blocks) -> NDArray[np.bool_]:
    """Which blocks of tensor ``t`` carry the right tag, chunk by chunk (an input file's with ``pread``)."""
    internal = spec.block_storage()[1]
    ext = header.external_tags.get(t)
    if ext is not None and ext.size != int((~internal).sum()):
        ext = None  # a header for another model: those blocks fail
    before = np.concatenate([[0], np.cumsum(~internal)])  # external tags before each block
    ok = np.empty(spec.nblocks, dtype=np.bool_)
    buf = None  # the first chunk read from an input file, reused for the next (no fresh pages each time)
    for r0, r1 in chunks(spec.nblocks, ub.dtype.itemsize, 0, 1):
        part = ub[r0:r1]
        c = read(part, buf)
        if buf is None and c is not part:
            buf = c.reshape(-1).view(np.uint8)
        want = _model.compute_tags(mac, header.salt, t, spec, c, internal, r0=r0)
        have = _model.stored_tags(spec, c, internal[r0:r1], None if ext is None else ext[before[r0] : before[r1]])
        ok[r0:r1] = want == have
    return ok


def check(
    tensors: Mapping[str, NDArray[np.generic]],
    key: Key,
    header_json: str,
    *,
    metadata: Mapping[str, str] | None = None,
    progress: Progress | None = None,
    select: str | None = None,
    metadata_kept: bool | None = None,
    shown: Mapping[str, str] | None = None,
) -> Check:
    """Run every check and keep the intermediate state (used by verify and recover).

    ``select`` is a glob pattern over tensor names: only matching tensors are checked
    (partial verification; the others' data is not read). ``metadata_kept``: True, the model came
    from a format that stores metadata, so empty ``metadata`` where some was sealed was stripped;
    False, from one that stores none of the user's (.npy, a .pt saved by torch: ``metadata`` holds only what the
    format itself records, as a tie), so sealed keys absent from it are not checked; None: unknown.
    ``shown``: how the user finds tensors whose names mean nothing to them (an ONNX initializer with no name).
    """
    require_key(key)
    if not isinstance(header_json, str):
        raise UsageError(
            "header_json must be the seal header text (SealedModel.header_json, or metadata['paramseal']), "
            f"not {type(header_json).__name__}"
        )
    header = parse_header(header_json, key)
    specs = list(header.tensors)
    mac = BlockMac(key, header.mac)
    arrays = _model.as_mapping(tensors)
    prog = progress or Progress.null()
    blocks: list[_model.Blocks] = []
    bad: list[NDArray[np.bool_]] = []
    issues: list[list[str]] = []
    sealed_names = {s.name for s in specs}
    chosen = [select is None or fnmatch.fnmatchcase(s.name, select) for s in specs]
    if not any(chosen):
        n = len(specs)
        raise unmatched(select, [s.name for s in specs], f"none of the {n} sealed tensor{'s' if n != 1 else ''}")
    extra = [n for n in arrays if n not in sealed_names and (select is None or fnmatch.fnmatchcase(n, select))]
    use = [usable(arrays.get(s.name), s) for s in specs]
    refuse_unfounded(specs, use, arrays)
    for t, spec in enumerate(specs):
        prog.step(spec.name)
        found, why = use[t]
        issues.append(why)
        if not chosen[t]:  # partial verification: never read
            issues[-1] = []
            blocks.append(np.zeros((0, 64), np.uint8))
            bad.append(np.zeros(spec.nblocks, dtype=np.bool_))
            continue
        if found is None:
            blocks.append(_model.blocks_of(None, spec))
            bad.append(np.ones(spec.nblocks, dtype=np.bool_))
            continue
        ub = _model.blocks_of(found, spec, copy=False)  # recover copies before it writes
        blocks.append(ub)
        bad.append(~_tags_ok(mac, header, t, spec, ub))
    moved = _match_moved(arrays, header, mac, specs, blocks, bad, issues, extra, shown)
    notes: list[str] = [n for n in [converted(arrays, specs, chosen, issues)] if n]
    if select is not None:
        n = sum(chosen)
        notes.append(f"partial verification: {n} of {len(specs)} tensors match '{select}'; only they were checked")
    meta, more = metadata_findings(header, metadata, metadata_kept)
    notes += more
    if header.mac in (MAC_V1, MAC_V2):  # read at call time: tests stand the current MAC in for an older one
        which = "" if header.mac == MAC_V1 else " with its tag left as it was"
        notes.append(
            f"sealed with the older block MAC {header.mac!r}: an edit found passing in one block{which} would pass "
            "in every block sealed with this key, so show its verify and recover reports to no one who can submit "
            "models; 'paramseal seal --reseal' of the model, once it verifies intact, moves it to the per-block "
            "hash (README, 'Authenticate')"
        )
    given = None if metadata is None else dict(metadata)
    picked = tuple(chosen) if select is not None else ()
    return Check(
        header, specs, key, mac, blocks, bad, issues, extra, meta, notes, given, moved, picked, dict(shown or {}), prog
    )


def _match_moved(
    arrays: dict[str, NDArray[np.generic]],
    header: Header,
    mac: BlockMac,
    specs: list[TensorSpec],
    blocks: list[_model.Blocks],
    bad: list[NDArray[np.bool_]],
    issues: list[list[str]],
    extra: list[str],
    shown: Mapping[str, str] | None = None,
) -> dict[int, tuple[Moved, str]]:
    """Find renamed and swapped tensors: a wholly failing tensor whose data verifies under another name.

    Candidates that carry an identity record are matched by the tensor index in it;
    the rest (integer tensors, tiny ones) are tried against each failing tensor.
    Returns the tensors whose blocks now come from another name: index -> (how, that name). ``shown``: as
    `check`'s, said in the issue instead of that name.
    """
    shown = shown or {}
    moved: dict[int, tuple[Moved, str]] = {}
    failing = [t for t, b in enumerate(bad) if b.all()]
    if not failing:
        return moved
    # Candidates: extra tensors, and the data found under the names of other wholly failing tensors.
    cands = list(extra) + [specs[t].name for t in failing if specs[t].name in arrays]
    ks = {(s.dtype, s.k) for t in failing if (s := specs[t]).reserved}
    claimed: dict[str, int] = {}
    for name in cands:
        a = arrays[name]
        for dt, k in ks:
            if dtype_label(a) == dt and (f := _embed.read_record(a, k)) is not None and f.salt8 == header.salt[:8]:
                claimed[name] = f.index
                break
    used: set[str] = set()
    for t in failing:
        spec = specs[t]
        order = [n for n in cands if claimed.get(n) == t] + [n for n in cands if n not in claimed]
        for name in order:
            if name in used or name == spec.name:
                continue
            a = arrays[name]
            if a.size != spec.numel or dtype_label(a) != spec.dtype:
                continue
            ub = _model.blocks_of(a, spec)
            ok = _tags_ok(mac, header, t, spec, ub)
            if ok.mean() < 0.5:
                continue
            used.add(name)
            blocks[t], bad[t] = ub, ~ok
            if name in extra:
                extra.remove(name)
                moved[t] = ("renamed", name)
                issues[t] = [f"renamed: its data is now in {shown[name]}" if name in shown else f"renamed to '{name}'"]
            else:
                moved[t] = ("swapped", name)
                issues[t] = [
                    f"swapped: its data was found in {shown[name]}"
                    if name in shown
                    else f"swapped: its data was found under '{name}'"
                ]
            break
    return moved


def best_header(tensors: Mapping[str, NDArray[np.generic]], key: Key, texts: list[str]) -> str:
    """Of authentic headers from different seals under ``key``, the one under which ``tensors`` verify best.

    Another seal's header under the same key (an older seal's copy, pasted in) authenticates too;
    under it almost every block fails. Best: the largest share of the header's own blocks, not the
    most blocks, which a sealed tensor of a larger model, added, would win. The first wins a tie.
    """
    return max(texts, key=lambda text: verified_share(tensors, key, text))


def verified_share(tensors: Mapping[str, NDArray[np.generic]], key: Key, text: str) -> Fraction:
    """The share of the authentic header ``text``'s blocks that verify in ``tensors``."""
    try:
        bad = check(tensors, key, text).bad
    except UnfoundedTableError:  # a table the tensors cannot hold: none of its blocks are there to verify
        return Fraction(0)
    total = sum(int(b.size) for b in bad)
    return Fraction(sum(int((~b).sum()) for b in bad), total) if total else Fraction(0)


def other_seals_copies(tensors: Mapping[str, NDArray[np.generic]], key: Key, this: Header) -> list[str]:
    """The intact copies in the weights of another seal of the same model as ``this``, under ``key``.

    The same model: the same tensor names, dtypes and shapes (an older seal, any level). Another
    model's copy (its sealed tensor added to the file) is no rival: its tensors are extra ones.
    Only the carriers ``this`` chose are read: another seal of the same model chose the same ones.
    """
    mine = f'"salt":"{this.salt.hex()}"'  # in this seal's own copies (JSON strings escape quotes: only the field)
    carriers = {n: tensors[n] for c in this.carriers if (n := this.tensors[c].name) in tensors}
    out: list[str] = []
    for _, text in _embed.header_copies(carriers):
        if mine in text:  # this seal's copy: no need to authenticate it again
            continue
        try:
            h = parse_header(text, key)
        except (KeyMismatchError, HeaderAuthError, FormatError):
            continue  # damaged or another key's: no rival seal
        if another_seal(this, h) and text not in out:
            out.append(text)
    return out


def carried_seal(tensors: Mapping[str, NDArray[np.generic]], chk: Check, also: Iterable[str] = ()) -> str | None:
    """The id of another seal of the same model that ``tensors`` verify under better than under ``chk``'s header.

    A header given (``--header-from``, the in-memory API's) is the one checked, whatever seal the
    weights carry: an older version put back, checked against the approved header it was not sealed
    with, fails nearly every block, which recover would rebuild what it can of under that header.
    The rivals: the intact copies in the weights of another seal (`other_seals_copies`), and ``also``
    (a file's own metadata header). None when the weights verify whole under ``chk``'s header, when
    no rival beats it, and for a partial check (``chk.chosen``), whose other tensors are never read.
    """
    bad = chk.bad_global
    if chk.chosen or not bad.any():
        return None
    rivals = other_seals_copies(tensors, chk.key, chk.header)
    for text in also:
        try:
            h = parse_header(text, chk.key)
        except (KeyMismatchError, HeaderAuthError, FormatError):
            continue
        if another_seal(chk.header, h) and text not in rivals:
            rivals.append(text)
    mine = Fraction(int((~bad).sum()), int(bad.size))
    shares = [(verified_share(tensors, chk.key, text), text) for text in rivals]
    best = max(shares, default=None, key=lambda st: st[0])
    return None if best is None or best[0] <= mine else parse_header(best[1], chk.key).salt.hex()


def pinned_check(
    rep: Report,
    chk: Check,
    tensors: Mapping[str, NDArray[np.generic]],
    expect_seal: str | None,
    also: Iterable[str] = (),
) -> Report:
    """`pinned` for ``rep``, the report of ``chk``, with the seal the weights carry when not the header's.

    See `carried_seal` (``also`` as there); ``expect_seal`` is a checked id (`seal_id_arg`).
    """
    if expect_seal is not None and rep.seal_id == expect_seal and (sid := carried_seal(tensors, chk, also)):
        rep = replace(rep, seal_id=sid)
    return pinned(rep, expect_seal)


def another_seal(this: Header, other: Header) -> bool:
    """Whether ``other`` is another seal (another salt) of the same model: the same tensor names, dtypes and shapes."""
    table = [(s.name, s.dtype, s.shape) for s in this.tensors]
    return other.salt != this.salt and [(s.name, s.dtype, s.shape) for s in other.tensors] == table


def report_of(chk: Check) -> Report:
    """The verify report of a finished check."""
    findings = {
        s.name: TensorFinding(
            s.name,
            Ints(np.flatnonzero(b)),
            tuple(iss),
            moved_from=chk.moved[t][1] if t in chk.moved else None,
            moved_how=chk.moved[t][0] if t in chk.moved else None,
        )
        for t, (s, b, iss) in enumerate(zip(chk.specs, chk.bad, chk.issues, strict=True))
    }
    tampered = bool(chk.bad_global.any() or any(chk.issues) or chk.extra or chk.metadata_issues)
    named = {*(n for n, f in findings.items() if f.tampered_blocks or f.issues), *chk.extra}
    named |= {name for _, name in chk.moved.values()}  # the names in the report
    recoverable = chk.recoverable()
    notes = list(chk.notes)
    if recoverable and tampered and not chk.complete:
        notes.append(
            "judged recoverable from the tensors read alone (--tensors): those not read count as intact, and "
            "damage in them may leave the model beyond recovery; a full verify (or recover) decides"
        )
    if not recoverable and chk.header.irs and not chk.complete and chk.bad_global.any() and not chk.metadata_lost:
        # the estimate from the flags alone says no to scattered damage that decoding rebuilds
        notes.append(
            "judged not recoverable from the failed blocks alone, without decoding them (--tensors): "
            "a full verify decodes them and may find the damage recoverable"
        )
    return Report(
        kind="verify",
        status="tampered" if tampered else "intact",
        recoverable=recoverable,
        tensors=findings,
        extra_tensors=tuple(chk.extra),
        tensor_places={n: where for n, where in chk.shown.items() if n in named},
        metadata_issues=tuple(chk.metadata_issues),
        notes=tuple(notes),
        key_fingerprint=chk.header.key_fingerprint,
        level=chk.header.level if chk.header.bits is None else f"bits={chk.header.bits}",
        seal_id=chk.header.salt.hex(),
        total_blocks=chk.total_blocks,
        checked_blocks=chk.checked_blocks if chk.chosen else None,
    )


def verify(
    tensors: Mapping[str, NDArray[np.generic]],
    key: Key,
    header_json: str,
    *,
    metadata: Mapping[str, str] | None = None,
    metadata_kept: bool | None = None,
    expect_seal: str | None = None,
) -> Report:
    """Check a sealed model; ``metadata`` (the file's other metadata) is compared when given.

    ``metadata_kept``: whether the model's format stores user metadata (see `check`).
    Tampering is reported, not raised (``report.raise_for_status()`` raises it). Raises
    KeyMismatchError for another key than the seal's, FormatError (``header.HeaderAuthError``) for a
    header that is malformed or does not authenticate, `UnfoundedTableError` (a FormatError, exit 2) for
    sealed tensors missing or resized that hold more data than the model, UsageError for arguments of the wrong type.
    ``expect_seal``: the seal id the model must carry (`Report.seal_id` of the approved model);
    another seal of it, such as an older version put back, is then tampering that cannot be
    recovered (`paramseal.report.pinned`).
    ``Report.tensor_places`` stays empty: the report's names are the keys of ``tensors``, which find each tensor
    (a file's report fills it for names the file does not tell apart, such as an ONNX initializer with none).
    """
    expect_seal = seal_id_arg(expect_seal)
    chk = check(tensors, key, header_json, metadata=metadata, metadata_kept=metadata_kept)
    return pinned_check(report_of(chk), chk, tensors, expect_seal)


__all__ = [
    "Check",
    "best_header",
    "carried_seal",
    "check",
    "other_seals_copies",
    "pinned_check",
    "another_seal",
    "report_of",
    "verified_share",
    "verify",
]

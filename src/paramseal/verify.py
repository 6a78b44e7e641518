"""Verify a sealed model: recompute every block tag and check the tensor table and metadata.

Verification never trusts the file's tensor table: the authenticated header
says which tensors must exist, with which dtype and shape. Missing, renamed,
reshaped, retyped, swapped and extra tensors are all named.
"""

from __future__ import annotations

import difflib
import fnmatch
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import Any

import ml_dtypes
import numpy as np
from numpy.typing import NDArray

from . import _embed, _model
from ._layout import Layout, TensorSpec, build_layout
from ._mac import BlockMac
from ._pages import chunks, read
from ._progress import Progress
from .errors import FormatError, KeyMismatchError, NotSealedError, ParamSealError, UnsupportedError, UsageError
from .header import Header, HeaderAuthError, metadata_digest, own_entries, parse_header
from .keys import Key, require_key
from .levels import BLOCK, FLOATS, ST_TO_NP, dtype_name
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
        lost = (_META_DIFFERS, META_STRIPPED, _OWN_DIFFERS, _OWN_LOST)
        if GRAPH_EDITED in self.metadata_issues:  # values can be rebuilt; a graph cannot
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
) -> Check:
    """Run every check and keep the intermediate state (used by verify and recover).

    ``select`` is a glob pattern over tensor names: only matching tensors are checked
    (partial verification; the others' data is not read). ``metadata_kept``: True, the model came
    from a format that stores metadata, so empty ``metadata`` where some was sealed was stripped;
    False, from one that stores none of the user's (.npy, a .pt saved by torch: ``metadata`` holds only what the
    format itself records, as a tie), so sealed keys absent from it are not checked; None: unknown.
    """
    require_key(key)
    if not isinstance(header_json, str):
        raise UsageError(
            "header_json must be the seal header text (SealedModel.header_json, or metadata['paramseal']), "
            f"not {type(header_json).__name__}"
        )
    header = parse_header(header_json, key)
    specs = list(header.tensors)
    mac = BlockMac(key)
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
    _refuse_unfounded(specs, use, arrays)
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
    moved = _match_moved(arrays, header, mac, specs, blocks, bad, issues, extra)
    notes: list[str] = [n for n in [_converted(arrays, specs, chosen)] if n]
    if select is not None:
        n = sum(chosen)
        notes.append(f"partial verification: {n} of {len(specs)} tensors match '{select}'; only they were checked")
    meta, more = metadata_findings(header, metadata, metadata_kept)
    notes += more
    given = None if metadata is None else dict(metadata)
    picked = tuple(chosen) if select is not None else ()
    return Check(header, specs, key, mac, blocks, bad, issues, extra, meta, notes, given, moved, picked, progress=prog)


class UnfoundedTableError(FormatError):
    """Sealed tensors a model lacks (missing, or of another size) that it could neither rebuild nor stand in for.

    Their data is more than the model holds in all, and standing in for them (zeros and a flag per
    block, at the sizes the authentic header records) would take more than this machine's memory.
    Exit 2, as the verdict it stands for: tampered and not recoverable.
    """

    exit_code = 2


def _memory() -> int | None:
    """Bytes of physical memory, None where the platform does not say."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return None


def _refuse_unfounded(
    specs: list[TensorSpec],
    use: list[tuple[NDArray[np.generic] | None, list[str]]],
    arrays: Mapping[str, NDArray[np.generic]],
) -> None:
    """Raise `UnfoundedTableError`, before anything is allocated, for lacking tensors too big to stand in for.

    Refused only where that allocation would fail and be for nothing. What recover rebuilds of a tensor is
    its data bits (those above the ``k`` it carries); parity for them can only be among the bits the model
    holds, so data beyond those cannot be rebuilt. Otherwise (a tensor removed, a model converted to another
    dtype) they are stood in for and reported block by block, as ever.
    """
    lacking = [(s, why) for s, (found, why) in zip(specs, use, strict=True) if found is None]
    needed = sum(s.numel * (ST_TO_NP[s.dtype].itemsize * 8 - s.k) for s, _ in lacking)
    held = sum(int(a.size) * a.dtype.itemsize * 8 for a in arrays.values())
    # zeros for the blocks, a flag each, and its index in the report
    standin = sum(s.nblocks * (BLOCK * ST_TO_NP[s.dtype].itemsize + 9) for s, _ in lacking)
    memory = _memory()
    if needed <= held or standin <= (held // 8 if memory is None else memory):
        return
    shown = "; ".join(f"'{s.name}' ({', '.join(why)})" for s, why in lacking[:8])
    more = f"; and {len(lacking) - 8} more" if len(lacking) > 8 else ""
    room = "the model's size" if memory is None else f"this machine's memory ({memory} bytes)"
    raise UnfoundedTableError(
        f"the model does not hold the tensors its authentic seal header records: {shown}{more}. Their data "
        f"({needed // 8} bytes) is more than the model's tensors hold in all ({held // 8} bytes), so none of it can "
        f"be rebuilt, and standing in for them to list their blocks would take {standin} bytes, more than {room}: "
        "they were not read. The model was tampered with (tensors removed or resized) or the header is another "
        "model's: take the sealed model from a kept copy, or verify this one with its own header"
    )


def metadata_findings(
    header: Header, metadata: Mapping[str, str] | None, metadata_kept: bool | None
) -> tuple[list[str], list[str]]:
    """The metadata issues and notes of a check (``metadata``, ``metadata_kept`` as for `check`)."""
    notes: list[str] = []
    if header.user_metadata is None:  # read from the weights: only the metadata's digest is known
        # also for arrays and live modules, which have no file: say what was missing in words true of both
        notes.append(f"{HEADER_FROM_WEIGHTS} (none was given, and the metadata holds none)")
        meta = []
        own = header.own_digest  # set when ParamSeal's own entries (a tie) were sealed
        if metadata_kept is False and own is not None and metadata is not None:
            # a .pt keeps the tie, not the user's keys: the tie is checked against its own digest
            mine = dict(metadata)
            differs = _OWN_DIFFERS if mine else _OWN_LOST  # none left: a tie removed, or a graph digest
            meta = [] if mine == own_entries(mine) and metadata_digest(mine) == own else [differs]
            if own != header.digest:
                notes.append(f"{_NO_USER_METADATA}: the sealed user keys were not checked")
        elif metadata:
            meta = [] if metadata_digest(dict(metadata)) == header.digest else [_META_DIFFERS]
        elif header.digest == metadata_digest({}):
            pass  # none was sealed: nothing is missing
        elif metadata_kept:  # the format stores metadata: this file lost what was sealed
            meta = [META_STRIPPED]
        else:  # a file with no room for it (.npy, a .pt saved by torch), or metadata not given
            notes.append("the model carries no metadata; the weights were checked, the sealed metadata could not be")
    else:
        sealed = header.user_metadata
        if metadata_kept is False and metadata is not None:  # the file could not hold the user's keys
            # ParamSeal's own entries (a tie, a graph digest) are the format's: missing, they were removed
            absent = sorted(k for k in set(sealed) - set(metadata) if k not in own_entries(sealed))
            sealed = {k: v for k, v in sealed.items() if k not in absent}
            if absent:
                notes.append(f"{_NO_USER_METADATA}: sealed key(s) {', '.join(map(repr, absent))} not checked")
        meta = _metadata_issues(sealed, metadata) if metadata is not None else []
    return meta, notes


# a .pt holds the user's keys in its _metadata entry, which torch.save(model.state_dict()) does not write back
_NO_USER_METADATA = "the model carries no user metadata (an .npy, a module, a .pt saved again by torch)"
HEADER_FROM_WEIGHTS = "the seal header was read from the weights"  # a note: the metadata held no header
GRAPH_EDITED = (
    "the model's graph (its nodes, their inputs and attributes, the model's inputs and outputs) is not the one "
    "sealed; ParamSeal restores values, not graphs: take the sealed model from a kept copy"
)
META_STRIPPED = (
    "the file's metadata was stripped, and the sealed metadata with it (the header in the weights keeps only its "
    "digest: it cannot be restored; --header-from a kept copy of the sealed model restores it)"
)
_META_DIFFERS = (
    "the file's metadata differs from the metadata sealed (the header in the weights keeps only its digest: "
    "it cannot be compared key by key, nor restored)"
)


_OWN_DIFFERS = (
    "the model's ParamSeal entries (its weight ties) are not the ones sealed: a tie was re-pointed, added or "
    "removed (the header in the weights keeps only their digest: it cannot say which)"
)
_OWN_LOST = (
    "the model holds none of the ParamSeal entries sealed with it (its weight ties, or a graph digest): a tie was "
    "removed, or the model was sealed from an ONNX model and this file lost its graph digest (a .pt keeps it only "
    "in its _metadata entry '.paramseal', which torch.save(model.state_dict()) drops; the header in the weights "
    "keeps only their digest: it cannot say which). Verify the file as seal wrote it"
)


def usable(a: NDArray[np.generic] | None, spec: TensorSpec) -> tuple[NDArray[np.generic] | None, list[str]]:
    """``a`` as the sealed tensor's data (None when it cannot be: missing, or another size) and what differs."""
    if a is None:
        return None, ["missing"]
    try:
        dt = dtype_name(a.dtype)
    except UnsupportedError:
        dt = str(a.dtype)
    if dt != spec.dtype:
        why = [f"dtype changed from {spec.dtype} to {dt}"]
        sealed = ST_TO_NP[spec.dtype]
        same = dt in ST_TO_NP or _raw_void(a.dtype)  # a raw void: np.save's ml_dtypes bfloat16
        if same and a.size == spec.numel and a.dtype.itemsize == sealed.itemsize:
            # the same bytes under another name (F32 marked I32): their tags decide, as for a reshape
            return np.ascontiguousarray(a).view(sealed).reshape(spec.shape), why
        return None, why
    if a.size != spec.numel:
        return None, [f"shape changed from {list(spec.shape)} to {list(a.shape)}"]
    if tuple(a.shape) != spec.shape:
        return a, [f"reshaped from {list(spec.shape)} to {list(a.shape)}"]
    return a, []


_BACK = {"F64": ".double()", "F32": ".float()", "F16": ".half()", "BF16": ".bfloat16()"}


def _converted(arrays: Mapping[str, NDArray[np.generic]], specs: list[TensorSpec], chosen: list[bool]) -> str | None:
    """A note when every sealed float tensor checked was found converted to one other float dtype (``.float()``).

    The findings name each retyped tensor; this says once what happened to the model and how to undo it.
    """
    pairs = set()
    for spec, on in zip(specs, chosen, strict=True):
        if on and spec.dtype in FLOATS:
            a = arrays.get(spec.name)
            if a is None or a.size != spec.numel:
                return None
            pairs.add((spec.dtype, _dt(a)))
    if len(pairs) != 1:
        return None
    ((was, now),) = pairs
    if was != now and now.startswith("|V"):  # `usable` read their bytes as sealed; their tags decided
        return (
            f"every sealed float tensor is raw {now} bytes, sealed as {was}: np.save and np.savez write ml_dtypes' "
            f"bfloat16 so, which keeps the bits but loses the type; recover writes them back as {was} (np.load "
            "reads ParamSeal's .npz as bfloat16 once ml_dtypes is imported)"
        )
    if was == now or now not in FLOATS:
        return None
    said = f"every sealed float tensor is {now}, sealed as {was}: the whole model was converted from {was} to {now}"
    if FLOATS[now].mantissa >= FLOATS[was].mantissa and FLOATS[now].exponent >= FLOATS[was].exponent:
        return (
            f"{said}, which keeps every value: convert it back to {was} (a module: {_BACK[was]}; a file: save its "
            f"tensors as {was}) and verify again"
        )
    return f"{said}, which drops low mantissa bits and the seal with them: take the sealed model from a kept copy"


def unmatched(select: str | None, names: Iterable[str], what: str) -> UsageError:
    """The error for a ``--tensors`` pattern that matches ``what`` (none of ``names``), naming close names.

    Close: names whose last path part matches (an ONNX subgraph's ``w`` is sealed as ``if:then_branch/w``),
    else names that read almost the same (a typo, another case), else, for a glob, the globs with
    a near prefix that match (``model.layer.3.*`` for ``model.layers.3.*``).
    """
    pool = sorted(set(names))
    near = [n for n in pool if "/" in n and fnmatch.fnmatchcase(n.rsplit("/", 1)[1], select or "")]
    near = near or difflib.get_close_matches(select or "", pool, n=3, cutoff=0.75)
    if near:
        return UsageError(f"--tensors '{select}' matches {what}; check the pattern (close names: {_quoted(near)})")
    globs = _close_globs(select or "", pool)
    hint = f" (close patterns: {_quoted(globs)})" if globs else ""
    return UsageError(f"--tensors '{select}' matches {what}; check the pattern{hint}")


def _quoted(names: list[str]) -> str:
    return ", ".join(map(repr, names[:5]))


def _close_globs(select: str, pool: list[str]) -> list[str]:
    """Globs like ``select`` whose text before the first wildcard is a near prefix of some names, each matching."""
    cut = min((select.find(c) for c in "*?[" if c in select), default=-1)
    if cut <= 0:  # a plain name (close names are tried on it) or one that starts with a wildcard
        return []
    # whole names differ from the prefix by their tails: compare it with their prefixes of about its length
    prefixes = sorted({n[:n_] for n in pool for n_ in range(max(1, cut - 2), cut + 3)})
    out: list[str] = []
    seen: list[set[str]] = []
    for p in difflib.get_close_matches(select[:cut], prefixes, n=6, cutoff=0.8):
        glob = p + select[cut:]
        hits = {n for n in pool if fnmatch.fnmatchcase(n, glob)}
        if hits and not any(hits <= s for s in seen):  # not a part of a closer glob's tensors
            seen.append(hits)
            out.append(glob)
    return out[:3]


def _match_moved(
    arrays: dict[str, NDArray[np.generic]],
    header: Header,
    mac: BlockMac,
    specs: list[TensorSpec],
    blocks: list[_model.Blocks],
    bad: list[NDArray[np.bool_]],
    issues: list[list[str]],
    extra: list[str],
) -> dict[int, tuple[Moved, str]]:
    """Find renamed and swapped tensors: a wholly failing tensor whose data verifies under another name.

    Candidates that carry an identity record are matched by the tensor index in it;
    the rest (integer tensors, tiny ones) are tried against each failing tensor.
    Returns the tensors whose blocks now come from another name: index -> (how, that name).
    """
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
            if _dt(a) == dt and (f := _embed.read_record(a, k)) is not None and f.salt8 == header.salt[:8]:
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
            if a.size != spec.numel or _dt(a) != spec.dtype:
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
                issues[t] = [f"renamed to '{name}'"]
            else:
                moved[t] = ("swapped", name)
                issues[t] = [f"swapped: its data was found under '{name}'"]
            break
    return moved


def _raw_void(dt: np.dtype[Any]) -> bool:
    """Raw bytes of no known type: ``np.save`` writes ml_dtypes' bfloat16 (and float8) arrays so."""
    return dt.kind == "V" and dt.names is None and dt.subdtype is None


#: What a raw 2-byte void may be: np.save writes ml_dtypes' bfloat16 as ``|V2`` (float16 keeps its type).
_VOID_AS = (np.dtype(ml_dtypes.bfloat16), np.dtype(np.float16))


def header_from_weights(tensors: Mapping[str, NDArray[np.generic]], key: Key) -> str:
    """The seal header embedded in the weights, authenticated with ``key`` (see `_header_from_weights`).

    Tensors saved as raw 2-byte voids (``np.savez`` of ml_dtypes bfloat16 arrays keeps their bytes but
    not their type) are read as each 2-byte float in turn when the weights hold no copy as they are.
    """
    try:
        return _header_from_weights(tensors, key)
    except NotSealedError:
        for typed in typed_voids(tensors):
            try:
                return _header_from_weights(typed, key)
            except NotSealedError:
                continue
        raise


def typed_voids(tensors: Mapping[str, NDArray[np.generic]]) -> Iterator[dict[str, NDArray[np.generic]]]:
    """``tensors`` with their raw 2-byte voids read as each 2-byte float in turn; nothing if none is one."""
    voids = {n: a for n, a in tensors.items() if _raw_void(a.dtype) and a.dtype.itemsize == 2}
    for dt in _VOID_AS if voids else ():
        yield {**tensors, **{n: a.view(dt) for n, a in voids.items()}}


def _header_from_weights(tensors: Mapping[str, NDArray[np.generic]], key: Key) -> str:
    """The seal header embedded in the weights, authenticated with ``key``.

    Each copy is tried, then headers rebuilt from damaged copies (`_embed.merged_copies`: a
    plurality by byte and by nibble, mixes of two), then copies whose record is gone, found where seal put
    them (`_embed.located_copies`), each authenticated like the copies. Raises NotSealedError
    when no copy is found, KeyMismatchError when every copy names the same other key, and
    HeaderAuthError when nothing authenticates.
    """
    copies = _embed.header_copies(tensors)
    errs: list[ParamSealError] = []
    authentic: list[str] = []
    for _, text in copies:
        try:
            parse_header(text, key)
            if text not in authentic:
                authentic.append(text)
        except (KeyMismatchError, HeaderAuthError, FormatError) as e:
            errs.append(e)
    if len(authentic) == 1:
        return authentic[0]
    if authentic:
        # Two authentic headers: one is another seal's under this key (an older seal's copy pasted into a
        # carrier, or added as a tensor). The weights say which seal they are: the header the largest share of
        # its blocks verify under.
        return best_header(tensors, key, authentic)
    # Another key only when every copy names the same well-formed one: a flipped fingerprint is damage.
    named = {e.stored if isinstance(e, KeyMismatchError) else "" for e in errs}
    other_key = bool(errs) and len(named) == 1 and _FP.fullmatch(next(iter(named))) is not None
    if other_key and len(copies) > 1:
        raise errs[0]
    # Damaged copies (also ones no longer valid UTF-8, or behind a damaged record): rebuild the header from them.
    for text in _embed.merged_copies(tensors):
        try:
            parse_header(text, key)
            return text
        except (KeyMismatchError, HeaderAuthError, FormatError):
            continue
    if other_key:
        raise errs[0]
    # Copies whose record is gone (a burst over a carrier's first blocks), found where seal put them.
    located: list[KeyMismatchError] = []
    tried = 0
    for text in _embed.located_copies(tensors):
        tried += 1
        try:
            parse_header(text, key)
            return text
        except KeyMismatchError as e:
            located.append(e)
        except (HeaderAuthError, FormatError):
            continue  # the destroyed copy, or a length that was not the header's
    # another key when the copies found that name a key all name one well-formed key (the destroyed copy names none)
    if not errs and located and len({e.stored for e in located}) == 1:
        if _FP.fullmatch(located[0].stored):
            raise located[0]
    if errs:
        # a copy that is no header at all (its bytes damaged, as zeroed values leave it) has no reason to quote, nor
        # one that does not authenticate: its message is the metadata header's ("its settings or tensor table were
        # edited; the weights cannot be checked"), where a bit flipped in a copy here is the likelier cause
        why = next((str(e) for e in errs if not isinstance(e, (KeyMismatchError, HeaderAuthError))), "")
        lost = "cannot be read" if any(_unreadable(e) for e in errs) else "do not authenticate"
        cause = "damaged" if lost == "cannot be read" else "damaged or edited"
        # damage, but a copy may name the sealing key: a user holding the wrong key must learn it here
        mismatches = [e for e in [*errs, *located] if isinstance(e, KeyMismatchError)]
        keys = sorted({e.stored for e in mismatches if _FP.fullmatch(e.stored)})
        other = (
            f". A copy names key fingerprint {' or '.join(keys)}, not the given key's ({key.fingerprint}): if the "
            "model was sealed with that key, check it with that key"
            if keys
            else ""
        )
        raise HeaderAuthError(
            f"{why or f'the copies of the ParamSeal header in the weights {lost} (they were {cause})'}. "
            f"{HEADER_HINT}{other}"
        ) from None
    n, never_had_copies = _embed.sealed_traces(tensors)
    if n and never_had_copies:
        raise HeaderOnlyInMetadata(
            f"the model was sealed (ParamSeal records remain in {n} of its tensors) but its weights had no room for "
            "a copy of its header (a small model, or a header made long by block tags kept in it, as for tensors "
            f"holding NaN/Inf), and its metadata, which held the header, is gone. {HEADER_HINT}"
        )
    if n:
        raise HeaderAuthError(
            f"the model was sealed (ParamSeal records remain in {n} of its tensors), but no copy of its header in "
            "the weights is intact: they were tampered with, and nothing can be checked or rebuilt without the "
            f"header. {HEADER_HINT}"
        )
    if tried:
        raise HeaderAuthError(
            "the model's weights hold copies of a ParamSeal header where a seal puts them, but their records are "
            "gone and none of them authenticates with this key: they were tampered with, and nothing can be checked "
            f"or rebuilt without the header. {HEADER_HINT}"
        )
    raise NotSealedError(
        "the model carries no ParamSeal header: none in the file's metadata and no copy in the weights; "
        "seal it first with 'paramseal seal' if it never was (a model too small to hold a copy needs its "
        f"original metadata). {NOT_SEALED_WARNING}"
    )


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


#: Float dtypes a sealed float tensor may have been widened from, tried in turn (`widened_seal`).
_NARROWER = (np.dtype(np.float32), np.dtype(np.float16), np.dtype(ml_dtypes.bfloat16))


def widened_seal(tensors: Mapping[str, NDArray[np.generic]], key: Key) -> dict[str, tuple[str, str]] | None:
    """Where a model with no header copy of its own has one once its floats are narrowed back, what was widened.

    A sealed float32 model saved as float64 keeps every value but not the bits its header copies are
    written in. For each narrower float dtype, the tensors whose every value it holds exactly are
    narrowed, and the copies authenticated with ``key``: name -> (its dtype, the one narrowed to) for
    the first that gives a header, or None.
    """
    floats = {n: a for n, a in tensors.items() if a.dtype.kind == "f" and a.size}
    for target in _NARROWER:
        narrowed: dict[str, NDArray[np.generic]] = {}
        for name, a in floats.items():
            if a.dtype.itemsize > target.itemsize and (b := _narrowed(a, target)) is not None:
                narrowed[name] = b
        if not narrowed:
            continue
        try:
            header_from_weights({**tensors, **narrowed}, key)
        except ParamSealError:
            continue
        return {n: (dtype_name(tensors[n].dtype), dtype_name(target)) for n in narrowed}
    return None


#: Values of a tensor tried first (`_narrowed`): a model never sealed is rejected without converting it whole.
_PROBE = 4096


def _narrowed(a: NDArray[np.generic], target: np.dtype[Any]) -> NDArray[np.generic] | None:
    """``a`` as ``target`` when that holds every value exactly, else None.

    Its first values are tried first: weights that were never narrower fail there, where converting
    and comparing the whole tensor read every value of a large unsealed model (the error path).
    """
    head = a.flat[:_PROBE]
    if not np.array_equal(head.astype(target).astype(a.dtype), head, equal_nan=True):
        return None
    b = a.astype(target)
    return b if np.array_equal(b.astype(a.dtype), a, equal_nan=True) else None


NOT_SEALED_WARNING = (
    "If it should be sealed, treat it as tampered: a seal can be stripped whole (metadata, header copies and "
    "records), and sealing it again would approve whatever it now holds"
)


class HeaderOnlyInMetadata(NotSealedError):
    """A sealed model too small to carry its header in its weights, read without its metadata: not whole (exit 2)."""

    exit_code = 2


_FP = re.compile("[0-9a-f]{16}")  # a well-formed key fingerprint


def _unreadable(e: ParamSealError) -> bool:
    return isinstance(e, HeaderAuthError) and e.unreadable


HEADER_HINT = (
    "Pass the header of a copy of the sealed model that keeps it (--header-from FILE: the sealed model file as "
    "written by seal, or its header in a .json file, as seal --header-out keeps it) to verify and recover; do not "
    "seal this file again unless you approve its weights"
)


def _dt(a: NDArray[np.generic]) -> str:
    try:
        return dtype_name(a.dtype)
    except UnsupportedError:
        return str(a.dtype)


def _metadata_issues(sealed: Mapping[str, str], found: Mapping[str, str]) -> list[str]:
    out = []
    for k in sorted(set(sealed) | set(found)):
        if k not in found:
            out.append(f"key '{k}' was removed")
        elif k not in sealed:
            out.append(f"key '{k}' was added")
        elif sealed[k] != found[k]:
            out.append(f"key '{k}' was changed")
    return out


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
    recoverable = chk.recoverable()
    notes = list(chk.notes)
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
    """
    expect_seal = seal_id_arg(expect_seal)
    chk = check(tensors, key, header_json, metadata=metadata, metadata_kept=metadata_kept)
    return pinned_check(report_of(chk), chk, tensors, expect_seal)


__all__ = [
    "GRAPH_EDITED",
    "HEADER_FROM_WEIGHTS",
    "HEADER_HINT",
    "NOT_SEALED_WARNING",
    "Check",
    "HeaderOnlyInMetadata",
    "UnfoundedTableError",
    "best_header",
    "carried_seal",
    "check",
    "header_from_weights",
    "unmatched",
    "metadata_findings",
    "other_seals_copies",
    "pinned_check",
    "another_seal",
    "report_of",
    "verified_share",
    "verify",
]

"""What a check finds besides failing block tags: the model's tensor table and metadata against the sealed header.

Separate from `verify`, which recomputes the tags: these compare names, dtypes, shapes and
metadata with the authentic header and read no block. Tensors the model lacks, retyped or
converted tensors, metadata added, changed or stripped, and a ``--tensors`` pattern that
matches nothing are each named here.
"""

from __future__ import annotations

import difflib
import fnmatch
import os
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ._layout import TensorSpec
from .errors import FormatError, UnsupportedError, UsageError
from .header import Header, metadata_digest, own_entries
from .levels import BLOCK, FLOATS, ST_TO_NP, dtype_name


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


def refuse_unfounded(
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
            differs = OWN_DIFFERS if mine else OWN_LOST  # none left: a tie removed, or a graph digest
            meta = [] if mine == own_entries(mine) and metadata_digest(mine) == own else [differs]
            if own != header.digest:
                notes.append(f"{_NO_USER_METADATA}: the sealed user keys were not checked")
        elif metadata:
            meta = [] if metadata_digest(dict(metadata)) == header.digest else [META_DIFFERS]
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
#: GRAPH_EDITED where the seal holds the first digest (bare hex, sealed before 'v2:'), which tools' re-encodings fail
GRAPH_EDITED_V1 = (
    "the model's graph (its nodes, their inputs and attributes, the model's inputs and outputs) is not the one "
    "sealed, by its seal's graph digest of the older kind (bare hex, sealed before 'v2:'), which also counts as "
    "edits what tools rewrite without changing what the model computes: tensors re-encoded by onnx's numpy_helper, "
    "onnx.version_converter, onnx.shape_inference.infer_shapes, onnxruntime's symbolic_shape_infer. If such a tool "
    "made this file from the sealed model, check that its change is all that differs, verify (recover if needed) "
    "the sealed model it started from, seal that again (seal --reseal) to give it the newer digest, which those "
    "tools leave intact, and run the tool again; else take the sealed model from a kept copy (ParamSeal restores "
    "values, not graphs)"
)
#: The start of each finding of a shape an ONNX model declares that its graph contradicts (`declared_shape`)
DECLARED_SHAPE = "a shape the model declares contradicts its graph: "


def declared_shape(name: str, where: str, declared: str, inferred: str, onnx_version: str) -> str:
    """The finding of value ``name`` (declared by ``where``) declared ``declared``; the graph gives ``inferred``.

    ``onnx_version``: the onnx whose shape inference gave ``inferred`` (a later one may infer otherwise).
    """
    return (
        f"{DECLARED_SHAPE}'{name}' ({where}) is declared {declared}, and shape inference from the graph gives "
        f"{inferred} (the installed onnx {onnx_version}'s inference: an onnx that infers differently from the one "
        "the model was sealed with could make an untouched model read so; if that may be the case, verify again "
        "with that onnx version). ONNX Runtime may compute with the declared shape (its graph optimizations fold a "
        "Shape of the value to it), so the model may not compute what was sealed. The graph digest leaves declared "
        "shapes out (shape inference adds them), and seal refuses a model whose declarations its graph contradicts: "
        "this one was made after sealing (or the model was sealed by a ParamSeal that did not check them, or under "
        "an onnx that inferred otherwise). ParamSeal restores values, not graphs: take the sealed model from a kept "
        "copy, or remove the declaration (the value_info entry, the output's or subgraph input's dims) and verify "
        "again"
    )


META_STRIPPED = (
    "the file's metadata was stripped, and the sealed metadata with it (the header in the weights keeps only its "
    "digest: it cannot be restored; --header-from a kept copy of the sealed model restores it)"
)
#: META_STRIPPED where the sealed metadata was an ONNX model's graph digest alone, and no version read derives it
GRAPH_STRIPPED = (
    "the file's metadata was stripped, and with it the sealed graph digest ('paramseal.graph', all the metadata "
    "sealed), which verify derives again from a graph as sealed: no digest version this ParamSeal reads gives the "
    "sealed one from this graph. Either the graph was edited; or the seal's digest is of the older kind (sealed "
    "before 'v2:'), which also counts as edits what tools rewrite without changing what the model computes "
    "(numpy_helper's re-encoding, onnx.version_converter, infer_shapes, symbolic_shape_infer); or a newer "
    "ParamSeal sealed it with a later digest version. The header in the weights keeps the entry's digest, not its "
    "version: verify with --header-from a kept copy of the sealed model, or upgrade ParamSeal, to tell which"
)
META_DIFFERS = (
    "the file's metadata differs from the metadata sealed (the header in the weights keeps only its digest: "
    "it cannot be compared key by key, nor restored)"
)


OWN_DIFFERS = (
    "the model's ParamSeal entries (its weight ties) are not the ones sealed: a tie was re-pointed, added or "
    "removed (the header in the weights keeps only their digest: it cannot say which)"
)
OWN_LOST = (
    "the model holds none of the ParamSeal entries sealed with it (its weight ties, or a graph digest): a tie was "
    "removed, or the model was sealed from an ONNX model and this file lost its graph digest (a .pt keeps it only "
    "in its _metadata entry '.paramseal', which torch.save(model.state_dict()) drops; the header in the weights "
    "keeps only their digest: it cannot say which). Verify the file as seal wrote it"
)


RETYPED = "dtype changed from"  # the start of a retyped tensor's issue (`usable`), which recover counts


def usable(a: NDArray[np.generic] | None, spec: TensorSpec) -> tuple[NDArray[np.generic] | None, list[str]]:
    """``a`` as the sealed tensor's data (None when it cannot be: missing, or another size) and what differs."""
    if a is None:
        return None, ["missing"]
    try:
        dt = dtype_name(a.dtype)
    except UnsupportedError:
        dt = str(a.dtype)
    if dt != spec.dtype:
        why = [f"{RETYPED} {spec.dtype} to {dt}"]
        sealed = ST_TO_NP[spec.dtype]
        same = dt in ST_TO_NP or raw_void(a.dtype)  # a raw void: np.save's ml_dtypes bfloat16
        if same and a.size == spec.numel and a.dtype.itemsize == sealed.itemsize:
            # the same bytes under another name (F32 marked I32): their tags decide, as for a reshape
            return np.ascontiguousarray(a).view(sealed).reshape(spec.shape), why
        if dt in FLOATS and spec.dtype in FLOATS and a.size == spec.numel and a.dtype.itemsize > sealed.itemsize:
            return _narrowed_back(a, spec, why)
        return None, why
    if a.size != spec.numel:
        return None, [f"shape changed from {list(spec.shape)} to {list(a.shape)}"]
    if tuple(a.shape) != spec.shape:
        return a, [f"reshaped from {list(spec.shape)} to {list(a.shape)}"]
    return a, []


CONVERTED = "the whole model was converted from"  # in `converted`'s note, which a header given may make wrong

_BACK = {"F64": ".double()", "F32": ".float()", "F16": ".half()", "BF16": ".bfloat16()"}


NOT_NARROWED = "not representable in"  # the issue of values a widened tensor holds that its sealed dtype does not


def _narrowed_back(
    a: NDArray[np.generic], spec: TensorSpec, why: list[str]
) -> tuple[NDArray[np.generic] | None, list[str]]:
    """A float tensor widened after sealing (BF16 saved as F32), read narrowed back to its sealed dtype.

    Widening keeps every value, so narrowed back each is the sealed one, checked bit for bit (it widens
    to the bits the file holds); the tags then judge the blocks as ever. Values that do not narrow back
    exactly were changed after the conversion: they are rounded, their blocks fail their tags (or hold
    the sealed bits again), and the issue counts them.
    """
    wide = np.ascontiguousarray(a).reshape(-1)  # a wider float holds every narrower one's values (F64, F32)
    b = wide.astype(ST_TO_NP[spec.dtype])
    bits = np.dtype(f"u{wide.dtype.itemsize}")
    off = int(np.count_nonzero(b.astype(wide.dtype).view(bits) != wide.view(bits)))
    if off:
        why = [
            *why,
            f"{off} value(s) {NOT_NARROWED} {spec.dtype}, so not sealed values widened (changed since, or never "
            f"sealed so): read rounded to {spec.dtype}, their blocks' tags judge them",
        ]
    return b.reshape(spec.shape), why


def converted(
    arrays: Mapping[str, NDArray[np.generic]],
    specs: list[TensorSpec],
    chosen: list[bool],
    issues: Iterable[list[str]] = (),
) -> str | None:
    """A note when every sealed float tensor checked was found converted to one other float dtype (``.float()``).

    The findings name each retyped tensor; this says once what happened to the model and how to undo it.
    ``issues``: the tensors' issues, which count values of a widened tensor that no longer narrow back.
    """
    pairs = set()
    for spec, on in zip(specs, chosen, strict=True):
        if on and spec.dtype in FLOATS:
            a = arrays.get(spec.name)
            if a is None or a.size != spec.numel:
                return None
            pairs.add((spec.dtype, dtype_label(a)))
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
    said = f"every sealed float tensor is {now}, sealed as {was}: {CONVERTED} {was} to {now}"
    if FLOATS[now].mantissa >= FLOATS[was].mantissa and FLOATS[now].exponent >= FLOATS[was].exponent:
        if any(NOT_NARROWED in i for iss in issues for i in iss):
            return (
                f"{said}, which keeps every value, but some values no longer narrow back to {was} exactly: they "
                "changed after the conversion (each tensor's issues count them); every value was checked narrowed "
                f"back to {was} (what recover writes is {was}, as sealed)"
            )
        return (
            f"{said}, which keeps every value: each narrows back to {was} exactly (checked bit for bit), and the "
            f"model was checked so; recover writes it back as {was}, as sealed (or convert it back yourself: a "
            f"module: {_BACK[was]}; a file: save its tensors as {was})"
        )
    return f"{said}, which drops low mantissa bits and the seal with them: take the sealed model from a kept copy"


def unmatched(select: str | None, names: Iterable[str], what: str) -> UsageError:
    """The error for a ``--tensors`` pattern that matches ``what`` (none of ``names``), naming close names.

    Close: names whose last path part matches (an ONNX subgraph's ``w`` is sealed as ``if:then_branch/w``),
    else, for a glob, the globs with a near prefix that match (``model.layers.3.*`` for ``model.layer.3.*``),
    else names that read almost the same (a typo, another case).
    """
    pool = sorted(set(names))
    near = [n for n in pool if "/" in n and fnmatch.fnmatchcase(n.rsplit("/", 1)[1], select or "")]
    # a glob is answered with globs (the corrected pattern, not three of the names it would match)
    globs = [] if near else _close_globs(select or "", pool)
    if globs:
        return UsageError(f"--tensors '{select}' matches {what}; check the pattern (close patterns: {_quoted(globs)})")
    near = near or difflib.get_close_matches(select or "", pool, n=3, cutoff=0.75)
    if near:
        return UsageError(f"--tensors '{select}' matches {what}; check the pattern (close names: {_quoted(near)})")
    return UsageError(f"--tensors '{select}' matches {what}; check the pattern")


def _quoted(names: list[str]) -> str:
    return ", ".join(map(repr, names[:5]))


def _close_globs(select: str, pool: list[str]) -> list[str]:
    """Globs like ``select`` whose literal end is made a near part of some names, each matching.

    The text before the first wildcard is made a near prefix; in a glob that starts with a
    wildcard, the text after the last one a near suffix (``*.q_proj.weight`` for ``*.q_prj.weight``).
    """
    wild = [i for i, c in enumerate(select) if c in "*?["]
    if not wild:  # a plain name: close names are tried on it
        return []
    if wild[0] > 0:
        cut = wild[0]
        head, tail = select[:cut], select[cut:]
        # names differ from the prefix by their tails: compare it with their prefixes of about its length
        parts = {n[:n_] for n in pool for n_ in range(max(1, cut - 2), cut + 3)}
    else:  # '*.q_prj': the text after the last wildcard is what may be mistyped
        end = select.find("]", wild[-1]) + 1 if select[wild[-1]] == "[" else wild[-1] + 1
        if end <= 0 or end >= len(select):
            return []
        head, tail = select[end:], select[:end]
        k = len(head)
        parts = {n[-n_:] for n in pool for n_ in range(max(1, k - 2), k + 3) if n_ <= len(n)}
    out: list[str] = []
    seen: list[set[str]] = []
    for p in difflib.get_close_matches(head, sorted(parts), n=6, cutoff=0.8):
        glob = p + tail if wild[0] > 0 else tail + p
        hits = {n for n in pool if fnmatch.fnmatchcase(n, glob)}
        if hits and not any(hits <= s for s in seen):  # not a part of a closer glob's tensors
            seen.append(hits)
            out.append(glob)
    return out[:3]


def raw_void(dt: np.dtype[Any]) -> bool:
    """Raw bytes of no known type: ``np.save`` writes ml_dtypes' bfloat16 (and float8) arrays so."""
    return dt.kind == "V" and dt.names is None and dt.subdtype is None


def dtype_label(a: NDArray[np.generic]) -> str:
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


__all__ = [
    "RETYPED",
    "DECLARED_SHAPE",
    "GRAPH_EDITED",
    "GRAPH_EDITED_V1",
    "GRAPH_STRIPPED",
    "HEADER_FROM_WEIGHTS",
    "META_DIFFERS",
    "META_STRIPPED",
    "OWN_DIFFERS",
    "OWN_LOST",
    "UnfoundedTableError",
    "converted",
    "declared_shape",
    "dtype_label",
    "metadata_findings",
    "raw_void",
    "refuse_unfounded",
    "unmatched",
    "usable",
]

"""Which seal header a model file is checked against, and what was noticed finding it.

The header given (``--header-from``), else the file's metadata, else the copy in the weights;
an edited, cut-down or replayed metadata header is reported as tampering and the weights' copy
used (`check_loaded`, the check of a loaded file, is where verify and recover start).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ._findings import (
    CONVERTED,
    GRAPH_EDITED,
    GRAPH_EDITED_V1,
    GRAPH_STRIPPED,
    HEADER_FROM_WEIGHTS,
    META_STRIPPED,
    declared_shape,
    dtype_label,
)
from ._pages import check_inputs
from ._weights_header import HEADER_HINT, NOT_SEALED_WARNING, HeaderOnlyInMetadata, header_from_weights, widened_seal
from .errors import FormatError, KeyMismatchError, NotSealedError, ParamSealError
from .formats import GRAPH_KEY, Loaded, adapter_for, onnx_format
from .formats.numpy import NPY_TENSOR_NAME
from .header import METADATA_KEY, Header, HeaderAuthError, metadata_digest, parse_header, peek_header
from .keys import Key
from .verify import Check, another_seal, best_header, check, other_seals_copies, verified_share


@contextmanager
def prefixed_errors(
    path: Path, kinds: tuple[type[ParamSealError], ...] = (FormatError, KeyMismatchError)
) -> Iterator[None]:
    """Prefix errors about a model's content with the file they concern."""
    try:
        yield
    except kinds as e:
        if str(path) in str(e):
            raise
        e.args = (f"'{path}': {e}",)
        raise


@dataclass
class FoundHeader:
    """Where a file's seal header came from, and what was noticed on the way."""

    text: str
    meta: dict[str, str]  # the file's other metadata
    embedded: bool  # the header came from the weights (and stays there when recovered)
    issues: list[str] = field(default_factory=list)  # tampering found besides the weights
    notes: list[str] = field(default_factory=list)
    graph_only: bool = False  # from the weights, of an ONNX model whose sealed metadata was its graph digest alone


def check_loaded(loaded: Loaded, path: Path, key: Key, header: str | None, **kw: Any) -> tuple[Check, FoundHeader]:
    """The check of a loaded model file against its seal header (see `_split_header`)."""
    check_inputs()  # check's decode of damaged groups reads through the map: not past a new end
    found = _split_header(loaded, path, key, header)
    _name_npy_array(loaded, path, found.text)
    chk = check(
        loaded.tensors,
        key,
        found.text,
        metadata=found.meta,
        metadata_kept=_keeps(loaded, path),
        shown=onnx_format.unshown_names(loaded),
        **kw,
    )
    check_inputs()  # recover goes on to read damaged blocks' neighbours through the map
    chk.metadata_issues[:0] = [*found.issues, *_shape_issues(loaded, chk, found.notes)]
    if found.graph_only and META_STRIPPED in chk.metadata_issues:  # say what was stripped, and what it may mean
        chk.metadata_issues[chk.metadata_issues.index(META_STRIPPED)] = GRAPH_STRIPPED
    if any(_OTHER_DTYPE in i for i in found.issues):  # sealed so, not converted: the issue says which header is whose
        chk.notes[:] = [n for n in chk.notes if CONVERTED not in n]
    chk.notes.extend(found.notes)
    return chk, found


def _name_npy_array(loaded: Loaded, path: Path, text: str) -> None:
    """A .npy's array (read as ``'array'``) takes the name of the seal's only tensor: the file holds no name.

    Sealed or recovered into .npy, a one-tensor model named otherwise was otherwise reported renamed.
    """
    if path.is_dir() or adapter_for(path).name != "npy" or list(loaded.tensors) != [NPY_TENSOR_NAME]:
        return
    try:  # check authenticates the header; a forged one fails there whatever the array is called
        names = [str(t["name"]) for t in peek_header(text)["tensors"]]
    except (FormatError, KeyError, TypeError):
        return
    if len(names) == 1:
        loaded.tensors[names[0]] = loaded.tensors.pop(NPY_TENSOR_NAME)


def _keeps(loaded: Loaded, path: Path) -> bool:
    return adapter_for(path).keeps_metadata if loaded.metadata_kept is None else loaded.metadata_kept


def _split_header(loaded: Loaded, path: Path, key: Key, header: str | None = None) -> FoundHeader:
    """The seal header, the other metadata, whether the header came from the weights, and issues met.

    The header is ``header`` if given (kept by the user: ``--header-from``), else the metadata's,
    else the copy in the weights. A metadata header that does not authenticate while a copy in the
    weights does was edited: the copy is used, and the edit is reported as tampering. An authentic
    header of another seal in the metadata is replaced by an intact copy in the weights of another seal
    of the same model when a larger share of its blocks verify under it (`best_header`); with none, it
    is kept: the weights then fail against it, as a replay should.
    """
    found = _find_header(loaded, path, key, header, _keeps(loaded, path))
    if loaded.others:  # a sealed file is the model alone: a loader could read these instead
        shown = ", ".join(repr(n) for n in loaded.others[:8]) + (", ..." if len(loaded.others) > 8 else "")
        entries = "1 entry" if len(loaded.others) == 1 else f"{len(loaded.others)} entries"
        found.issues.append(
            f"the file holds {entries} besides the sealed weights ({shown}); a loader may read "
            "them instead of the sealed ones (recover writes the sealed weights alone)"
        )
    found.issues.extend(loaded.container_issues)  # damage to the container itself (a stale zip CRC), not the values
    found.issues.extend(_graph_issues(loaded, path, found.text, found.meta, key))
    return found


def _shape_issues(loaded: Loaded, chk: Check, notes: list[str]) -> list[str]:
    """The declared shapes of an ONNX model that its graph contradicts (the digest leaves them out); notes if unchecked.

    Checked with the tensors' data types as sealed, as the digest is (`_graph_as_sealed`), and with the values of
    the tensors that verified intact alone: a shape constant tampered with is that tensor's tampering, which
    recover restores, not a contradicted declaration.
    """
    if loaded.graph is None:
        return []
    intact = {
        s.name: loaded.tensors[s.name]
        for t, s in enumerate(chk.specs)
        if s.name in loaded.tensors
        and not chk.issues[t]
        and not chk.bad[t].any()
        and t not in chk.moved
        and (not chk.chosen or chk.chosen[t])
    }
    return shape_issues(loaded, chk, intact, notes)


def shape_issues(
    loaded: Loaded, chk: Check, values: Mapping[str, NDArray[np.generic]], notes: list[str] | None = None
) -> list[str]:
    """The findings of the declared shapes of ONNX model ``loaded`` its graph contradicts, read with ``values``.

    recover asks again with the restored values: a shape constant restored may contradict a declaration edited to
    match its tampered value, which verify, reading intact tensors alone, could not judge.
    """
    if (shapes := onnx_format.declared_shapes(loaded, {s.name: s.dtype for s in chk.specs}, values)) is None:
        return []
    if shapes.skipped is not None and notes is not None:
        notes.append(f"the model's declared shapes were not checked against its graph: {shapes.skipped}")
    return [declared_shape(c.name, c.where, c.declared, c.inferred, shapes.onnx_version) for c in shapes.found]


def _graph_issues(loaded: Loaded, path: Path, text: str, meta: dict[str, str], key: Key) -> list[str]:
    """The graph sealed (in the header's metadata, or the file's when its digest vouches for it) against the file's.

    Both are authenticated: a digest of a version this ParamSeal does not know was sealed by a newer one
    (refused: checked as another version's, any graph would read as edited), never a tampered entry.
    """
    if loaded.graph is None:
        return []
    h = parse_header(text, key)
    sealed = h.user_metadata if h.user_metadata is not None else meta if metadata_digest(meta) == h.digest else {}
    want = sealed.get(GRAPH_KEY)
    if want is None or want == loaded.graph:
        return []
    if (version := onnx_format.graph_version(want)) not in onnx_format.GRAPH_VERSIONS:
        known = " and ".join(str(v) for v in sorted(onnx_format.GRAPH_VERSIONS))
        raise FormatError(
            f"'{path}' was sealed by a newer ParamSeal: its graph digest ('{GRAPH_KEY}', authenticated with the "
            f"seal) is of version {version}, and this ParamSeal reads versions {known}; upgrade ParamSeal to verify "
            "or recover it"
        )
    if want == _graph_as_sealed(loaded, h, version):  # a seal's digest: its version's
        return []
    return [GRAPH_EDITED_V1 if version == 1 else GRAPH_EDITED]  # v1 also fails tools' re-encodings: say so


def _graph_as_sealed(loaded: Loaded, h: Header, version: int | None = None) -> str | None:
    """The file's graph digest (of ``version``, `_onnx_digest.GRAPH_VERSION`) with its tensors' dtypes as sealed.

    A tensor saved again as another dtype is that tensor's tampering, which check reports (the header
    holds its dtype) and recover restores, not an edited graph. None: no ONNX model.
    """
    return onnx_format.graph_as_sealed(loaded, {s.name: s.dtype for s in h.tensors}, version)


def _sealed_graph_entry(loaded: Loaded, h: Header) -> dict[str, str]:
    """The metadata sealed, if all it held was the graph's digest (of any version) and the graph is as sealed."""
    for version in onnx_format.GRAPH_VERSIONS if loaded.graph is not None else ():
        graph = _graph_as_sealed(loaded, h, version)
        if graph is not None and metadata_digest(derived := {GRAPH_KEY: graph}) == h.digest:
            return derived
    return {}


def _find_header(loaded: Loaded, path: Path, key: Key, header: str | None, kept: bool) -> FoundHeader:
    meta = dict(loaded.metadata)
    text = meta.pop(METADATA_KEY, None)
    if header is not None:
        issues = [] if text is None or _same_header(text, header, key) else [_not_given(loaded, text, header, key)]
        # a header kept from a .pt or .npy is the weights' cut-down form: made whole, as verify makes a copy
        # it reads from the weights, so that an output that keeps metadata does not carry it cut down
        try:
            header = made_whole(header, meta, key)
        except (FormatError, KeyMismatchError):  # not authentic: the check says so, as before
            pass
        found = FoundHeader(header, meta, False, issues)
        if text is None and kept:  # say so, as verify without --header-from would
            found.notes.append("the file's metadata carries no ParamSeal header; the one given was used")
        if text is None:  # no own header to compare with (`_not_given`): another model's still needs saying
            found.notes += _another_models(loaded, header, key)
        return found
    if text is None:
        try:
            copy = header_from_weights(loaded.tensors, key)
        except HeaderOnlyInMetadata as e:
            raise HeaderOnlyInMetadata(f"'{path}': {e}") from None
        except NotSealedError:
            widened = widened_seal(loaded.tensors, key)
            if widened is not None:
                raise NotSealedError(_widened(path, widened)) from None
            raise NotSealedError(
                f"'{path}' carries no ParamSeal header, in its metadata or in its weights; seal it first with "
                f"'paramseal seal' if it never was. {NOT_SEALED_WARNING}"
            ) from None
        h = parse_header(copy, key)
        sealed_digest = h.digest
        if not meta and (derived := _sealed_graph_entry(loaded, h)):
            return FoundHeader(copy, derived, True)  # all the metadata sealed was the graph's digest: nothing is lost
        if kept and not meta and sealed_digest == metadata_digest({}):
            # the file had the header alone in its metadata, which was stripped: recover writes it back
            why = f"{HEADER_FROM_WEIGHTS} (the file's metadata, which held it alone, was stripped); "
            why += "recover writes it back"
            return FoundHeader(made_whole(copy, {}, key), {}, False, notes=[why])
        if kept and not meta and (known := _writers_metadata(sealed_digest)) is not None:
            # all it held besides the header was a writer's format entry: known from its digest, nothing is lost
            why = (
                f"{HEADER_FROM_WEIGHTS} (the file's metadata, which held it and {known} alone, the entry "
                "safetensors' writers add, was stripped; the sealed metadata is known from its digest); "
                "recover writes them back"
            )
            return FoundHeader(made_whole(copy, known, key), known, False, notes=[why])
        if not meta or not kept:  # none stored (a conversion, a re-save: check judges what was lost), or
            # none storable: the reader's own entries (.pt ties); a graph digest no version read derives (a newer one?)
            graph_only = loaded.graph is not None and h.own_digest == sealed_digest
            return FoundHeader(copy, meta, True, graph_only=graph_only)
        # Other metadata but no header entry: a tool re-saved the file with metadata of its own or
        # the user's (save_pretrained writes {"format": "pt"}). Check judges that metadata against
        # the sealed digest; the header is whole again in what recover writes.
        why = f"the file's metadata has no ParamSeal header entry (a tool re-saved it?); {_USED}"
        return FoundHeader(made_whole(copy, meta, key), meta, False, notes=[why])
    try:
        h = parse_header(text, key)
    except (FormatError, KeyMismatchError) as e:  # edited, or another key's: is the copy in the weights intact?
        try:
            copy = header_from_weights(loaded.tensors, key)
        except ParamSealError as w:
            raise _both_lost(e, w) from None
        edited = f"the ParamSeal header in the metadata {_unusable(e)}; its authenticated copy in the weights was used"
        return FoundHeader(made_whole(copy, meta, key), meta, False, [edited])
    if h.user_metadata is None:  # the weights' form, which seal never writes into the metadata: an edit
        cut = "the ParamSeal header in the file's metadata was cut down to the form kept in the weights"
        return FoundHeader(made_whole(text, meta, key), meta, False, [cut])
    rivals = other_seals_copies(loaded.tensors, key, h)
    if rivals and (copy := best_header(loaded.tensors, key, [text, *rivals])) != text:
        # another seal's metadata under this key (an older seal's file's, copied over): the weights tell
        replaced = (
            f"the ParamSeal header in the file's metadata is another seal's under this key (salt {h.salt.hex()}), "
            f"not that of the seal the weights carry (salt {parse_header(copy, key).salt.hex()}); {_USED}"
        )
        return FoundHeader(made_whole(copy, meta, key), meta, False, [replaced])
    return FoundHeader(text, meta, False)


def own_header(loaded: Loaded) -> list[str]:
    """The file's own metadata header, if any: under ``--header-from`` the weights may carry its seal instead."""
    own = loaded.metadata.get(METADATA_KEY)
    return [] if own is None else [own]


def _widened(path: Path, widened: dict[str, tuple[str, str]]) -> str:
    """Why a model whose floats were widened after sealing (`widened_seal`) cannot be checked, and the fix."""
    changes = sorted(set(widened.values()))
    names = sorted(widened)
    shown = ", ".join(f"'{n}'" for n in names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    how = "; ".join(f"{sealed} to {now}" for now, sealed in changes)
    to = changes[0][1]  # one narrower type for the whole model
    fix = f"save {'it' if len(names) == 1 else 'them'} as {to} again"
    if path.suffix.lower() == ".npy" and to in ("F32", "F16"):
        fix = f"np.save({str(path)!r}, np.load({str(path)!r}).astype(np.float{to[1:]}))"
    return (
        f"'{path}' carries no ParamSeal header as it is, but its float tensor(s) {shown} hold only values exactly "
        f"representable in a narrower type, and narrowed back they carry this key's seal header: the model was "
        f"converted from {how} after it was sealed, which keeps every value but not the bits verify reads. As it "
        f"is, the file is not the sealed one; convert it back ({fix}) and verify or recover that"
    )


_USED = "the copy in the weights was used"


_NOT_GIVEN = "the file's own ParamSeal header is not the one given (--header-from), which was used"
_OTHER_DTYPE = "the file was sealed in its own dtype, not converted after sealing"


def _not_given(loaded: Loaded, text: str, given: str, key: Key) -> str:
    """`_NOT_GIVEN`, and why: the header given seals another model, or the weights carry another seal of it.

    A header given that names none of the file's tensors is another model's. A header kept from an
    older seal (given with --header-from) fails nearly every block of a model sealed again since:
    the check against it stands (it is what the user asked for), but the report says that the
    weights are intact under the seal they carry, not damaged. That takes a second check of the
    weights, only when the two headers differ.
    """
    try:
        kept = parse_header(given, key)
        if _seals_another_model(loaded, kept):
            return (
                f"{_NOT_GIVEN}: it seals another model ({_none_here(len(kept.tensors))}; "
                "verify without --header-from checks the file against its own header)"
            )
        own = parse_header(text, key)
    except (FormatError, KeyMismatchError):
        return _NOT_GIVEN
    retyped = _sealed_in_another_dtype(loaded, kept, own)
    if retyped is not None:
        intact = verified_share(loaded.tensors, key, text) == 1
        under = "; the weights are intact under the file's own header" if intact else ""
        return (
            f"{_NOT_GIVEN}: the header given seals the model {retyped}; {_OTHER_DTYPE}{under} (verify without "
            "--header-from checks the file against its own header)"
        )
    intact_s = _intact_under_another_seal(loaded, key, kept, own, text, "the file's own header")
    return _NOT_GIVEN if intact_s is None else f"{_NOT_GIVEN}: {intact_s}"


def _sealed_in_another_dtype(loaded: Loaded, kept: Header, own: Header) -> str | None:
    """How a header given seals this model in other dtypes than the file's own header, which the file has, or None.

    Then the file was sealed as it is, not converted after sealing: the conversion note is wrong (`check_loaded`).
    """
    if [(s.name, s.shape) for s in kept.tensors] != [(s.name, s.shape) for s in own.tensors]:
        return None
    pairs = {(k.dtype, o.dtype) for k, o in zip(kept.tensors, own.tensors, strict=True) if k.dtype != o.dtype}
    as_file = all((a := loaded.tensors.get(o.name)) is not None and dtype_label(a) == o.dtype for o in own.tensors)
    if not pairs or not as_file:
        return None
    return "as " + "; ".join(f"{k}, the file's own header as {o}" for k, o in sorted(pairs))


def _intact_under_another_seal(
    loaded: Loaded, key: Key, kept: Header, own: Header, text: str, where: str
) -> str | None:
    """What to say when the weights verify whole under ``own`` (``text``, at ``where``), another seal than ``kept``.

    None when ``own`` is the seal ``kept``, or the weights fail under it too. A second check of the
    weights, only when the two headers differ.
    """
    if not another_seal(kept, own) or verified_share(loaded.tensors, key, text) != 1:
        return None
    return (
        f"the weights carry another seal of the same model (salt {own.salt.hex()}; the header given is of salt "
        f"{kept.salt.hex()}) and are intact under {where} (verify without --header-from checks them against it)"
    )


def _seals_another_model(loaded: Loaded, given: Header) -> bool:
    """Whether a header given names none of the file's tensors: every one would read as missing and extra."""
    return not {s.name for s in given.tensors} & set(loaded.tensors)


def _another_models(loaded: Loaded, given: str, key: Key) -> list[str]:
    """A note for a header given that seals another model, or another seal of this one (no own header to compare).

    For a file whose metadata holds no header of its own; `_not_given` says the same of one whose metadata does.
    """
    try:
        kept = parse_header(given, key)
    except (FormatError, KeyMismatchError):  # the check says so
        return []
    if not _seals_another_model(loaded, kept):
        return _another_seal_in_weights(loaded, kept, key)
    try:  # what to give instead: whether the file keeps a copy of its own header in its weights
        header_from_weights(loaded.tensors, key)
        own = "verify without --header-from checks the file against the copy of its own header in its weights"
    except ParamSealError:
        own = "give this model's own: a copy of its sealed file, or the .json file seal --header-out wrote for it"
    return [f"the header given (--header-from) seals another model: {_none_here(len(kept.tensors))}; {own}"]


def _none_here(n: int) -> str:
    """That none of a header's ``n`` tensors is in the file, counted in the singular for one."""
    return "its one tensor is not in this file" if n == 1 else f"none of its {n} tensors is in this file"


def _another_seal_in_weights(loaded: Loaded, kept: Header, key: Key) -> list[str]:
    """A note when the weights carry another seal of the model than ``kept`` and are intact under it."""
    try:
        text = header_from_weights(loaded.tensors, key)
        own = parse_header(text, key)
    except ParamSealError:  # no copy, or none usable: the check against the header given is all there is
        return []
    intact = _intact_under_another_seal(loaded, key, kept, own, text, "the copy of its header in them")
    return [] if intact is None else [intact]


def _both_lost(e: FormatError | KeyMismatchError, w: ParamSealError) -> ParamSealError:
    """The error for a header in the metadata that cannot be used (``e``) and none usable in the weights (``w``).

    A damaged or edited one (exit 2) says so, then what the weights hold and the remedy, as a header lost
    from the weights alone does; another key's, or an unknown scheme, is that error (exit 3), as is a damaged
    one where the weights' copies name another key (the key given is wrong: that is what to fix first).
    """
    if isinstance(e, HeaderAuthError) and isinstance(w, KeyMismatchError):  # the weights' copies name the sealing key
        mismatch = KeyMismatchError(w.stored, w.given)
        mismatch.args = (f"{w}; the ParamSeal header in the file's metadata {e.reason}",)
        return mismatch
    if not isinstance(e, HeaderAuthError):
        return e
    weights = str(w) if isinstance(w, HeaderAuthError) else f"the weights hold no copy of it. {HEADER_HINT}"
    return HeaderAuthError(f"the ParamSeal header in the file's metadata {e.reason}; {weights}", reason=e.reason)


def _unusable(e: FormatError | KeyMismatchError) -> str:
    """Why the metadata's header was not used, without what its error adds for a model with no other copy."""
    if isinstance(e, HeaderAuthError):
        return e.reason
    if isinstance(e, KeyMismatchError):
        return f"is sealed under another key (fingerprint {e.stored})"
    return f"cannot be used ({str(e).split(';')[0]})"  # an unknown scheme: not 'upgrade', the weights' copy is read


def _same_header(text: str, given: str, key: Key) -> bool:
    try:
        # the settings and tensor table (a copy from the weights carries the user metadata by digest only)
        a, b = parse_header(text, key), parse_header(given, key)
        return a.to_json(key, embedded=True) == b.to_json(key, embedded=True)
    except (FormatError, KeyMismatchError):
        return False


#: The metadata safetensors' framework writers put in a file (save_pretrained's {"format": "pt"}): a model sealed
#: with only this, whose metadata a tool stripped, has lost nothing that its header's digest cannot name.
_WRITERS_METADATA = tuple({"format": f} for f in ("pt", "tf", "flax", "mlx", "np"))


def _writers_metadata(digest: str) -> dict[str, str] | None:
    """The writer's metadata whose digest is ``digest``, if it is one of `_WRITERS_METADATA`."""
    return next((dict(m) for m in _WRITERS_METADATA if metadata_digest(m) == digest), None)


def made_whole(copy: str, meta: dict[str, str], key: Key) -> str:
    """The copy from the weights made whole: with the user metadata its digest vouches for (the file's, or none)."""
    h = parse_header(copy, key)
    if h.user_metadata is not None:
        return copy
    for known in (meta, {}):  # sealed with none: it is known exactly, and the file's can be compared key by key
        if metadata_digest(known) == h.digest:
            return replace(h, user_metadata=known, metadata_digest=None).to_json(key)
    return copy


def first_authentic(texts: list[str], key: Key) -> tuple[str | None, str]:
    """The first of ``texts`` that authenticates with ``key``, else None and why the last one did not."""
    why = ""
    for t in texts:
        try:
            parse_header(t, key)
            return t, ""
        except (FormatError, KeyMismatchError) as e:
            why = str(e)
    return None, why

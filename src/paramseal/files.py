"""Seal, verify and recover model files.

Outputs are written to a temporary file beside the destination, flushed and
renamed into place, so a failure leaves nothing half-written. The input is
never modified unless the caller passes the same path with ``in_place=True``.
"""

from __future__ import annotations

import errno
import json
import os
import re
import stat
import struct
import tempfile
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from . import _embed
from ._bits import uint_view
from ._inspect import describe
from ._layout import TensorSpec
from ._pages import Workspace, check_inputs, chunks, copy_range, pwrite_all, read, release
from ._progress import Progress
from ._shard_index import INDEX_SUFFIX, index_files, set_files
from ._tempname import renamed_to, temp_prefix
from .errors import (
    FormatError,
    InputError,
    KeyMismatchError,
    NotSealedError,
    OutputError,
    ParamSealError,
    ParamSealWarning,
    UnsupportedError,
    UsageError,
    cannot_write,
    io_failure,
)
from .formats import GRAPH_KEY, Loaded, adapter_for, onnx_format
from .formats import safetensors as st_format
from .formats.base import new_mode
from .formats.numpy import NPY_TENSOR_NAME
from .formats.pytorch import META_ENTRY
from .formats.registry import adapters
from .header import METADATA_KEY, SET_KEY, Header, HeaderAuthError, metadata_digest, parse_header, peek_header
from .keys import Key, looks_like_key_file, require_key
from .levels import BLOCK
from .recover import Patch, Recovery, not_the_expected_seal, plan_recovery, recover_from_plan
from .report import Report, seal_id_arg
from .seal import SealConfig, check_metadata, probe_header, seal_flat, use_irs, with_non_finite, write_blocks
from .verify import (
    GRAPH_EDITED,
    HEADER_FROM_WEIGHTS,
    HEADER_HINT,
    NOT_SEALED_WARNING,
    Check,
    HeaderOnlyInMetadata,
    another_seal,
    best_header,
    check,
    header_from_weights,
    metadata_findings,
    other_seals_copies,
    pinned_check,
    report_of,
    usable,
    verified_share,
    widened_seal,
)

PathLike = str | os.PathLike[str]


@contextmanager
def atomic_path(dst: Path, tmp: Path | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``dst`` (``tmp``, from :func:`temp_beside`, if given).

    It is renamed over ``dst`` only if the block succeeds, and deleted otherwise.
    """
    tmp_path = tmp or temp_beside(dst)
    try:
        try:
            with renamed_to(tmp_path, dst.name):  # a writer that names files after the output asks for it
                yield tmp_path
            # mkstemp (and the safetensors writer) leave 0600; a sealed model is meant to be shared.
            # A file replaced keeps its mode (an in-place recover of a read-only model stays read-only).
            try:
                mode = stat.S_IMODE(os.stat(dst).st_mode)
            except FileNotFoundError:
                mode = new_mode()
            os.chmod(tmp_path, mode)
            with open(tmp_path, "rb") as f:
                os.fsync(f.fileno())
            os.replace(tmp_path, dst)
        except OSError as e:
            if isinstance(e, ParamSealError):
                raise
            raise io_failure(dst, e, tmp_path) from e
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _never_a_key(dst: Path) -> None:
    """Refuse to replace a key file: the models sealed with it could never be checked again."""
    if looks_like_key_file(dst):
        raise UsageError(
            f"cannot write '{dst}': it holds a ParamSeal key, which would be lost; give another output path"
        )


def never_read_only(dst: Path, of: Path | None = None) -> None:
    """Refuse to replace an existing file its user may not write, as cp and a shell's ``>`` refuse it.

    The output is renamed into place, which needs only the folder's write permission: a model
    made read-only to keep it (a released one) would be replaced without a word. Root may write
    any file, and replaces it as cp does; a link at the output is replaced, and the file it names
    stays as it is. ``--in-place`` names the file to change, and does not come here. ``of``: the
    output whose file ``dst`` is (an ONNX model's external data, removed when the model is replaced).
    """
    if dst.is_symlink() or not dst.is_file():
        return
    effective = os.access in os.supports_effective_ids  # as open() would decide, in a setuid program too
    if not os.access(dst, os.W_OK, effective_ids=effective):
        if _on_read_only_fs(dst):  # no mode would let it be written: 'chmod u+w' fails there too
            raise cannot_write(dst, OSError(errno.EROFS, os.strerror(errno.EROFS), str(dst)))
        mode = stat.S_IMODE(os.stat(dst).st_mode)
        whose = "" if of is None else f" (the external data of '{of}', deleted when that model is replaced)"
        raise UsageError(
            f"cannot write '{dst}'{whose}: it exists and you may not write it (mode {mode:o}); ParamSeal does not "
            "replace it (nor would cp): make it writable (chmod u+w), remove it, or give another output path"
        )


def never_read_only_data(dst: Path, src: Path) -> None:
    """`never_read_only` for the external data files of the ONNX model at ``dst`` that writing ``src``'s removes."""
    for side in onnx_format.replaced_side_files(dst, src):
        never_read_only(side, of=dst)


def _on_read_only_fs(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):  # no statvfs (Windows): the mode's message stands
        return False


def temp_beside(dst: Path) -> Path:
    """A new empty temporary file in ``dst``'s folder (so the final rename is atomic)."""
    if dst.is_dir():
        raise UsageError(f"cannot write to '{dst}' because it is a directory; give a file path")
    if dst.exists() and not dst.is_file():  # a FIFO or a device: not a file to replace, and reading it may block
        raise UsageError(f"cannot write to '{dst}' because it is not a regular file; give a file path")
    _never_a_key(dst)
    parent = dst.parent if str(dst.parent) else Path(".")
    if not parent.is_dir():
        raise UsageError(f"cannot write '{dst}': folder '{parent}' does not exist")
    try:
        fd, tmp = tempfile.mkstemp(prefix=temp_prefix(dst.name, parent), suffix=".tmp", dir=parent)
    except OSError as e:
        raise cannot_write(dst, e) from e
    os.close(fd)
    return Path(tmp)


class _Precopy(threading.Thread):
    """Copies the input file to the output's temporary file, and writes it to disk, while verify runs.

    Recovery usually rewrites a few blocks: with the copy already made, the output costs
    a header and those blocks. The copy is only used if the output's layout matches.
    """

    _STEP = 256 << 20  # bytes per copy call: a stop request waits for at most one

    def __init__(self, src: Path, tmp: Path) -> None:
        super().__init__(name="paramseal-precopy", daemon=True)
        self.src, self.tmp, self.ok = src, tmp, False
        self._halt = threading.Event()

    def run(self) -> None:
        try:
            with open(self.src, "rb") as fi, open(self.tmp, "r+b") as fo:
                n = os.fstat(fi.fileno()).st_size
                for off in range(0, n, self._STEP):
                    if self._halt.is_set() or not copy_range(
                        fi.fileno(), off, fo.fileno(), off, min(self._STEP, n - off)
                    ):
                        return
                os.fsync(fo.fileno())
                self.ok = True
        except OSError:
            self.ok = False

    def cancel(self) -> None:
        """Stop copying and delete the temporary file."""
        self._halt.set()
        self.join()
        self.tmp.unlink(missing_ok=True)


def _check_paths(src: Path, dst: Path, in_place: bool) -> tuple[Path, str]:
    """``dst`` as written, and its format: the one ``dst``'s name gives, or in place the input's own.

    (A hub cache's blob has no extension; a safetensors file may be named .bin.)
    An in-place output reached through a symlink is the file it names: a link replaced by the new
    file would leave that file as it was. Not for ONNX in another folder: a reader finds the external
    data beside the link, and the side files would be written beside the file it names.
    """
    if not src.exists():
        raise UsageError(f"input '{src}' does not exist")
    _require_file(src)  # what is wrong with the input is said before what the output's name lacks
    _never_a_key(dst)  # now, not after the seal has been computed
    same = dst.exists() and dst.resolve() == src.resolve()
    if same and not in_place:
        raise UsageError(
            f"output '{dst}' is the input file; ParamSeal never modifies its input unless you pass --in-place "
            "(in_place=True)"
        )
    if not same:
        never_read_only(dst)
    try:
        # in place, the file keeps its own format: a safetensors file named .bin (which names no one
        # format) stays safetensors, where a new .bin output is a PyTorch file
        fmt = adapter_for(src).name if same else adapter_for(dst, must_exist=False).name
    except FormatError as e:
        if not same:
            raise
        try:  # in place through a link without an extension ('model' -> 'model.safetensors'): the file's name
            fmt = adapter_for(dst.resolve(), must_exist=False).name
        except FormatError:
            raise e from None
    if same and (fmt != "onnx" or dst.resolve().parent == dst.parent.resolve()):
        return dst.resolve(), fmt
    if not same and fmt == "onnx":
        never_read_only_data(dst, src)
    return dst, fmt


def read_model(path: PathLike, fmt: str | None = None) -> Loaded:
    """Read a model file with the adapter for its format."""
    p = Path(path)
    _require_file(p)
    return adapter_for(p, fmt).read(p)


def _require_file(p: Path, *, model: bool = True) -> None:
    if p.is_dir() and (p / "pytorch_model.bin.index.json").is_file():
        raise UsageError(
            f"input '{p}' is a sharded PyTorch checkpoint; ParamSeal seals sharded safetensors checkpoints "
            "(model.safetensors.index.json): convert it first (transformers' save_pretrained writes safetensors)"
        )
    if p.is_dir():
        if index_files(p) or set_files(p):
            raise UsageError(
                f"input '{p}' is a sharded checkpoint: use paramseal.sharded (seal_dir, verify_dir, recover_dir), "
                "which the command line calls for a folder"
            )
        raise UsageError(
            f"input '{p}' is a folder; a sharded checkpoint folder needs its index ('model.safetensors.index.json', "
            f"or another '*.safetensors.index.json'){_model_files_hint(p)}"
        )
    if model and p.name.endswith(INDEX_SUFFIX) and p.is_file():  # "cannot tell the format" says not what to give
        raise UsageError(
            f"'{p}' is a sharded checkpoint's index, not a model file: give the folder that holds it "
            f"('{p.parent}') to seal, verify, recover or inspect the checkpoint"
        )
    require_readable_file(p)
    if looks_like_key_file(p):  # caught here, before a format's error could quote its first bytes
        raise UsageError(f"'{p}' looks like a ParamSeal key file, not a model: pass the key with --key (key=)")


# What the Hugging Face Trainer (and Accelerate's save_state) writes beside the model in a checkpoint folder,
# with a model file's extension but no model in it: pickled arguments, optimizer, scheduler, AMP scaler,
# sampler and RNG states (``rng_state_3.pth`` on rank 3). A hint naming them would send the user astray.
_TRAINER_STATE = re.compile(
    r"(training_args|(optimizer|scheduler|scaler|sampler|rng_state|random_states)(_\d+)?)\.(bin|pt|pth)",
    re.IGNORECASE,
)


def _model_files_hint(folder: Path) -> str:
    """Name the model files in a folder given as the model: a Hugging Face folder of one `model.safetensors`."""
    known = {e for a in adapters() for e in a.extensions}
    try:
        found = sorted(
            str(f)
            for f in folder.iterdir()
            if f.suffix.lower() in known and not _TRAINER_STATE.fullmatch(f.name) and f.is_file()
        )
    except OSError:  # a folder we cannot list: the index message alone
        return ""
    if not found:
        return ""
    more = f", and {len(found) - 3} more" if len(found) > 3 else ""
    return f"; to use one model file in it, give its path: {', '.join(map(repr, found[:3]))}{more}"


def require_readable_file(p: Path) -> None:
    """An input that is no file, or one its user may not read, is exit 3 with the reason (not a traceback, exit 1)."""
    if not p.is_file():
        raise UsageError(f"input '{p}' does not exist or is not a file")
    try:
        os.close(os.open(p, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)))  # a FIFO put there: no wait (Windows: none)
    except OSError as e:
        raise InputError(f"cannot read '{p}': {e.strerror or e}") from None


def write_model(path: PathLike, loaded: Loaded, fmt: str | None = None) -> None:
    """Write a model file atomically."""
    p = Path(path)
    adapter = adapter_for(p, fmt, must_exist=False)
    with atomic_path(p) as tmp:
        adapter.write(tmp, loaded)


@contextmanager
def _about(path: Path, kinds: tuple[type[ParamSealError], ...] = (FormatError, KeyMismatchError)) -> Iterator[None]:
    """Prefix errors about a model's content with the file they concern."""
    try:
        yield
    except kinds as e:
        if str(path) in str(e):
            raise
        e.args = (f"'{path}': {e}",)
        raise


@dataclass
class _Found:
    """Where a file's seal header came from, and what was noticed on the way."""

    text: str
    meta: dict[str, str]  # the file's other metadata
    embedded: bool  # the header came from the weights (and stays there when recovered)
    issues: list[str] = field(default_factory=list)  # tampering found besides the weights
    notes: list[str] = field(default_factory=list)


def _checked(loaded: Loaded, path: Path, key: Key, header: str | None, **kw: Any) -> tuple[Check, _Found]:
    """The check of a loaded model file against its seal header (see `_split_header`)."""
    check_inputs()  # check's decode of damaged groups reads through the map: not past a new end
    found = _split_header(loaded, path, key, header)
    _name_npy_array(loaded, path, found.text)
    chk = check(loaded.tensors, key, found.text, metadata=found.meta, metadata_kept=_keeps(loaded, path), **kw)
    check_inputs()  # recover goes on to read damaged blocks' neighbours through the map
    chk.metadata_issues[:0] = found.issues
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


def _split_header(loaded: Loaded, path: Path, key: Key, header: str | None = None) -> _Found:
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
        found.issues.append(
            f"the file holds {len(loaded.others)} entries besides the sealed weights ({shown}); a loader may read "
            "them instead of the sealed ones (recover writes the sealed weights alone)"
        )
    found.issues.extend(loaded.container_issues)  # damage to the container itself (a stale zip CRC), not the values
    found.issues.extend(_graph_issues(loaded, found.text, found.meta, key))
    return found


def _graph_issues(loaded: Loaded, text: str, meta: dict[str, str], key: Key) -> list[str]:
    """The graph sealed (in the header's metadata, or the file's when its digest vouches for it) against the file's."""
    if loaded.graph is None:
        return []
    h = parse_header(text, key)
    sealed = h.user_metadata if h.user_metadata is not None else meta if metadata_digest(meta) == h.digest else {}
    want = sealed.get(GRAPH_KEY)
    if want is None or want == loaded.graph or want == _graph_as_sealed(loaded, h):
        return []
    return [GRAPH_EDITED]


def _graph_as_sealed(loaded: Loaded, h: Header) -> str | None:
    """The file's graph digest with its tensors' dtypes as sealed (None: no ONNX model).

    A tensor saved again as another dtype is that tensor's tampering, which check reports (the header
    holds its dtype) and recover restores, not an edited graph.
    """
    return onnx_format.graph_as_sealed(loaded, {s.name: s.dtype for s in h.tensors})


def _find_header(loaded: Loaded, path: Path, key: Key, header: str | None, kept: bool) -> _Found:
    meta = dict(loaded.metadata)
    text = meta.pop(METADATA_KEY, None)
    if header is not None:
        issues = [] if text is None or _same_header(text, header, key) else [_not_given(loaded, text, header, key)]
        # a header kept from a .pt or .npy is the weights' cut-down form: made whole, as verify makes a copy
        # it reads from the weights, so that an output that keeps metadata does not carry it cut down
        try:
            header = _restored(header, meta, key)
        except (FormatError, KeyMismatchError):  # not authentic: the check says so, as before
            pass
        found = _Found(header, meta, False, issues)
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
        graph = _graph_as_sealed(loaded, h) if loaded.graph is not None else None
        derived = {GRAPH_KEY: graph} if graph is not None else {}
        sealed_digest = h.digest
        if not meta and derived and metadata_digest(derived) == sealed_digest:
            return _Found(copy, derived, True)  # all the metadata sealed was the graph's digest: nothing is lost
        if kept and not meta and sealed_digest == metadata_digest({}):
            # the file had the header alone in its metadata, which was stripped: recover writes it back
            why = f"{HEADER_FROM_WEIGHTS} (the file's metadata, which held it alone, was stripped); "
            why += "recover writes it back"
            return _Found(_restored(copy, {}, key), {}, False, notes=[why])
        if kept and not meta and (known := _writers_metadata(sealed_digest)) is not None:
            # all it held besides the header was a writer's format entry: known from its digest, nothing is lost
            why = (
                f"{HEADER_FROM_WEIGHTS} (the file's metadata, which held it and {known} alone, the entry "
                "safetensors' writers add, was stripped; the sealed metadata is known from its digest); "
                "recover writes them back"
            )
            return _Found(_restored(copy, known, key), known, False, notes=[why])
        if not meta or not kept:  # none stored (a conversion, a re-save: check judges what was lost), or
            return _Found(copy, meta, True)  # none storable: the reader's own entries (.pt ties)
        # Other metadata but no header entry: a tool re-saved the file with metadata of its own or
        # the user's (save_pretrained writes {"format": "pt"}). Check judges that metadata against
        # the sealed digest; the header is whole again in what recover writes.
        why = f"the file's metadata has no ParamSeal header entry (a tool re-saved it?); {_USED}"
        return _Found(_restored(copy, meta, key), meta, False, notes=[why])
    try:
        h = parse_header(text, key)
    except (FormatError, KeyMismatchError) as e:  # edited, or another key's: is the copy in the weights intact?
        try:
            copy = header_from_weights(loaded.tensors, key)
        except ParamSealError as w:
            raise _both_lost(e, w) from None
        edited = f"the ParamSeal header in the metadata {_unusable(e)}; its authenticated copy in the weights was used"
        return _Found(_restored(copy, meta, key), meta, False, [edited])
    if h.user_metadata is None:  # the weights' form, which seal never writes into the metadata: an edit
        cut = "the ParamSeal header in the file's metadata was cut down to the form kept in the weights"
        return _Found(_restored(text, meta, key), meta, False, [cut])
    rivals = other_seals_copies(loaded.tensors, key, h)
    if rivals and (copy := best_header(loaded.tensors, key, [text, *rivals])) != text:
        # another seal's metadata under this key (an older seal's file's, copied over): the weights tell
        replaced = (
            f"the ParamSeal header in the file's metadata is another seal's under this key (salt {h.salt.hex()}), "
            f"not that of the seal the weights carry (salt {parse_header(copy, key).salt.hex()}); {_USED}"
        )
        return _Found(_restored(copy, meta, key), meta, False, [replaced])
    return _Found(text, meta, False)


def _own_header(loaded: Loaded) -> list[str]:
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
                f"{_NOT_GIVEN}: it seals another model (none of its {len(kept.tensors)} tensors is in this file; "
                "verify without --header-from checks the file against its own header)"
            )
        own = parse_header(text, key)
    except (FormatError, KeyMismatchError):
        return _NOT_GIVEN
    intact = _intact_under_another_seal(loaded, key, kept, own, text, "the file's own header")
    return _NOT_GIVEN if intact is None else f"{_NOT_GIVEN}: {intact}"


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
    return [
        f"the header given (--header-from) seals another model: none of its {len(kept.tensors)} tensors is in "
        f"this file; {own}"
    ]


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
    from the weights alone does; another key's, or an unknown scheme, is that error (exit 3).
    """
    if not isinstance(e, HeaderAuthError) or isinstance(w, KeyMismatchError):
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


def _restored(copy: str, meta: dict[str, str], key: Key) -> str:
    """The copy from the weights made whole: with the user metadata its digest vouches for (the file's, or none)."""
    h = parse_header(copy, key)
    if h.user_metadata is not None:
        return copy
    for known in (meta, {}):  # sealed with none: it is known exactly, and the file's can be compared key by key
        if metadata_digest(known) == h.digest:
            return replace(h, user_metadata=known, metadata_digest=None).to_json(key)
    return copy


@dataclass(frozen=True, slots=True)
class SealedFile:
    """A sealed model file: where it is and its header (the sealed values are in the file)."""

    path: Path
    header_json: str
    header: Header


@dataclass(frozen=True, slots=True)
class RecoveredFile:
    """The outcome of ``recover_file``: the report, and the output path if one was written."""

    path: Path | None
    report: Report
    metadata: dict[str, str]


def _is_safetensors(path: Path, *, output: bool = False) -> bool:
    return adapter_for(path, must_exist=not output).name == "safetensors"


@contextmanager
def _open_model(path: Path) -> Iterator[Loaded]:
    """The model in ``path``: safetensors are mapped (pages read on use), other formats loaded."""
    _require_file(path)
    if not _is_safetensors(path):
        yield read_model(path)
        return
    m, tensors, meta = st_format.map_tensors(path)
    try:
        yield Loaded(tensors, meta)
    finally:
        m.close()


@contextmanager
def _header_file(path: PathLike | None, src: Path, model: Path) -> Iterator[Callable[[str], None]]:
    """``header_out``'s file: the callback writes it beside its place, renamed there just after the model.

    A failure before the model's rename leaves neither file; only the header's own rename comes after it.
    """
    if path is None:
        yield lambda text: None
        return
    p = check_header_out(path, src, model)  # never over the input (or the model): the API caller too
    tmp = temp_beside(p)

    def keep(text: str) -> None:
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(text + "\n")  # no key in it
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:
            raise cannot_write(p, e) from e

    placed = False
    try:
        with atomic_path(p, tmp):
            yield keep
            placed = True
    except OutputError as e:
        if not placed:
            raise
        raise OutputError(
            f"{e}; the sealed model was written to {model} without it: seal again (a new seal), or keep a copy "
            "of the sealed model, which --header-from also reads"
        ) from e


def seal_file(
    src: PathLike,
    dst: PathLike,
    key: Key,
    *,
    level: str = "standard",
    bits: int | None = None,
    in_place: bool = False,
    progress: bool | None = None,
    extra_metadata: dict[str, str] | None = None,
    code: str | None = None,
    reseal: bool = False,
    header_out: PathLike | None = None,
) -> SealedFile:
    """Seal the model in ``src`` and write it to ``dst``; the file's metadata is kept.

    safetensors to safetensors streams: memory stays bounded by a few chunks, whatever the model size.
    ``extra_metadata`` is added to the file's metadata and sealed with it. A file that carries a
    seal already is refused unless ``reseal`` (its old seal is then dropped and replaced).
    ``header_out`` (a .json path, see `check_header_out`) also keeps the seal header there: it is
    written before the model is renamed into place, so a failed write leaves neither file.
    A ``.pt`` that verifies only while it keeps its state dict's ``_metadata`` entry (which
    ``torch.save(model.state_dict())`` drops) gets a `ParamSealWarning` saying so.
    """
    s, d = Path(src), Path(dst)
    require_key(key)
    check_metadata(extra_metadata)  # before anything is written: the streamed path writes it as given
    d, fmt = _check_paths(s, d, in_place)
    cfg = SealConfig(level=level, bits=bits, code=code)
    # a dtype seal refuses is read all the same (verify reports a sealed tensor retyped so): name the file
    with _about(s, (UnsupportedError,)), _open_model(s) as loaded, _header_file(header_out, s, d) as keep:
        if fmt == "onnx":
            onnx_format.require_graph(d, loaded)
        if loaded.others:
            _others_left_out(s, d, loaded.others)
        # a header in the metadata, records in the weights (PyTorch files, stripped metadata, lost copies),
        # or header copies where a seal puts them (their records zeroed)
        if not reseal and (METADATA_KEY in loaded.metadata or _embed.carries_seal(loaded.tensors)):
            raise UsageError(
                f"'{s}' is already sealed; verify or recover it, or pass --reseal to replace its seal "
                "(after a change to its weights that you approved)"
            )
        old = {METADATA_KEY, SET_KEY} if METADATA_KEY in loaded.metadata else set()
        meta = {**{k: v for k, v in loaded.metadata.items() if k not in old}, **(extra_metadata or {})}
        if loaded.graph is not None:  # the graph is sealed with the metadata: a re-pointed node is tampering
            meta[GRAPH_KEY] = loaded.graph
        prog = Progress("seal", 2 * len(loaded.tensors) + 1, enabled=progress)
        if fmt != "safetensors":
            sealed = cfg.seal(loaded.tensors, key, metadata=meta, progress=prog)
            prog.done()
            keep(sealed.header_json)  # before the model: an ONNX writer may place it before it returns
            write_model(d, Loaded(sealed.tensors, {**meta, METADATA_KEY: sealed.header_json}, loaded.source), fmt)
            if fmt == "pytorch":
                _warn_pt_entry(Path(dst), sealed.header, header_out is not None)
            return SealedFile(d, sealed.header_json, sealed.header)
        done = with_non_finite(loaded.tensors, lambda plain: _seal_stream(loaded, d, key, cfg, meta, prog, plain, keep))
        prog.done()
        return done


def _others_left_out(src: Path, dst: Path, others: tuple[str, ...]) -> None:
    """A checkpoint's entries besides the weights (optimizer state, epoch) are not sealed and not written.

    A sealed file is the model alone (verify calls other entries tampering): over the input they would be
    lost, so in place is refused; a new output lacks them, which seal says.
    """
    shown = ", ".join(repr(n) for n in others[:8]) + (", ..." if len(others) > 8 else "")
    entries = "1 entry" if len(others) == 1 else f"{len(others)} entries"
    what = f"'{src}' holds {entries} besides the model's weights ({shown}), which a sealed file lacks"
    if dst.exists() and dst.resolve() == src.resolve():
        raise UsageError(
            f"{what}: sealing it in place would lose them; nothing was written. Seal into a new file, which leaves "
            "the checkpoint as it is"
        )
    warnings.warn(f"{what}: '{dst}' holds the sealed weights alone", ParamSealWarning, stacklevel=3)


def _warn_pt_entry(out: Path, h: Header, header_kept: bool, verb: str = "seal") -> None:
    """Warn where a sealed .pt verifies only while it keeps its _metadata entry, which a re-save drops.

    ``torch.save(model.state_dict())`` writes no '.paramseal' entry: the file then has the header only if
    its weights hold a copy, and a sealed ONNX graph digest nowhere (verify calls that tampering).
    ``header_kept``: the header is kept in a file too (seal --header-out, recover --header-from). ``verb``:
    the command that wrote ``out``, whose other output formats the advice names.
    """
    resaved = "which torch.save(model.state_dict()) does not write back (torch.save(torch.load(f)) does)"
    if not h.carriers and not header_kept:
        warnings.warn(
            f"'{out}' keeps its seal header only in its state dict's _metadata entry '{META_ENTRY}' (the "
            f"weights have no room for a copy), {resaved}: a file saved so verifies only with --header-from; keep "
            f"the header with seal --header-out, or {verb} to .safetensors",
            ParamSealWarning,
            stacklevel=3,  # the caller of seal_file
        )
    if GRAPH_KEY in (h.user_metadata or {}):
        warnings.warn(
            f"'{out}' keeps the sealed digest of its ONNX model's graph only in its state dict's _metadata "
            f"entry '{META_ENTRY}', {resaved}: a file saved so fails verify (exit 2); keep the file as written",
            ParamSealWarning,
            stacklevel=3,
        )


def _seal_stream(
    loaded: Loaded,
    d: Path,
    key: Key,
    cfg: SealConfig,
    meta: dict[str, str],
    prog: Progress,
    as_data: frozenset[str],
    keep: Callable[[str], None],
) -> SealedFile:
    """Seal safetensors to safetensors chunk by chunk, in a file written in place (`seal_file`)."""
    specs = cfg.specs(loaded.tensors, as_data)
    salt = os.urandom(16)
    irs = use_irs(specs, cfg.code, cfg.lanes)
    probe, slack = probe_header(specs, cfg.level, cfg.bits, salt, key, meta, irs, st_room=True)
    entries = [(x.name, x.dtype, x.shape) for x in specs]
    # rounded as the writer rounds it, and recorded: recover writes the same padding back
    room = -(-(st_format.header_room(entries, {**meta, METADATA_KEY: probe.to_json(key)}) + slack) // 8) * 8
    ws = Workspace(d.parent)
    try:
        with atomic_path(d) as tmp:
            w = st_format.StreamWriter(tmp, entries, room)
            try:
                flats = [uint_view(loaded.tensors[x.name]) for x in specs]
                outs = [uint_view(w.array(x.name)) for x in specs]
                header = seal_flat(
                    flats, outs, specs, key, salt, cfg.level, cfg.bits, cfg.lanes, meta, ws, prog, cfg.code, room
                )
                text = header.to_json(key)
                keep(text)
                # in the order recover writes them (the header keeps them sorted): it gives this file back
                w.finish({**dict(sorted(meta.items())), METADATA_KEY: text})
            except BaseException:
                w.abort()
                raise
    finally:
        ws.close()
    return SealedFile(d, text, header)


def verify_file(
    path: PathLike,
    key: Key,
    *,
    tensors: str | None = None,
    progress: bool | None = None,
    header: str | None = None,
    expect_seal: str | None = None,
) -> Report:
    """Verify a sealed model file (weights, tensor table and metadata).

    ``tensors`` is a glob pattern (``fnmatch``) over tensor names: only those tensors are
    checked, and the others' data is never read. ``header`` is the seal header JSON kept
    elsewhere (`read_header`), for a file whose own copies were lost or edited.
    ``expect_seal``: the seal id the model must carry (`Report.seal_id` of the approved model,
    which seal prints); another seal of it, such as an older version put back, is then tampering
    that cannot be recovered (`paramseal.report.pinned`).
    """
    p = Path(path)
    expect_seal = seal_id_arg(expect_seal)
    with _open_model(p) as loaded:
        prog = Progress("verify", len(loaded.tensors), enabled=progress)
        with _about(p):
            chk, _ = _checked(loaded, p, key, header, progress=prog, select=tensors)
            rep = pinned_check(report_of(chk), chk, loaded.tensors, expect_seal, _own_header(loaded))
    prog.done()
    return rep


def verify_loaded(
    loaded: Loaded, where: Path, key: Key, *, tensors: str | None = None, expect_seal: str | None = None
) -> Report:
    """Verify a model already read (the shards of one re-sharded model, merged) as `verify_file` does a file."""
    with _about(where):
        chk, _ = _checked(loaded, where, key, None, select=tensors)
        return pinned_check(report_of(chk), chk, loaded.tensors, seal_id_arg(expect_seal), [])


def recover_loaded(
    loaded: Loaded,
    where: Path,
    dst: PathLike,
    key: Key,
    *,
    allow_partial: bool = False,
    expect_seal: str | None = None,
) -> RecoveredFile:
    """Recover a model already read (a re-sharded single-file seal's shards, merged) into the new file ``dst``.

    As `recover_file` without streaming: ``dst`` is written when the result verifies, else only with
    ``allow_partial``; its metadata holds the whole header. ``where`` names the model in messages.
    """
    d = Path(dst)
    _never_a_key(d)
    never_read_only(d)
    fmt = adapter_for(d, must_exist=False).name
    if fmt == "onnx":
        onnx_format.require_graph(d, loaded)
    ws = Workspace(d.parent)  # the rebuilt blocks past the memory budget live in its files until written
    try:
        with _about(where):
            chk, found = _checked(loaded, where, key, None)
            other = not_the_expected_seal(chk, seal_id_arg(expect_seal), loaded.tensors, [])
            if other is not None:
                return RecoveredFile(None, other, {})
            rec = plan_recovery(chk, ws)
        if not (rec.report.ok or allow_partial):
            return RecoveredFile(None, replace(rec.report, written=False), rec.metadata)
        out_meta = dict(rec.metadata)
        out_meta[METADATA_KEY] = _restored(found.text, out_meta, key)
        if rec.report.ok:
            _refuse_unverifiable_metadata(chk, out_meta, d, fmt)
        write_model(d, Loaded(recover_from_plan(chk, rec).tensors, out_meta), fmt)
    finally:
        ws.close()
    return RecoveredFile(d, rec.report, rec.metadata)


def recover_file(
    src: PathLike,
    dst: PathLike,
    key: Key,
    *,
    allow_partial: bool = False,
    in_place: bool = False,
    progress: bool | None = None,
    header: str | None = None,
    expect_seal: str | None = None,
) -> RecoveredFile:
    """Recover a sealed model file into ``dst``.

    ``dst`` is written when the result verifies (or the model was intact). A
    model that cannot be fully recovered is written only with
    ``allow_partial=True``, and keeps its seal header so that verify still
    names every block that remains tampered. safetensors to safetensors streams. ``header``:
    as in `verify_file`; the output then carries it. ``expect_seal``: as in `verify_file`; a
    model carrying another seal is not recovered, and nothing is written.
    """
    expect_seal = seal_id_arg(expect_seal)
    s, d = Path(src), Path(dst)
    d, fmt = _check_paths(s, d, in_place)
    pre: _Precopy | None = None
    ws: Workspace | None = None
    onto_input = in_place and d.exists() and s.resolve() == d.resolve()  # --in-place only permits it
    patch_here = onto_input and s.is_file() and _is_safetensors(s)
    if s.is_file() and _is_safetensors(s) and fmt == "safetensors" and not patch_here:
        pre = _Precopy(s, temp_beside(d))
        pre.start()
    try:
        with _open_model(s) as loaded:
            if fmt == "onnx":
                onnx_format.require_graph(d, loaded)
            prog = Progress("recover", len(loaded.tensors), enabled=progress)
            # Open until the output is written: the rebuilt blocks past the budget live in its files, and
            # closing it unregisters their maps, so writing them out would keep every page resident.
            ws = Workspace(d.parent)
            with _about(s):
                chk, found = _checked(loaded, s, key, header, progress=prog)
                other = not_the_expected_seal(chk, expect_seal, loaded.tensors, _own_header(loaded))
                if other is not None:  # nothing to decode or write
                    prog.done()
                    return RecoveredFile(None, other, {})
                rec = plan_recovery(chk, ws)
            prog.done()
            if not (rec.report.ok or allow_partial):
                return RecoveredFile(None, replace(rec.report, written=False), rec.metadata)
            check_inputs()  # the output is made from the input's blocks: not from a file cut short meanwhile
            if onto_input and not rec.report.ok:
                _refuse_losing_partial(s, loaded, chk, rec.report)
            out_meta = dict(rec.metadata)
            if not found.embedded:
                out_meta[METADATA_KEY] = found.text
            elif (whole := _restored(found.text, out_meta, key)) != found.text:
                # read from the weights (a .npy, a .pt saved again by torch), but the metadata its digest vouches
                # for is known: the output keeps the whole header in its metadata, as the file seal wrote did
                out_meta[METADATA_KEY] = whole
            if rec.report.ok:
                _refuse_unverifiable_metadata(chk, out_meta, d, fmt)
            if patch_here and _patch_in_place(s, chk, rec, out_meta):
                return RecoveredFile(d, rec.report, rec.metadata)
            if pre is not None:
                pre.join()
                if pre.ok and _patch_copy(pre.tmp, s, chk, rec, out_meta, d):
                    with atomic_path(d, pre.tmp):
                        pre = None  # atomic_path owns the file now
                    return RecoveredFile(d, rec.report, rec.metadata)
                pre.cancel()  # free its disk space before the output is written another way
                pre = None
            if fmt == "safetensors":
                _write_recovered(d, chk, rec, out_meta)
            else:
                result = recover_from_plan(chk, rec)
                write_model(d, Loaded(result.tensors, out_meta, loaded.source), fmt)
                if fmt == "pytorch":  # as seal warns of the .pt it writes: the same file, the same weakness
                    _warn_pt_entry(d, chk.header, header is not None, "recover")
        return RecoveredFile(d, rec.report, rec.metadata)
    finally:
        if ws is not None:
            ws.close()
        if pre is not None:
            pre.cancel()


def _refuse_unverifiable_metadata(chk: Check, out_meta: dict[str, str], dst: Path, fmt: str) -> None:
    """An output presented as recovered must verify: refuse one whose metadata verify would call stripped.

    A model sealed with user metadata into a file that keeps none (.npy, a .pt saved again by torch) keeps
    only its digest in the weights' header; written to a format that keeps metadata (.npz, .safetensors),
    the output would lack what was sealed, and verify would call it tampered.
    """
    user = {k: v for k, v in out_meta.items() if k != METADATA_KEY}
    writer = adapter_for(dst, fmt, must_exist=False)
    # a format that writes some entries in its own terms (a .pt's ties) holds metadata only when given more
    held = writer.keeps_metadata and (not writer.carried_metadata or bool(set(out_meta) - writer.carried_metadata))
    issues, _ = metadata_findings(chk.header, user, held)
    if issues:
        raise UsageError(
            f"the model was sealed with user metadata that this file does not hold (only its digest is in the seal "
            f"header): a {fmt} output, which keeps metadata, would lack it and never verify; nothing was written. "
            "Recover to the input's own format, or pass --header-from a kept copy of the sealed model that holds "
            "it (the file seal wrote, or seal --header-out's .json)"
        )


def _refuse_losing_partial(src: Path, loaded: Loaded, chk: Check, report: Report) -> None:
    """A partial result written over IN must not lose what IN holds that the output will not.

    The output has the sealed tensors only: a tensor IN holds at another size (read as missing)
    that stays unrecoverable is written as zeros, and a tensor the seal does not know, or a
    checkpoint's other entries (a .pt's optimizer state), are left out. Over a new file IN keeps
    them; in place they would be gone.
    """
    tensors = loaded.tensors
    lost = [
        s.name
        for s in chk.specs
        if s.name in tensors
        and usable(tensors[s.name], s)[0] is None
        and (f := report.tensors.get(s.name)) is not None
        and f.unrecoverable_blocks
    ]
    lost += chk.extra + list(loaded.others)
    if lost:
        shown = ", ".join(f"'{n}'" for n in lost[:5]) + (f" and {len(lost) - 5} more" if len(lost) > 5 else "")
        raise UsageError(
            f"recover --in-place --allow-partial would lose what '{src}' holds in {shown} (not restored, and "
            "its data is not the sealed tensor's size, or the seal does not know it, or it is not a tensor the output "
            "keeps); nothing was written: "
            "recover into a new file, which leaves the input as it is"
        )


_HEADER_SLACK = 64 << 10  # input header room beyond the output's own that a patched copy may keep


def _sealed_room(chk: Check, meta: dict[str, str]) -> int:
    """The safetensors header length the sealed file had, when its header records it and it fits ``meta``.

    0 when unknown (a seal made in memory, or before the length was recorded) or when the output's
    header could not fit it: then the writers keep their own room.
    """
    room = chk.header.st_room
    if not room or METADATA_KEY not in meta:
        return 0
    entries = [(x.name, x.dtype, x.shape) for x in chk.specs]
    need = st_format.header_room(entries, meta)
    # no more room than a patched copy may keep: a recorded length far beyond the header is no
    # seal's (a key holder's forgery would otherwise size the output, up to petabytes)
    return room if need <= room <= need + _HEADER_SLACK and room % 8 == 0 else 0


def _patch_copy(tmp: Path, src: Path, chk: Check, rec: Recovery, meta: dict[str, str], dst: Path) -> bool:
    """Turn ``tmp``, a copy of the input, into the recovered file ``dst``: new header, rebuilt blocks.

    Possible when the recovered tensors have the input's names, dtypes, shapes and order and the
    new header fits the input's header room; returns False (``tmp`` untouched) otherwise. Written
    with ``pwrite``: where the copy shares the input's blocks (a reflink on XFS or btrfs) a write
    needs new space, and a full disk is then an error (exit 3), not a SIGBUS through a mapping.
    """
    if chk.moved:  # swapped or renamed data: the copy holds it in the wrong places
        return False
    lay = st_format.read_layout(src)
    entries = [(x.name, x.dtype, x.shape) for x in chk.specs]
    if [(e.name, e.dtype, e.shape) for e in lay.entries] != entries:
        return False
    head = st_format.header_json(lay.entries, meta)
    room = lay.data_start - 8
    # The new header must fit the input's room, and that room must not be bloated (say by junk
    # metadata an attacker added): the output would keep it as padding. Where the seal recorded its
    # room, only that one: the output is then the sealed file byte for byte.
    if not len(head) <= room <= st_format.header_room(entries, meta) + _HEADER_SLACK:
        return False
    if _sealed_room(chk, meta) not in (0, room):
        return False
    try:
        fd = os.open(tmp, os.O_RDWR)
        try:
            for t, patch in rec.patches.items():
                _pwrite_patch(fd, lay.data_start + lay.entries[t].start, chk.specs[t], patch)
            pwrite_all(fd, struct.pack("<Q", room) + head.ljust(room, b" "), 0)
        finally:
            os.close(fd)
    except OSError as e:
        raise cannot_write(dst, e) from e
    return True


def _patch_in_place(path: Path, chk: Check, rec: Recovery, meta: dict[str, str]) -> bool:
    """``--in-place``: write only the rebuilt blocks into the file itself, then flush it to disk.

    Only for a plain writable file (not a link: a link's other names would change too) whose
    header can stay byte for byte: the same tensors and metadata, in the compact JSON this
    library writes (no duplicate keys, no junk), tensors back to back, and no more header room
    than a fresh output would keep. Anything else takes the atomic path (False, nothing
    written): a header rewritten in place could be torn by a crash. Each rebuilt block restores
    sealed content, so an interrupted patch leaves a sealed model with fewer tampered blocks,
    which verify names and recover finishes. Blocks go out with ``pwrite``, so a full disk is
    an error, not a SIGBUS.
    """
    if chk.moved or path.is_symlink() or os.stat(path).st_nlink != 1 or not os.access(path, os.W_OK):
        return False
    lay = st_format.read_layout(path)
    entries = [(x.name, x.dtype, x.shape) for x in chk.specs]
    if [(e.name, e.dtype, e.shape) for e in lay.entries] != entries:
        return False
    spans = sorted((e.start, e.end) for e in lay.entries)
    size = os.path.getsize(path) - lay.data_start
    if any(a != b for (_, b), (a, _) in zip([(0, 0), *spans], [*spans, (size, size)], strict=True)):
        return False  # a gap between tensors (or after them) would be kept
    with open(path, "rb") as f:
        raw = f.read(lay.data_start)[8:]
    room = lay.data_start - 8
    if room > st_format.header_room(entries, meta) + _HEADER_SLACK or _sealed_room(chk, meta) not in (0, room):
        return False
    body = raw.rstrip(b" ")
    try:  # the same JSON object in the same compact form (key order aside: the input's is kept)
        cur = json.loads(body)
        if json.dumps(cur, separators=(",", ":")).encode() != body:
            return False
        if cur != json.loads(st_format.header_json(lay.entries, meta)):
            return False
    except (ValueError, UnicodeDecodeError):
        return False
    if not rec.patches:
        return True
    try:
        fd = os.open(path, os.O_RDWR)
        try:
            for t, patch in rec.patches.items():
                _pwrite_patch(fd, lay.data_start + lay.entries[t].start, chk.specs[t], patch)
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as e:  # the blocks written so far restore sealed content: verify and recover go on from there
        raise cannot_write(path, e) from e
    return True


_WINDOW = 1 << 16  # blocks per window (16 MiB of fp32)
_GAP = 64 << 10  # bytes between two runs of a window past which they go out apart


def _pwrite_patch(fd: int, at: int, spec: TensorSpec, patch: Patch) -> None:
    """Write a patch's rebuilt blocks at byte ``at`` (the tensor's start) of a file open for reading and writing.

    The runs of blocks of a window that lie less than `_GAP` apart go out as one call, the
    blocks between read back from the file itself (with pread: through a mapping its pages
    would count against the process). One call per run was a Python loop per block under
    scattered damage: 74,000 calls at 1% of a 256 MiB model (its recover 11.3 s, against 9.6 s
    with them joined). Runs far apart
    still go out apart: a few spread over a large tensor would otherwise rewrite all of it.
    """
    item = patch.new.dtype.itemsize
    rows = patch.rows
    near = np.diff(rows) <= max(1, _GAP // (BLOCK * item)) + 1
    cuts = np.flatnonzero(~near | (np.diff(rows // _WINDOW) != 0)) + 1
    for a, b in zip(np.r_[0, cuts].tolist(), np.r_[cuts, rows.size].tolist(), strict=True):
        r0, r1 = int(rows[a]), int(rows[b - 1]) + 1
        n0, n1 = r0 * BLOCK, min(r1 * BLOCK, spec.numel)
        if n1 <= n0:
            continue
        new = patch.new[a:b]
        if r1 - r0 != b - a:  # runs with blocks between them: read those, then write the span
            span = np.zeros((r1 - r0, new.shape[1]), new.dtype)
            _pread_into(fd, span.reshape(-1)[: n1 - n0].view(np.uint8).data, at + n0 * item)
            span[rows[a:b] - r0] = new
            new = span
        pwrite_all(fd, np.ascontiguousarray(new).reshape(-1)[: n1 - n0].view(np.uint8).data, at + n0 * item)
        release(patch.new[a:b])  # rebuilt blocks in a scratch file: let the pages written go


def _pread_into(fd: int, buf: memoryview, at: int) -> None:
    done = 0
    while done < len(buf):  # pread may read less than asked
        n = os.preadv(fd, [buf[done:]], at + done)
        if n == 0:
            raise OSError(errno.EIO, "the file ended before the blocks to patch")
        done += n


def _write_recovered(dst: Path, chk: Check, rec: Recovery, meta: dict[str, str]) -> None:
    """Write the recovered model (the sealed tensors, patched) into a safetensors file.

    A tensor still mapped from the input is copied in the kernel and then only its rebuilt
    blocks are written: recovering a lightly tampered model costs little more than verifying it.
    """
    entries = [(x.name, x.dtype, x.shape) for x in chk.specs]
    with atomic_path(dst) as tmp:
        w = st_format.StreamWriter(tmp, entries, _sealed_room(chk, meta) or st_format.header_room(entries, meta))
        try:
            for t, (spec, ub) in enumerate(zip(chk.specs, chk.blocks, strict=True)):
                out = uint_view(w.array(spec.name))
                patch = rec.patches.get(t)
                if w.copy_in(spec.name, ub.reshape(-1)[: spec.numel]):
                    if patch is not None:
                        _write_patch(out, spec, patch)
                    continue
                for r0, r1 in chunks(spec.nblocks, ub.dtype.itemsize, 0, 1):
                    part = read(ub[r0:r1])  # an input's blocks with pread: a file cut short is an error, not SIGBUS
                    part = part.copy() if np.may_share_memory(part, ub) else part
                    if patch is not None:  # its rows are sorted
                        i0, i1 = np.searchsorted(patch.rows, [r0, r1])
                        part[patch.rows[i0:i1] - r0] = patch.new[i0:i1]
                        release(patch.new[i0:i1])
                    write_blocks(out, spec, r0, part)
            w.finish(meta)
        except BaseException:
            w.abort()
            raise


def _write_patch(out: NDArray[np.unsignedinteger], spec: TensorSpec, patch: Patch) -> None:
    """Write a patch's rebuilt blocks into a tensor's flat values (the last block's padding dropped).

    A chunk of blocks at a time, so the index temporaries stay small.
    """
    for r0, r1 in chunks(patch.rows.size, patch.new.dtype.itemsize, 0, 1):
        idx = (patch.rows[r0:r1, None] * BLOCK + np.arange(BLOCK)).reshape(-1)
        keep = idx < spec.numel
        out[idx[keep]] = patch.new[r0:r1].reshape(-1)[keep]
        written = idx[keep]
        release(out[int(written.min()) : int(written.max()) + 1], patch.new[r0:r1])


def read_header(path: PathLike, key: Key | None = None) -> str:
    """The seal header kept in ``path``: a sealed model's (metadata, else a copy in its weights), or a ``.json`` file.

    With ``key``, the first candidate that authenticates (verify and recover authenticate it again).
    """
    p = Path(path)
    if p.is_dir():  # _require_file would call it the input and point at paramseal.sharded
        raise UsageError(
            f"'{p}' is a folder; a seal header (--header-from, header=) is read from a sealed model file or a .json "
            "header file, and each shard of a sharded checkpoint carries its own: give one shard's file"
        )
    # _require_file would call it the input (the model) and a key file "not a model"
    if not p.is_file():
        raise UsageError(f"header file '{p}' (--header-from, header=) does not exist or is not a file")
    if looks_like_key_file(p):
        raise UsageError(
            f"'{p}' looks like a ParamSeal key file, not a seal header: --header-from (header=) takes a copy of the "
            "sealed model or the .json file seal --header-out wrote; the key goes in --key"
        )
    _require_file(p, model=False)  # a .json read as a header: an index there is no header, as any other
    found: str | None = None
    why = ""
    try:
        if p.suffix.lower() == ".json":
            texts = [p.read_text(encoding="utf-8").strip()]  # the output carries it: a saved newline dropped
            try:  # config.json given by mistake: "malformed header, the model cannot be trusted" blamed the model
                body = json.loads(texts[0])
            except ValueError:
                body = None
            if not (isinstance(body, dict) and "scheme" in body):
                raise UsageError(
                    f"'{p}' is no ParamSeal header (no JSON object with a 'scheme' field): give the .json file "
                    "seal --header-out wrote, or a copy of the sealed model file"
                )
            if key is not None:
                found, why = _first_authentic(texts, key)
        else:
            try:
                adapter_for(p)
            except FormatError as e:  # "cannot tell the format" alone does not say what a header source is
                raise UsageError(
                    f"{e}; a seal header is read from a sealed model file or a .json header file"
                ) from None
            with _open_model(p) as loaded:
                texts = [loaded.metadata[METADATA_KEY]] if METADATA_KEY in loaded.metadata else []
                texts += [t for _, t in _embed.header_copies(loaded.tensors)]
                if key is not None:
                    found, why = _first_authentic(texts, key)
                if key is not None and found is None:
                    try:  # as verify reads its own: damaged copies mixed, copies whose record is gone
                        found = header_from_weights(loaded.tensors, key)
                    except (FormatError, KeyMismatchError, NotSealedError) as e:
                        why = str(e)
    except UnicodeDecodeError:
        raise UsageError(f"'{p}' is not a ParamSeal header: a .json header file must be UTF-8 text") from None
    except OSError as e:
        raise InputError(f"cannot read '{p}': {e.strerror or e}") from e
    if found is not None:
        return found
    if not texts:
        raise UsageError(f"'{p}' holds no ParamSeal header: give the sealed model file, or its header as a .json file")
    if key is None:
        return texts[0]
    raise UsageError(f"'{p}' holds no ParamSeal header that authenticates with this key ({why})")


def _first_authentic(texts: list[str], key: Key) -> tuple[str | None, str]:
    """The first of ``texts`` that authenticates with ``key``, else None and why the last one did not."""
    why = ""
    for t in texts:
        try:
            parse_header(t, key)
            return t, ""
        except (FormatError, KeyMismatchError) as e:
            why = str(e)
    return None, why


def check_header_out(path: PathLike, *others: PathLike) -> Path:
    """Where ``seal --header-out`` writes, checked before anything is sealed: a .json file in an existing folder."""
    p = Path(path)
    if p.suffix.lower() != ".json":
        raise UsageError(f"--header-out '{p}' must end in .json (--header-from reads a header from a .json file)")
    if any(p.resolve() == Path(o).resolve() for o in others):
        raise UsageError(f"--header-out '{p}' is the model's input or output; give another file")
    never_read_only(p)
    if not p.parent.resolve().is_dir():
        raise UsageError(f"cannot write '{p}': folder '{p.parent}' does not exist")
    temp_beside(p).unlink()  # a folder we may not write in: say so now, not after the model is sealed
    return p


def write_text(path: PathLike, text: str) -> None:
    """Write a text file atomically (a seal header kept for ``--header-from``, a results page)."""
    p = Path(path)
    with atomic_path(p) as tmp:
        try:
            tmp.write_text(text, encoding="utf-8")
        except OSError as e:
            raise cannot_write(p, e) from e


def inspect_file(path: PathLike) -> dict[str, Any]:
    """Describe a model file without a key: its seal settings, or what each level would give."""
    p = Path(path)
    with _open_model(p) as loaded:
        return describe(p, loaded)


__all__ = [
    "RecoveredFile",
    "SealedFile",
    "atomic_path",
    "never_read_only",
    "never_read_only_data",
    "inspect_file",
    "read_model",
    "recover_file",
    "recover_loaded",
    "seal_file",
    "verify_file",
    "verify_loaded",
    "write_model",
]

"""Paths in and out of a model file operation: atomic outputs, and what may not be read or replaced.

Outputs are written to a temporary file in a private folder beside the destination, flushed and renamed
into place (`atomic_path`), so a failure leaves nothing half-written; a key file, a read-only file or the
input itself (unless in place) is never replaced.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ._file_attrs import give, kept_of, warn_links
from ._shard_index import INDEX_SUFFIX, index_files, set_files
from ._tempname import discard, private_temp, renamed_to, sync_folder
from .errors import FormatError, InputError, ParamSealError, UsageError, cannot_write, io_failure
from .formats import adapter_for, onnx_format
from .formats.registry import adapters
from .keys import looks_like_key_file

PathLike = str | os.PathLike[str]


@contextmanager
def atomic_path(dst: Path, tmp: Path | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``dst`` (``tmp``, from :func:`temp_beside`, if given).

    It is renamed over ``dst`` only if the block succeeds; it and its private folder are deleted in any case.
    """
    tmp_path = tmp or temp_beside(dst)
    try:
        kept = kept_of(dst)  # before the block: an ONNX model's writer replaces ``dst`` itself first
        try:
            with renamed_to(tmp_path, dst):  # a writer that names files after the output asks for it
                yield tmp_path
            if (now := kept_of(dst)) is not None and (kept is None or now.inode == kept.inode):
                kept = now  # the file replaced as it is now: made private (chmod 600) while the output was written
            # mkstemp (and the safetensors writer) leave 0600 while it is written; a new file gets a new
            # file's mode (a sealed model is meant to be shared), a file replaced keeps its mode, owner, group
            # and extended attributes (an in-place recover of a private model stays private, its ACL kept)
            give(tmp_path, kept, dst)
            with open(tmp_path, "rb") as f:
                os.fsync(f.fileno())
            warn_links(dst, kept)  # before the rename: where warnings are errors, nothing is replaced
            os.replace(tmp_path, dst)
            sync_folder(dst.parent)
        except OSError as e:
            if isinstance(e, ParamSealError):
                raise
            raise io_failure(dst, e, tmp_path.parent) from e
    finally:
        discard(tmp_path)


def resolved(p: Path) -> Path | None:
    """``p`` with its links followed, or None in a loop of links (RuntimeError before Python 3.13, then OSError)."""
    try:
        return p.resolve()
    except (OSError, RuntimeError):
        return None


# a key file and a SHA-256 checksum file hold the same text (64 hex digits and a newline), under any name
_KEY_OR_CHECKSUM = (
    "holds a ParamSeal key, or 64 hex digits just like one (a SHA-256 checksum file, which cannot be told from a key)"
)


def never_a_key(dst: Path) -> None:
    """Refuse to replace a key file: the models sealed with it could never be checked again.

    A SHA-256 checksum file holds the same text as `write_key` (64 hex digits and a newline), under any name,
    as a key may: refused too, as a key lost is worse, and the message says how to go on.
    """
    if looks_like_key_file(dst):
        raise UsageError(
            f"cannot write '{dst}': it {_KEY_OR_CHECKSUM}, which would be lost; give another output path, or "
            f"remove '{dst}' first if it holds no key"
        )


def never_the_header_from(dst: Path, header_from: PathLike | None, src: Path, in_place: bool) -> None:
    """Refuse to replace the --header-from file (the kept copy of the sealed model) with recover's output."""
    if header_from is None or not dst.exists() or dst.resolve() != resolved(Path(header_from)):
        return
    if in_place and dst.resolve() == src.resolve():  # the input itself, which --in-place asks to change
        return
    raise UsageError(
        f"output '{dst}' is the --header-from file: recover would replace that kept copy of the sealed model with "
        "its output; give another output path"
    )


def never_inside(dst: Path, src: Path, *, folder: bool) -> None:
    """Refuse an output ``dst`` inside the input folder ``src`` (links followed: ``recover ckpt ckpt/fixed`` too).

    It would sit among the files it is made from, and change the input. ``folder``: a sharded set's output
    folder (`sharded.recover_dir`, `seal_dir`), else a re-sharded single-file seal's one file (`_resharded`).
    """
    parent = resolved(dst.parent if str(dst.parent) else Path("."))
    if parent is None or not parent.is_relative_to(src.resolve()):  # none: the caller says the folder is not there
        return
    if folder:
        what = "output folder"
        why = "the new checkpoint would sit among the files it is made from (copied along by the next seal or "
        why += f"recover of '{src}'); give a folder outside it"
    else:
        what = "output"
        why = "the model would sit among the shards it is made from (and change the input folder); give a path "
        why += "outside it"
    raise UsageError(f"{what} '{dst}' is inside '{src}', the input: {why}; nothing was written")


def never_a_key_inside(src: Path, dst: Path) -> None:
    """Refuse to copy a checkpoint folder that holds a key file: ``dst`` (a model to ship) would carry the key.

    Links to files are followed, as the copy follows them; a link to a folder is copied as a link, not walked.
    A checksum file (``model.sha256``: 64 hex digits) reads as a key (`never_a_key`): it is refused too.
    """
    for root, _, names in os.walk(src):
        for name in names:
            if looks_like_key_file(Path(root) / name):
                raise UsageError(
                    f"'{Path(root) / name}' {_KEY_OR_CHECKSUM}: the files beside the shards are copied into "
                    f"'{dst}', and a key would go with the model; move it out of '{src}' (nothing was written), and "
                    "for a checksum, make one of the output anew if you need it"
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
    """A new empty temporary file for ``dst``, in a new folder only we may enter, in ``dst``'s folder.

    The same file system, so the final rename is atomic; `_tempname.discard` removes both. The writers open
    it by name: beside ``dst``, a link put there by whoever else may write that folder would have them write
    the file it names (as root, any file); no one else may enter a 0700 folder.
    """
    if dst.is_dir():
        raise UsageError(f"cannot write to '{dst}' because it is a directory; give a file path")
    if dst.exists() and not dst.is_file():  # a FIFO or a device: not a file to replace, and reading it may block
        raise UsageError(f"cannot write to '{dst}' because it is not a regular file; give a file path")
    never_a_key(dst)
    parent = dst.parent if str(dst.parent) else Path(".")
    if not parent.is_dir():
        raise UsageError(f"cannot write '{dst}': folder '{parent}' does not exist")
    try:
        return private_temp(dst.name, parent)
    except OSError as e:
        raise cannot_write(dst, e) from e


def check_paths(src: Path, dst: Path, in_place: bool) -> tuple[Path, str]:
    """``dst`` as written, and its format: the one ``dst``'s name gives, or in place the input's own.

    (A hub cache's blob has no extension; a safetensors file may be named .bin.)
    An in-place output reached through a symlink is the file it names: a link replaced by the new
    file would leave that file as it was. Not for ONNX in another folder: a reader finds the external
    data beside the link, and the side files would be written beside the file it names.
    """
    require_file(src)  # what is wrong with the input is said before what the output's name lacks
    never_a_key(dst)  # now, not after the seal has been computed
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


def require_file(p: Path, *, model: bool = True) -> None:
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
    if not p.exists():  # one wording for every verb: seal, verify, recover, inspect
        raise UsageError(f"input '{p}' does not exist")
    if not p.is_file():  # a FIFO or a device put there
        raise UsageError(f"input '{p}' is not a regular file; give a model file")
    try:
        os.close(os.open(p, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)))  # a FIFO put there: no wait (Windows: none)
    except OSError as e:
        raise InputError(f"cannot read '{p}': {e.strerror or e}") from None


def check_header_out(path: PathLike, *others: PathLike) -> Path:
    """Where ``seal --header-out`` writes, checked before anything is sealed: a .json file in an existing folder."""
    p = Path(path)
    if p.suffix.lower() != ".json":
        raise UsageError(f"--header-out '{p}' must end in .json (--header-from reads a header from a .json file)")
    if (at := resolved(p)) is not None and any(at == resolved(Path(o)) for o in others):
        raise UsageError(f"--header-out '{p}' is the model's input or output; give another file")
    never_read_only(p)
    if (parent := resolved(p.parent)) is None or not parent.is_dir():
        raise UsageError(f"cannot write '{p}': folder '{p.parent}' does not exist")
    discard(temp_beside(p))  # a folder we may not write in: say so now, not after the model is sealed
    return p


def write_text(path: PathLike, text: str) -> None:
    """Write a text file atomically (a seal header kept for ``--header-from``, a results page)."""
    p = Path(path)
    with atomic_path(p) as tmp:
        try:
            tmp.write_text(text, encoding="utf-8")
        except OSError as e:
            raise cannot_write(p, e) from e

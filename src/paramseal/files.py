"""Seal, verify and recover model files.

Outputs are written to a temporary file beside the destination, flushed and
renamed into place (`_paths.atomic_path`), so a failure leaves nothing half-written.
The input is never modified unless the caller passes the same path with ``in_place=True``.
Which header a file is checked against is `_file_header`'s; recovering a file is
`_recover_file`'s, and reading and writing one `_model_io`'s.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import _embed, _embed_find, _json, _native
from ._bits import uint_view
from ._file_header import check_loaded, first_authentic, own_header, prefixed_errors
from ._inspect import describe
from ._model_io import PathLike, open_model, read_model, warn_pt_entry, write_model
from ._pages import Workspace
from ._paths import (
    atomic_path,
    check_header_out,
    check_paths,
    never_read_only,
    never_read_only_data,
    require_file,
    temp_beside,
)
from ._progress import Progress
from ._recover_file import RecoveredFile, recover_file
from ._sealing import probe_header, seal_flat, use_irs
from ._weights_header import header_from_weights
from .errors import (
    FormatError,
    InputError,
    KeyMismatchError,
    NotSealedError,
    OutputError,
    ParamSealWarning,
    UnsupportedError,
    UsageError,
    cannot_write,
)
from .formats import GRAPH_KEY, Loaded, adapter_for, onnx_format
from .formats import safetensors as st_format
from .header import METADATA_KEY, SET_KEY, Header
from .keys import Key, looks_like_key_file, require_key
from .report import Report, seal_id_arg
from .seal import EMPTY_MODEL, SealConfig, check_metadata, refuse_unencodable, with_non_finite
from .verify import pinned_check, report_of


@dataclass(frozen=True, slots=True)
class SealedFile:
    """A sealed model file: where it is and its header (the sealed values are in the file)."""

    path: Path
    header_json: str
    header: Header


@contextmanager
def _header_file(path: PathLike | None, src: Path, model: Path) -> Iterator[Callable[[str], None]]:
    """``header_out``'s file: the callback writes it beside its place, renamed there just after the model.

    A failure before the model's rename leaves neither file; only the header's own rename comes after it.
    An interrupt (Ctrl-C, SIGTERM) once the model is in place still puts its header in place, then goes on:
    the header file an older seal left there would otherwise sit beside the new model.
    """
    if path is None:
        yield lambda text: None
        return
    p = check_header_out(path, src, model)  # never over the input (or the model): the API caller too
    tmp = temp_beside(p)
    kept = False
    was = _file_id(model)

    def keep(text: str) -> None:
        nonlocal kept
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(text + "\n")  # no key in it
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:
            raise cannot_write(p, e) from e
        kept = True

    placed = False
    late: KeyboardInterrupt | None = None
    try:
        with atomic_path(p, tmp):
            try:
                yield keep
            except KeyboardInterrupt as e:
                if not kept or _file_id(model) in (was, None):  # the model is not (yet) the new one
                    raise
                late = e
            placed = True
    except OutputError as e:
        if not placed:
            raise
        raise OutputError(
            f"{e}; the sealed model was written to {model} without it: seal again (a new seal), or keep a copy "
            "of the sealed model, which --header-from also reads"
        ) from e
    if late is not None:
        raise late


def _file_id(path: Path) -> tuple[int, int] | None:
    """The file at ``path`` (not one a link there names): the rename of a new one into place changes it."""
    try:
        st = os.stat(path, follow_symlinks=False)
    except OSError:
        return None
    return st.st_dev, st.st_ino


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
    d, fmt = check_paths(s, d, in_place)
    cfg = SealConfig(level=level, bits=bits, code=code)
    # a dtype seal refuses is read all the same (verify reports a sealed tensor retyped so): name the file
    with (
        prefixed_errors(s, (UnsupportedError,)),
        open_model(s) as loaded,
        _refusing_sealed(s, loaded, reseal) as refuse_sealed,
        _header_file(header_out, s, d) as keep,
    ):
        if fmt == "onnx":
            onnx_format.require_graph(d, loaded)
        if loaded.others:
            _others_left_out(s, d, loaded.others)
        if fmt != "safetensors":
            refuse_sealed()
        if not loaded.tensors:  # SealConfig refuses it too, not knowing the file: name it as the other refusals do
            raise UsageError(f"'{s}': {EMPTY_MODEL}")
        old = {METADATA_KEY, SET_KEY} if METADATA_KEY in loaded.metadata else set()
        meta = {**{k: v for k, v in loaded.metadata.items() if k not in old}, **(extra_metadata or {})}
        refuse_unencodable([t for kv in meta.items() for t in kv], "metadata text")
        if loaded.graph is not None:  # the graph is sealed with the metadata: a re-pointed node is tampering
            onnx_format.refuse_contradicted(s, loaded)  # declared shapes are not: verify checks them against it
            meta[GRAPH_KEY] = loaded.graph
        prog = Progress("seal", 2 * len(loaded.tensors) + 1, enabled=progress)
        if fmt != "safetensors":
            sealed = cfg.seal(loaded.tensors, key, metadata=meta, progress=prog)
            prog.done()
            keep(sealed.header_json)  # before the model: an ONNX writer may place it before it returns
            write_model(d, Loaded(sealed.tensors, {**meta, METADATA_KEY: sealed.header_json}, loaded.source), fmt)
            if fmt == "pytorch":
                warn_pt_entry(Path(dst), sealed.header, header_out is not None)
            return SealedFile(d, sealed.header_json, sealed.header)
        done = with_non_finite(
            loaded.tensors, lambda plain: _seal_stream(loaded, d, key, cfg, meta, prog, plain, keep, refuse_sealed)
        )
        prog.done()
        return done


@contextmanager
def _refusing_sealed(src: Path, loaded: Loaded, reseal: bool) -> Iterator[Callable[[], None]]:
    """Yield a check that raises UsageError where the model carries a seal already (unless ``reseal``).

    A seal leaves a header in the metadata, records in the weights (PyTorch files, stripped metadata,
    lost copies), or header copies where a seal puts them (their records zeroed). The search of the
    weights (`benchmarks/bench_sealed_check.py` times it) runs in a thread beside the caller's work: the
    check waits for it. Its refusal comes before any other error the block raises meanwhile, and the
    block is not left until the search, which reads the input's mapping, has ended. With numba's
    kernels instead of the compiled ones the search runs first: two threads must not enter its
    parallel kernels.
    """

    def refusal() -> UsageError:
        return UsageError(
            f"'{src}' is already sealed; verify or recover it, or pass --reseal to replace its seal "
            "(after a change to its weights that you approved)"
        )

    if reseal:
        yield lambda: None
        return
    if METADATA_KEY in loaded.metadata:
        raise refusal()
    if _native._lib() is None:
        if _embed_find.carries_seal(loaded.tensors):
            raise refusal()
        yield lambda: None
        return
    with ThreadPoolExecutor(1, thread_name_prefix="paramseal-sealed-check") as pool:
        found = pool.submit(_embed_find.carries_seal, loaded.tensors)
        asked = False

        def check() -> None:
            nonlocal asked
            asked = True
            if found.result():
                raise refusal()

        try:
            yield check
        except Exception:  # (on Ctrl-C too the pool's exit waits for the search)
            if not found.exception() and found.result():
                raise refusal() from None
            raise
        assert asked, "the caller never asked whether the model was sealed"


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


def _seal_stream(
    loaded: Loaded,
    d: Path,
    key: Key,
    cfg: SealConfig,
    meta: dict[str, str],
    prog: Progress,
    as_data: frozenset[str],
    keep: Callable[[str], None],
    refuse_sealed: Callable[[], None],
) -> SealedFile:
    """Seal safetensors to safetensors chunk by chunk, in a file written in place (`seal_file`).

    ``refuse_sealed`` is called before anything is kept: the input may carry a seal already.
    """
    specs = cfg.specs(loaded.tensors, as_data)
    salt = os.urandom(16)
    irs = use_irs(specs, cfg.code, cfg.lanes)
    probe, slack = probe_header(specs, cfg.level, cfg.bits, salt, key, meta, irs, st_room=True)
    entries = [(x.name, x.dtype, x.shape) for x in specs]
    # rounded as the writer rounds it, and recorded: recover writes the same padding back
    room = -(-(st_format.header_room(entries, {**meta, METADATA_KEY: probe.to_json(key)}) + slack) // 8) * 8
    if room > st_format.max_header():  # a file no reader opens ('header too large'), sealed with exit 0
        size = len(json.dumps(meta))
        raise UnsupportedError(
            f"cannot seal this model into safetensors: the file's header would be {room} bytes, over the "
            f"{st_format.max_header()} the safetensors library reads; its metadata ({size} bytes) is kept twice, as "
            "metadata and in the seal header. Seal it with less metadata; nothing was written"
        )
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
                refuse_sealed()
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
    with open_model(p) as loaded:
        prog = Progress("verify", len(loaded.tensors), enabled=progress)
        with prefixed_errors(p):
            chk, _ = check_loaded(loaded, p, key, header, progress=prog, select=tensors)
            rep = pinned_check(report_of(chk), chk, loaded.tensors, expect_seal, own_header(loaded))
    prog.done()
    return rep


def read_header(path: PathLike, key: Key | None = None) -> str:
    """The seal header kept in ``path``: a sealed model's (metadata, else a copy in its weights), or a ``.json`` file.

    With ``key``, the first candidate that authenticates (verify and recover authenticate it again).
    """
    p = Path(path)
    if p.is_dir():  # require_file would call it the input and point at paramseal.sharded
        raise UsageError(
            f"'{p}' is a folder; a seal header (--header-from, header=) is read from a sealed model file or a .json "
            "header file, and each shard of a sharded checkpoint carries its own: give one shard's file"
        )
    # require_file would call it the input (the model) and a key file "not a model"
    if not p.exists():  # the wording of a missing input (require_readable_file)
        raise UsageError(f"header file '{p}' (--header-from, header=) does not exist")
    if not p.is_file():
        raise UsageError(f"header file '{p}' (--header-from, header=) is not a regular file")
    if looks_like_key_file(p):
        raise UsageError(
            f"'{p}' looks like a ParamSeal key file, not a seal header: --header-from (header=) takes a copy of the "
            "sealed model or the .json file seal --header-out wrote; the key goes in --key"
        )
    require_file(p, model=False)  # a .json read as a header: an index there is no header, as any other
    found: str | None = None
    why = ""
    try:
        if p.suffix.lower() == ".json":
            texts = [p.read_text(encoding="utf-8").strip()]  # the output carries it: a saved newline dropped
            try:  # config.json given by mistake: "malformed header, the model cannot be trusted" blamed the model
                body = _json.loads(texts[0])
            except ValueError:
                body = None
            if not (isinstance(body, dict) and "scheme" in body):
                raise UsageError(
                    f"'{p}' is no ParamSeal header (no JSON object with a 'scheme' field): give the .json file "
                    "seal --header-out wrote, or a copy of the sealed model file"
                )
            if key is not None:
                found, why = first_authentic(texts, key)
        else:
            try:
                adapter_for(p)
            except FormatError as e:  # "cannot tell the format" alone does not say what a header source is
                raise UsageError(
                    f"{e}; a seal header is read from a sealed model file or a .json header file"
                ) from None
            with open_model(p) as loaded:
                texts = [loaded.metadata[METADATA_KEY]] if METADATA_KEY in loaded.metadata else []
                texts += [t for _, t in _embed.header_copies(loaded.tensors)]
                if key is not None:
                    found, why = first_authentic(texts, key)
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


def inspect_file(path: PathLike) -> dict[str, Any]:
    """Describe a model file without a key: its seal settings, or what each level would give."""
    p = Path(path)
    with open_model(p) as loaded:
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
    "seal_file",
    "verify_file",
    "write_model",
]

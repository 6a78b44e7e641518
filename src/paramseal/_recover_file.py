"""Recovering one sealed model file (`files.recover_file`) and a model already read (`recover_loaded`).

Separate from `files` (sealing, verifying, reading headers) because `_resharded` recovers a re-sharded
single-file seal through `recover_loaded` too. Writing a recovered safetensors model block by block is `_patch`'s.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from ._file_header import FoundHeader, check_loaded, made_whole, own_header, prefixed_errors, shape_issues
from ._model_io import PathLike, is_safetensors, open_model, warn_pt_entry, write_model
from ._pages import Workspace, check_inputs
from ._patch import (
    Precopy,
    patch_copy,
    patch_in_place,
    refuse_losing_partial,
    refuse_unverifiable_metadata,
    write_recovered,
)
from ._paths import atomic_path, check_paths, temp_beside
from ._progress import Progress
from .formats import Loaded, onnx_format
from .header import METADATA_KEY, parse_header
from .keys import Key
from .recover import not_the_expected_seal, plan_recovery, recover_from_plan
from .report import Report, seal_id_arg
from .verify import Check


@dataclass(frozen=True, slots=True)
class RecoveredFile:
    """The outcome of ``recover_file``: the report, and the output path if one was written."""

    path: Path | None
    report: Report
    metadata: dict[str, str]


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
    as in `files.verify_file`; the output then carries it. ``expect_seal``: as in `files.verify_file`; a
    model carrying another seal is not recovered, and nothing is written.
    """
    expect_seal = seal_id_arg(expect_seal)
    s, d = Path(src), Path(dst)
    d, fmt = check_paths(s, d, in_place)
    pre: Precopy | None = None
    onto_input = in_place and d.exists() and s.resolve() == d.resolve()  # --in-place only permits it
    st_file = s.is_file() and is_safetensors(s)
    patch_here = onto_input and st_file
    try:
        if st_file and fmt == "safetensors" and not patch_here:
            pre = Precopy(s, temp_beside(d))
            pre.start()  # it waits for the thread: a Ctrl-C there too finds the copy in `pre`, cancelled below
        with open_model(s) as loaded:
            return recover_loaded(
                loaded,
                s,
                d,
                fmt,
                key,
                allow_partial=allow_partial,
                progress=progress,
                header=header,
                expect_seal=expect_seal,
                onto_input=onto_input,
                patch_here=patch_here,
                pre=pre,
            )
    finally:
        if pre is not None:
            pre.cancel()  # a no-op for a copy `recover_loaded` took as the output


def recover_loaded(
    loaded: Loaded,
    s: Path,
    d: Path,
    fmt: str,
    key: Key,
    *,
    allow_partial: bool,
    progress: bool | None,
    header: str | None = None,
    expect_seal: str | None = None,
    onto_input: bool = False,
    patch_here: bool = False,
    pre: Precopy | None = None,
    checked: tuple[Check, FoundHeader] | None = None,
) -> RecoveredFile:
    """Recover ``loaded``, read from ``s``, into ``d`` (format ``fmt``, paths checked): `recover_file` after its checks.

    Also recovers a re-sharded single-file seal's shards read as one model (`_resharded.recover_as_one`).
    ``onto_input``/``patch_here``: ``d`` is ``s`` (--in-place), patched there where it can be; ``pre``: the
    input's copy being made beside ``d``, patched and renamed into place where its layout allows. ``checked``: the
    `check_loaded` of ``loaded`` (``header``'s) made already, by a caller that had to see it first (`_shard_moves`).
    """
    if fmt == "onnx":
        onnx_format.require_graph(d, loaded)
    prog = Progress("recover", len(loaded.tensors), enabled=progress if checked is None else False)
    # Open until the output is written: the rebuilt blocks past the budget live in its files, and
    # closing it unregisters their maps, so writing them out would keep every page resident.
    ws = Workspace(d.parent)
    try:
        with prefixed_errors(s):
            chk, found = check_loaded(loaded, s, key, header, progress=prog) if checked is None else checked
            other = not_the_expected_seal(chk, expect_seal, loaded.tensors, own_header(loaded))
            if other is not None:  # nothing to decode or write
                prog.done()
                return RecoveredFile(None, other, {})
            rec = plan_recovery(chk, ws)
            restored = None
            if fmt == "onnx" and rec.report.ok and rec.report.tampered_tensors:
                restored = recover_from_plan(chk, rec)
                if contradicted := shape_issues(loaded, chk, restored.tensors):  # with the restored shape constants
                    chk.metadata_issues.extend(contradicted)
                    rec, restored = plan_recovery(chk, ws), None  # a graph cannot be restored: not recoverable
        prog.done()
        if not (rec.report.ok or allow_partial):
            return RecoveredFile(None, replace(rec.report, written=False), rec.metadata)
        check_inputs()  # the output is made from the input's blocks: not from a file cut short meanwhile
        if onto_input and not rec.report.ok:
            refuse_losing_partial(s, loaded, chk, rec.report)
        out_meta = dict(rec.metadata)
        whole = made_whole(found.text, out_meta, key)
        # Read from the weights (a .npy, a .pt saved again by torch) where the metadata its digest vouches for is
        # known, it is whole: the output keeps it in its metadata, as the file seal wrote did. A copy still
        # digest-only (the sealed metadata lost) stays in the weights alone: seal never writes that form there.
        if parse_header(whole, key).user_metadata is not None or (header is not None and not found.embedded):
            out_meta[METADATA_KEY] = whole
        if rec.report.ok:
            refuse_unverifiable_metadata(chk, out_meta, d, fmt)
        if patch_here and patch_in_place(s, chk, rec, out_meta):
            return RecoveredFile(d, rec.report, rec.metadata)
        if pre is not None:
            pre.join()
            if pre.ok and patch_copy(pre.tmp, s, chk, rec, out_meta, d):
                with atomic_path(d, pre.take()):
                    pass
                return RecoveredFile(d, rec.report, rec.metadata)
            pre.cancel()  # free its disk space before the output is written another way
        if fmt == "safetensors":
            write_recovered(d, chk, rec, out_meta)
        else:
            result = recover_from_plan(chk, rec) if restored is None else restored
            write_model(d, Loaded(result.tensors, out_meta, loaded.source), fmt)
            if fmt == "pytorch":  # as seal warns of the .pt it writes: the same file, the same weakness
                warn_pt_entry(d, chk.header, header is not None, "recover")
        return RecoveredFile(d, rec.report, rec.metadata)
    finally:
        ws.close()

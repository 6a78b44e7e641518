"""Sharded Hugging Face checkpoints: a folder with one safetensors index and its shards.

The index is the folder's one ``*.safetensors.index.json`` (``model.safetensors.index.json``,
diffusers' ``diffusion_pytorch_model.safetensors.index.json``, a variant's
``model.fp16.safetensors.index.json``); a folder with several is refused, as which set of
shards to seal would be a guess.

Every shard is sealed as a model of its own (its own salt, header and parity), so
shards are checked and repaired independently, in parallel, and a damaged shard
never costs another one its capacity. What ties them together is a **set
record** sealed into each shard's metadata (``paramseal_set``): a random set id,
the shard's file name, the list of every shard and the index's file name. Verify then also catches a
shard that is missing, renamed, swapped with another, or taken from another
sealed set, and an index whose ``weight_map`` disagrees with the shards, or that
is missing or unusable (malformed, naming no shards): recover rebuilds it from the
shards' sealed headers, under the name the set records give (`_shard_set.open_index`). Shards only renamed or swapped,
the whole set there once each, recover writes back under their sealed names.

The other files and subfolders (``config.json``, tokenizer files), and the index's
fields other than ``weight_map``, are copied unchanged: they are not protected (a wrong
``metadata.total_size`` is a note, `_size_note`; recomputed when the index is rebuilt).
A ``.safetensors`` file among them is named in a note (`_strays`): a loader that globs
``*.safetensors`` would read it with the shards.

The index's reading and checking live in `_shard_index`; the set records and where each shard
is in `_shard_set`; the set's findings and the merged report in `_shard_findings`; the pool of
worker processes in `_shard_pool`, and what each does with its shard in `_shard_jobs`; the keyless
description (``inspect``) in `_shard_inspect`.
"""

from __future__ import annotations

import fnmatch
import json
import math
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from . import files
from ._findings import unmatched
from ._layout import block_count
from ._model_io import PathLike
from ._paths import never_a_key_inside, never_inside
from ._resharded import one_file_seal, recover_as_one, verify_as_one
from ._shard_findings import _merge, _strays, _unasked, _verdict
from ._shard_index import (
    INDEX,
    INDEX_SUFFIX,
    Index,
    _check_index,
    _size_note,
    index_files,
    index_name,
    read_index,
    set_files,
)
from ._shard_inspect import inspect_dir
from ._shard_jobs import Failed, recover_one, sealed_elsewhere, verify_one, wrong_key
from ._shard_moves import borrowed, moved_issues, without_moved
from ._shard_pool import _map
from ._shard_set import _locate, _moved, _record, _set_id, _vouched, open_index, sealed_level
from ._tempname import named, private_folder, settle, still_there, sync_folder, through
from .errors import (
    FormatError,
    ParamSealError,
    UnsupportedError,
    UsageError,
    cannot_write,
    io_failure,
)
from .formats import safetensors as st_format
from .formats.base import new_mode
from .formats.registry import adapters
from .header import METADATA_KEY, SET_KEY, peek_header
from .keys import Key
from .report import Report, pinned, seal_id_arg


def is_sharded(path: PathLike) -> bool:
    """Whether ``path`` is a folder holding a safetensors index (several: `read_index` refuses them).

    Or, its index lost, shards carrying set records (`set_files`: their metadata only, no key).
    """
    path = Path(path)
    return path.is_dir() and bool(index_files(path) or set_files(path))


@contextmanager
def _atomic_dir(dst: Path, src: Path) -> Iterator[Path]:
    """Build a folder beside ``dst`` and rename it into place only if everything succeeded."""
    if dst.exists() and dst.resolve() == src.resolve():
        raise UsageError(
            f"cannot write the sharded checkpoint '{src}' onto itself: --in-place works for single files "
            "only; give a new output folder"
        )
    if dst.is_dir():
        raise UsageError(f"output folder '{dst}' already exists; give a new folder name")
    if dst.exists() or dst.is_symlink():  # a file (a shard, config.json): not a folder, never replaced
        raise UsageError(
            f"output '{dst}' is an existing file; a sharded checkpoint is written as a new folder: give a new "
            "folder name"
        )
    if dst.suffix.lower() in {e for a in adapters() for e in a.extensions}:
        raise UsageError(
            f"a sharded checkpoint is written as a folder, but '{dst}' is named like a model file; "
            "give a folder name (ParamSeal does not merge shards into one file)"
        )
    never_inside(dst, src, folder=True)
    never_a_key_inside(src, dst)
    parent = dst.parent if str(dst.parent) else Path(".")
    if not parent.is_dir():
        raise UsageError(f"cannot write '{dst}': folder '{parent}' does not exist")
    try:
        at = private_folder(dst.name, parent)  # 0700 while it is filled: its files are written by name
    except OSError as e:
        raise cannot_write(dst, e) from e
    tmp, placed = named(at), False  # the workers' path (another process); this one writes through `at`
    try:
        try:
            yield tmp
            os.chmod(at, new_mode(folder=True))  # mkdtemp's 0700 would outlive the rename: make it a normal folder
            sync_folder(at)  # its files' names, then the folder's own
            still_there(at)
            os.replace(tmp, dst)
            placed = True
            sync_folder(parent)
        except ParamSealError as e:
            # the user never sees the temporary folder: name the output they asked for
            e.args = tuple(a.replace(str(tmp), str(dst)) if isinstance(a, str) else a for a in e.args)
            raise
        except OSError as e:
            raise io_failure(dst, e, tmp) from e
    finally:
        settle(at, dst, placed)  # through its descriptor: its name may lead elsewhere by now


def _copy_others(src: Path, dst: Path, skip: set[str], scratch: Path) -> None:
    """Copy the files beside the shards, subfolders too (Sentence-Transformers keeps ``1_Pooling/``).

    Links to files are copied as files, as the shards are read through them (the Hugging Face
    cache is made of links); a link to a folder is copied as a link, never followed (it may
    lead out of the checkpoint, or into a loop). ``scratch`` (the folder being built) is skipped.
    """
    for p in src.iterdir():
        if p.name in skip or (p.is_dir() and not p.is_symlink() and p.samefile(scratch)):
            continue
        if p.is_symlink() and p.is_dir():
            os.symlink(os.readlink(p), dst / p.name)
        elif p.is_dir():
            (dst / p.name).mkdir()
            _copy_others(p, dst / p.name, set(), scratch)
            shutil.copystat(p, dst / p.name)
        elif p.is_file():
            shutil.copy2(p, dst / p.name)


def _seal_one(
    src: Path, dst: Path, key: Key, level: str, bits: int | None, record: str, code: str | None, reseal: bool
) -> str:
    meta = {SET_KEY: record}
    try:
        return files.seal_file(
            src, dst, key, level=level, bits=bits, extra_metadata=meta, code=code, reseal=reseal
        ).header_json
    except UnsupportedError as e:  # it names a tensor, or the model: say which shard
        raise UnsupportedError(f"shard '{src.name}': {e}") from None


def seal_dir(
    src: PathLike,
    dst: PathLike,
    key: Key,
    *,
    level: str = "standard",
    bits: int | None = None,
    workers: int | None = None,
    code: str | None = None,
    reseal: bool = False,
) -> list[str]:
    """Seal every shard of the checkpoint in ``src`` into the new folder ``dst``; returns the shard names.

    Shards sealed already are refused unless ``reseal`` (see `files.seal_file`).
    """
    src, dst = Path(src), Path(dst)  # a str is as good as a Path here, as in `files`
    try:
        idx = read_index(src)
    except FormatError as e:
        if set_files(src):  # a sealed checkpoint that lost its index
            raise FormatError(f"{e}; its shards are sealed already: 'paramseal recover' rebuilds the index") from None
        raise
    shards = idx.shards
    _check_index(idx)
    set_id = os.urandom(16).hex()
    with _atomic_dir(dst, src) as tmp:
        jobs = [
            (
                src / name,
                tmp / name,
                key,
                level,
                bits,
                json.dumps({"set": set_id, "shard": name, "shards": shards, "index": idx.name}),
                code,
                reseal,
            )
            for name in shards
        ]
        _map(_seal_one, jobs, workers)
        _copy_others(src, through(tmp), set(shards), tmp)
    return shards


def verify_dir(
    folder: PathLike,
    key: Key,
    *,
    tensors: str | None = None,
    workers: int | None = None,
    expect_seal: str | None = None,
) -> Report:
    """Verify every shard (only those holding tensors that match ``tensors``), plus the set and the index.

    A shard the index names but the folder lacks is tampering (not recoverable), not a bad input;
    so is a shard that cannot be read as a sealed model, unless it is an unsealed file the set never had
    (added: its tensors are extra tensors, and recover leaves it out). With ``tensors``, a shard is opened when
    the index or its sealed header puts a matching tensor in it. The report's ``seal_id`` is the
    set id; ``expect_seal`` as in `files.verify_file`.
    """
    folder = Path(folder)
    expect_seal = seal_id_arg(expect_seal)
    with one_file_seal(folder, key) as one:
        if one is not None:
            return verify_as_one(folder, key, one, tensors, expect_seal)
    idx = open_index(folder, key)
    everything, peeked, where = _locate(folder, idx, key)
    chosen, patterns = everything, dict.fromkeys(everything, tensors)
    if tensors is not None:

        def hit(names: list[str] | None) -> bool:
            return names is not None and any(fnmatch.fnmatchcase(n, tensors) for n in names)

        sealed = {s: peeked[s][0] for s in peeked}
        # a shard whose header does not authenticate may hold anything: it is read whole
        chosen = [s for s in everything if hit(idx.tensors_in(s)) or (s in peeked and sealed[s] is None)
                  or hit(sealed.get(s))]  # fmt: skip
        if not chosen:
            names = [n for s in everything for n in [*(idx.tensors_in(s) or ()), *(sealed.get(s) or ())]]
            raise unmatched(tensors, names, f"no tensor in '{folder / idx.name}'")
        # a shard the index sends us to that seals no match (swapped, or a wrong index) is read
        # whole: its report and set record say what is wrong, where the pattern would only fail
        patterns = {s: tensors if hit(sealed.get(s)) else None for s in chosen}
    opened = [s for s in chosen if s in peeked]
    moves = borrowed(folder, everything, peeked, where)
    jobs = [(folder / where.get(s, s), key, patterns[s], moves.get(s, {})) for s in opened]
    done = dict(zip(opened, _map(verify_one, jobs, workers), strict=True))
    wrong_key(key, [r for r, _, _ in done.values()], peeked)
    taken = {s: t for s, (_, _, t) in done.items() if t}
    reports = without_moved({s: r for s, (r, _, _) in done.items() if isinstance(r, Report)}, where, taken)
    failed = {s: r for s, (r, _, _) in done.items() if isinstance(r, Failed)}
    records = {s: rec for s, (r, rec, _) in done.items() if isinstance(r, Report)}
    # the shards a partial verification does not open still say, by their records, which files the set has
    aside = {s: _record(folder / where.get(s, s), key) for s in everything if s not in chosen and _authentic(peeked, s)}
    sealed_elsewhere(reports, failed, records, peeked, {s: folder / where.get(s, s) for s in reports}, key, aside)
    v = _verdict(idx, records, reports, failed, chosen, everything, peeked, tensors, aside, taken)
    grave, fixable, lost = v.grave, v.fixable, v.lost
    no_shards = set(failed) - set(v.failed) - set(v.added)  # failed files that only an edited set record lists
    shard_files = {where.get(s, s) for s in everything if s not in no_shards}
    unread = [s for s in everything if s not in chosen and s in peeked]
    # the model's blocks not checked, for the total
    blocks = sum(_blocks(folder / where.get(s, s)) for s in [*unread, *v.failed])
    size = [] if grave or fixable or tensors else _size_note(idx, [folder / s for s in shard_files], _SET_IT)
    merged = _merge(
        "verify",
        reports,
        grave,
        fixable=[*_moved(where), *moved_issues(taken), *fixable],
        extra=v.extra,
        strays=[
            *size,
            *_unasked(everything, chosen, peeked, tensors),
            *_strays(folder, shard_files, "not checked", key, _set_id(records)),
        ],
        lost=lost,
        skipped=len(everything) - len(chosen),
        unread=blocks,
        vouched=_vouched(records),
        moved=where,
        set_id=_set_id(records),
    )
    if not reports:  # no shard checked (a pattern matching an added file's tensors alone): no report gave them
        merged = replace(
            merged, key_fingerprint=key.fingerprint, level=sealed_level([folder / where.get(s, s) for s in aside], key)
        )
    return pinned(merged, expect_seal)


def _authentic(peeked: dict[str, Any], shard: str) -> bool:
    """Whether ``shard``'s header authenticated with the key when its file was peeked at (`_shard_set._peek`)."""
    return shard in peeked and peeked[shard][0] is not None


def seal_id(folder: PathLike, key: Key) -> str:
    """The seal id a sealed sharded folder's authenticated set records name (its set id); the weights are not read.

    "" when no shard gives one or they differ (verify says what is wrong with the set). An older
    shard's weights under the approved shard's header still name the approved id here: to check a
    folder, use `verify_dir`'s ``report.seal_id`` or ``expect_seal=``.
    """
    folder = Path(folder)
    idx = open_index(folder, key)
    everything, peeked, where = _locate(folder, idx, key)
    return _named_id(folder, key, [s for s in everything if s in peeked], where)


def _named_id(folder: Path, key: Key, shards: list[str], where: dict[str, str]) -> str:
    """The set id the ``shards``' records name, each read from the header in its metadata (see `seal_id`)."""
    return _set_id({s: _record(folder / where.get(s, s), key) for s in shards})


def float_widths(folder: Path, shards: list[str]) -> set[tuple[str, int]]:
    """``(dtype, k)`` of every float tensor the sealed shards in ``folder`` carry bits in (their headers)."""
    out: set[tuple[str, int]] = set()
    for s in shards:
        out |= {(str(t["dtype"]), int(t["k"])) for t in _sealed_header(folder, s)["tensors"] if t["k"]}
    return out


def without_header_copy(folder: Path, shards: list[str]) -> list[str]:
    """The sealed shards in ``folder`` whose weights hold no copy of their header (it is in their metadata only)."""
    return [s for s in shards if not _sealed_header(folder, s).get("carriers")]


def _sealed_header(folder: Path, shard: str) -> dict[str, Any]:
    return peek_header(st_format.read_layout(folder / shard).metadata[METADATA_KEY])  # written just now, by us


def _blocks(shard: Path) -> int:
    """Blocks of a shard, from its header alone (0 if it cannot be read)."""
    try:
        return sum(block_count(math.prod(e.shape)) for e in st_format.read_layout(shard).entries)
    except (ParamSealError, OSError):
        return 0


def recover_dir(
    src: PathLike,
    dst: PathLike,
    key: Key,
    *,
    allow_partial: bool = False,
    workers: int | None = None,
    expect_seal: str | None = None,
) -> Report:
    """Recover every shard into the new folder ``dst``; ``report.written`` says whether ``dst`` was written.

    ``dst`` appears (atomically, whole) only if every shard recovers and the set is
    consistent (an intact one is copied), or with ``allow_partial``. An index that disagrees with a consistent set of
    shards is rebuilt from the shards' sealed headers, which fully determine it. Shards renamed
    or swapped (the whole set there, each once: see `_placement`) are written under their sealed names.
    ``expect_seal``: as in `files.recover_file`; a set of another seal is verified, not recovered.
    """
    src, dst = Path(src), Path(dst)
    expect_seal = seal_id_arg(expect_seal)
    with one_file_seal(src, key) as one:
        if one is not None:
            return recover_as_one(src, dst, key, one, allow_partial, expect_seal)
    idx = open_index(src, key)
    everything, peeked, where = _locate(src, idx, key)
    shards = [s for s in everything if s in peeked]
    # another seal, or shards of several (no one id): verified, for a report that says which; nothing is written.
    # The verified id decides: another seal's header on the approved weights names another id, and recover fixes it
    if expect_seal is not None and _named_id(src, key, shards, where) != expect_seal:
        found = verify_dir(src, key, workers=workers)
        if found.seal_id != expect_seal:
            return pinned(replace(found, kind="recover", written=False, decoded=False), expect_seal)
    try:
        with _atomic_dir(dst, src) as tmp:
            moves = borrowed(src, shards, peeked, where)
            jobs = [(src / where.get(s, s), tmp / s, key, True, moves.get(s, {})) for s in shards]
            done = dict(zip(shards, _map(recover_one, jobs, workers), strict=True))
            results = {s: r for s, (r, _) in done.items()}
            wrong_key(key, list(results.values()), peeked)
            taken = {s: t for s, (_, t) in done.items() if t}
            reports = without_moved({s: r for s, r in results.items() if isinstance(r, Report)}, where, taken)
            failed = {s: replace(r, why=r.why.replace(str(tmp), str(dst))) for s, r in results.items()
                      if isinstance(r, Failed)}  # fmt: skip
            records = {s: _record(tmp / s, key) for s in reports}
            files = {s: src / where.get(s, s) for s in reports}
            for s in sealed_elsewhere(reports, failed, records, peeked, files, key):  # an added file: left out
                (tmp / s).unlink(missing_ok=True)
            v = _verdict(idx, records, reports, failed, everything, everything, peeked, taken=taken)
            grave, fixable, lost = v.grave, v.fixable, v.lost
            # the others are copied; an added shard is left out
            everything = [s for s in everything if s in reports or s in v.failed or s in v.added or s not in peeked]
            # nothing is written unless the shards recovered, so neither is an index
            fixing = not grave and (allow_partial or all(r.ok for r in reports.values()))
            rebuild = bool(fixable) and fixing
            moved = _moved(where)
            fixes = [_rebuilt_note(idx)] if rebuild else []
            fixes += [f"file '{f}' was written as '{s}', its sealed name" for s, f in where.items() if f != s]
            fixes += [
                f"tensor '{n}' was written back into shard '{s}', its sealed shard" for s, t in taken.items() for n in t
            ]
            fixes += [f"shard '{s}', added to the set, was left out, and its tensors out of the index" for s in v.added]
            if not (grave or fixable):
                fixes += _size_note(idx, [tmp / s for s in reports], "it was copied unchanged; " + _SET_IT)
            merged = _merge(
                "recover",
                reports,
                grave,
                fixable=[*moved, *moved_issues(taken), *fixable],
                extra=v.extra,
                fixed=fixes if fixing else [],
                strays=_strays(
                    src,
                    {where.get(s, s) for s in everything},
                    "not checked (recover copies it unchanged)",
                    key,
                    _set_id(records),
                ),
                lost=lost,
                vouched=_vouched(records),
                moved=where,
                set_id=_set_id(records),
            )
            # what was written is judged too: a shard of another seal that the source's records hid (one whose
            # record nothing vouches for, another seal's header pasted on) is written as its weights' own seal
            if expect_seal is not None and merged.seal_id != expect_seal:
                raise _Discard(pinned(merged, expect_seal))  # allow_partial included: not the model asked for
            if not (merged.ok or allow_partial):
                raise _Discard(merged)
            shard_files = set(everything) | {where.get(s, s) for s in everything}
            # a rebuilt index replaces the folder's (an unusable one, under another name, too)
            _copy_others(src, through(tmp), shard_files | ({idx.name, *index_files(src)} if rebuild else set()), tmp)
            if rebuild:
                index = _rebuilt_index(idx, reports, tmp)
                (through(tmp) / idx.name).write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
    except _Discard as e:
        return replace(e.report, written=False)
    # set, not inherited: `_merge` copies the first shard's report, and its flag is that shard's file
    return replace(merged, written=True)


_SET_IT = "correct it in the index if anything relies on it (editing it leaves the seal intact)"


def _rebuilt_index(idx: Index, reports: dict[str, Report], folder: Path) -> dict[str, Any]:
    """The index made from the shards' sealed tensors: ``weight_map`` and ``metadata.total_size``.

    Names keep the index's order (the smallest change to the file); names it lacked follow. Of
    the tampered index only ``metadata``'s other fields are kept: nothing authenticates them.
    """
    sealed = {n: s for s, r in reports.items() for n in r.tensors}
    order = [n for n in idx.weight_map if n in sealed] + [n for n in sealed if n not in idx.weight_map]
    size = sum(e.end - e.start for s in reports for e in st_format.read_layout(folder / s).entries)
    old = idx.raw.get("metadata")
    meta = {**(old if isinstance(old, dict) else {}), "total_size": size}
    return {"metadata": meta, "weight_map": {n: sealed[n] for n in order}}


def _rebuilt_note(idx: Index) -> str:
    note = f"{idx.name} was rebuilt from the shards' sealed headers"
    if idx.lost is None:
        return note
    old = idx.raw.get("metadata")
    if isinstance(old, dict) and set(old) - {"total_size"}:
        return note + " (weight_map and metadata.total_size; the unusable index's other metadata fields kept)"
    return note + " (weight_map and metadata.total_size only: any other metadata the lost index had is gone)"


class _Discard(Exception):
    """Leave the output folder unwritten (carries the report)."""

    def __init__(self, report: Report) -> None:
        super().__init__("not recovered")
        self.report = report


__all__ = [
    "INDEX",
    "INDEX_SUFFIX",
    "SET_KEY",
    "Index",
    "index_files",
    "index_name",
    "inspect_dir",
    "is_sharded",
    "read_index",
    "recover_dir",
    "seal_dir",
    "seal_id",
    "verify_dir",
]

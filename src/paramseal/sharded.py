"""Sharded Hugging Face checkpoints: a folder with ``model.safetensors.index.json`` and its shards.

Every shard is sealed as a model of its own (its own salt, header and parity), so
shards are checked and repaired independently, in parallel, and a damaged shard
never costs another one its capacity. What ties them together is a **set
record** sealed into each shard's metadata (``paramseal_set``): a random set id,
the shard's file name and the list of every shard. Verify then also catches a
shard that is missing, renamed, swapped with another, or taken from another
sealed set, and an index whose ``weight_map`` disagrees with the shards.

The index and the other files (``config.json``, tokenizer files) are copied
unchanged: they are not protected.
"""

from __future__ import annotations

import fnmatch
import json
import math
import multiprocessing
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

from . import files
from ._layout import block_count
from ._pages import scratch_budget
from .errors import FormatError, ParamSealError, UsageError, cannot_write, io_failure
from .formats import safetensors as st_format
from .header import METADATA_KEY, SET_KEY, peek_header
from .keys import Key
from .report import Report, Status, TensorFinding

INDEX = "model.safetensors.index.json"

T = TypeVar("T")


def is_sharded(path: Path) -> bool:
    """Whether ``path`` is a folder holding a safetensors index."""
    return path.is_dir() and (path / INDEX).is_file()


@dataclass(frozen=True, slots=True)
class Index:
    """A parsed ``model.safetensors.index.json``."""

    folder: Path
    raw: dict[str, Any]
    weight_map: dict[str, str]

    @property
    def shards(self) -> list[str]:
        """Shard file names, in order of first use."""
        return list(dict.fromkeys(self.weight_map.values()))

    def tensors_in(self, shard: str) -> list[str]:
        """The tensors the index maps to ``shard``."""
        return [n for n, f in self.weight_map.items() if f == shard]

    def absent(self) -> list[str]:
        """Shards the index names that are not in the folder (looked up now: call once)."""
        return [s for s in self.shards if not (self.folder / s).is_file()]


def read_index(folder: Path, *, missing_ok: bool = False) -> Index:
    """Parse and check the index: a JSON object whose ``weight_map`` names shard files in this folder.

    With ``missing_ok`` (verify and recover, where a deleted shard is tampering) shards may be
    missing, even all of them.
    """
    p = folder / INDEX
    try:
        raw = json.loads(p.read_text(encoding="utf-8"))
        wm = raw["weight_map"]
        if not isinstance(wm, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in wm.items()):
            raise TypeError("weight_map must map tensor names to file names")
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as e:
        raise FormatError(
            f"'{p}' is not a valid safetensors index ({e}); expected {{\"weight_map\": {{...}}}}"
        ) from None
    if not wm:
        raise FormatError(f"'{p}' names no shards: its weight_map is empty")
    for shard in set(wm.values()):
        if Path(shard).name != shard or not shard.endswith(".safetensors"):
            raise FormatError(f"'{p}' names shard '{shard}', which is not a .safetensors file in the same folder")
    idx = Index(folder, raw, dict(wm))
    gone = [] if missing_ok else idx.absent()
    if gone:
        raise FormatError(f"'{p}' names shard '{gone[0]}', which does not exist in '{folder}'")
    return idx


def _workers(n: int) -> int:
    return max(1, min(n, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))


def _map(fn: Callable[..., T], jobs: list[tuple[Any, ...]], workers: int | None) -> list[T]:
    """Run ``fn(*job)`` for every job on a pool of processes (in order); one job runs inline."""
    w = _workers(len(jobs)) if workers is None else max(1, workers)
    if w == 1 or len(jobs) == 1:
        return [fn(*j) for j in jobs]
    share = (scratch_budget() // w) >> 20  # the workers share the scratch budget (MiB each)
    # spawn, not fork: the parent may already run numba's (or torch's) thread pools, which a forked
    # child inherits half-initialised and can die in
    with ProcessPoolExecutor(
        max_workers=w,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_set_scratch_budget,
        initargs=(share,),
    ) as pool:
        futures = [pool.submit(fn, *j) for j in jobs]
        return [f.result() for f in futures]


def _set_scratch_budget(mib: int) -> None:
    os.environ["PARAMSEAL_SCRATCH_MIB"] = str(mib)


@contextmanager
def _atomic_dir(dst: Path) -> Iterator[Path]:
    """Build a folder beside ``dst`` and rename it into place only if everything succeeded."""
    if dst.exists():
        raise UsageError(f"output folder '{dst}' already exists; give a new folder name")
    parent = dst.parent if str(dst.parent) else Path(".")
    if not parent.is_dir():
        raise UsageError(f"cannot write '{dst}': folder '{parent}' does not exist")
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", suffix=".tmp", dir=parent))
    except OSError as e:
        raise cannot_write(dst, e) from e
    try:
        try:
            yield tmp
            os.replace(tmp, dst)
        except OSError as e:
            if isinstance(e, ParamSealError):
                raise
            raise io_failure(dst, e, tmp) from e
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def _copy_others(src: Path, dst: Path, skip: set[str]) -> None:
    for p in src.iterdir():
        if p.is_file() and p.name not in skip:
            shutil.copy2(p, dst / p.name)


def _seal_one(
    src: Path, dst: Path, key: Key, level: str, bits: int | None, record: str, code: str | None, reseal: bool
) -> str:
    meta = {SET_KEY: record}
    return files.seal_file(
        src, dst, key, level=level, bits=bits, extra_metadata=meta, code=code, reseal=reseal
    ).header_json


def seal_dir(
    src: Path,
    dst: Path,
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
    idx = read_index(src)
    shards = idx.shards
    set_id = os.urandom(16).hex()
    with _atomic_dir(dst) as tmp:
        jobs = [
            (
                src / name,
                tmp / name,
                key,
                level,
                bits,
                json.dumps({"set": set_id, "shard": name, "shards": shards}),
                code,
                reseal,
            )
            for name in shards
        ]
        _map(_seal_one, jobs, workers)
        _copy_others(src, tmp, set(shards))
    return shards


def _verify_one(path: Path, key: Key, pattern: str | None) -> tuple[Report, str | None]:
    rep = files.verify_file(path, key, tensors=pattern)
    meta = st_format.read_layout(path).metadata
    return rep, meta.get(SET_KEY)


def _recover_one(src: Path, dst: Path, key: Key, allow_partial: bool) -> Report:
    return files.recover_file(src, dst, key, allow_partial=allow_partial).report


def verify_dir(folder: Path, key: Key, *, tensors: str | None = None, workers: int | None = None) -> Report:
    """Verify every shard (only those holding tensors that match ``tensors``), plus the set and the index.

    A shard the index names but the folder lacks is tampering (not recoverable), not a bad input.
    """
    idx = read_index(folder, missing_ok=True)
    absent = set(idx.absent())
    chosen = idx.shards
    if tensors is not None:
        chosen = [s for s in chosen if any(fnmatch.fnmatchcase(n, tensors) for n in idx.tensors_in(s))]
        if not chosen:
            raise UsageError(f"--tensors '{tensors}' matches no tensor in '{folder / INDEX}'; check the pattern")
    gone = [s for s in chosen if s in absent]
    shards = [s for s in chosen if s not in absent]
    results = _map(_verify_one, [(folder / s, key, tensors) for s in shards], workers)
    reports = {s: r for s, (r, _) in zip(shards, results, strict=True)}
    issues = _set_issues(idx, {s: rec for s, (_, rec) in zip(shards, results, strict=True)}, reports, tensors)
    unread = [s for s in idx.shards if s not in chosen and s not in absent]
    blocks = sum(_blocks(folder / s) for s in unread)  # the model's blocks that were not read, for the total
    return _merge("verify", reports, _missing(gone) + issues, skipped=len(idx.shards) - len(chosen), unread=blocks)


def float_widths(folder: Path, shards: list[str]) -> set[tuple[str, int]]:
    """``(dtype, k)`` of every float tensor the sealed shards in ``folder`` carry bits in (their headers)."""
    out: set[tuple[str, int]] = set()
    for s in shards:
        h = peek_header(st_format.read_layout(folder / s).metadata[METADATA_KEY])  # written just now, by us
        out |= {(str(t["dtype"]), int(t["k"])) for t in h["tensors"] if t["k"]}
    return out


def _blocks(shard: Path) -> int:
    """Blocks of a shard, from its header alone."""
    return sum(block_count(math.prod(e.shape)) for e in st_format.read_layout(shard).entries)


def recover_dir(
    src: Path, dst: Path, key: Key, *, allow_partial: bool = False, workers: int | None = None
) -> tuple[Report, bool]:
    """Recover every shard into the new folder ``dst``; returns the report and whether ``dst`` was written.

    ``dst`` appears (atomically, whole) only if every shard recovers and the set is
    consistent, or with ``allow_partial``.
    """
    idx = read_index(src, missing_ok=True)
    absent = idx.absent()
    shards = [s for s in idx.shards if s not in absent]
    try:
        with _atomic_dir(dst) as tmp:
            jobs = [(src / s, tmp / s, key, True) for s in shards]
            reports = dict(zip(shards, _map(_recover_one, jobs, workers), strict=True))
            records = {s: st_format.read_layout(tmp / s).metadata.get(SET_KEY) for s in shards}
            merged = _merge("recover", reports, _missing(absent) + _set_issues(idx, records, reports))
            if not (merged.ok or allow_partial):
                raise _Discard(merged)
            _copy_others(src, tmp, set(shards))
    except _Discard as e:
        return e.report, False
    return merged, True


def _missing(shards: list[str]) -> list[str]:
    return [f"shard '{s}' named in the index is missing from the folder (deleted or moved)" for s in shards]


class _Discard(Exception):
    """Leave the output folder unwritten (carries the report)."""

    def __init__(self, report: Report) -> None:
        super().__init__("not recovered")
        self.report = report


def _set_issues(
    idx: Index, records: dict[str, str | None], reports: dict[str, Report], pattern: str | None = None
) -> list[str]:
    """Everything wrong with the set as a whole: membership, naming, the index."""
    out: list[str] = []
    ids = set()
    listed: set[str] = set()
    for shard, text in records.items():
        if reports[shard].metadata_issues:
            continue  # its metadata is already reported as edited: the record cannot be trusted
        if text is None:
            out.append(f"shard '{shard}' carries no set record (not sealed as part of this checkpoint)")
            continue
        try:
            rec = json.loads(text)
            ids.add(rec["set"])
            listed.update(rec["shards"])
            if rec["shard"] != shard:
                out.append(f"shard '{shard}' was sealed as '{rec['shard']}': shards were renamed or swapped")
        except (ValueError, KeyError, TypeError):
            out.append(f"shard '{shard}' has a malformed set record")
    if len(ids) > 1:
        out.append(
            f"the shards come from {len(ids)} different sealed sets: a shard was replaced by one from another seal"
        )
    if pattern is None:
        for name in sorted(listed - set(idx.shards)):
            out.append(f"shard '{name}' of the sealed set is missing from the index")
        for name in sorted(set(idx.shards) - listed) if listed else []:
            out.append(f"shard '{name}' in the index is not part of the sealed set")
    for shard, rep in reports.items():
        names = {n for n, f in idx.weight_map.items() if f == shard}
        sealed = set(rep.tensors)
        for n in sorted(names - sealed):
            if pattern is None or fnmatch.fnmatchcase(n, pattern):
                out.append(f"the index maps tensor '{n}' to shard '{shard}', which does not hold it")
    return out


def inspect_dir(folder: Path) -> dict[str, Any]:
    """Describe a sharded checkpoint without a key: totals, the seal settings, and each shard.

    The settings shown are the first sealed shard's; any shard whose level, key fingerprint
    or scheme differs (or that is not sealed) is listed under ``mismatched_shards``.
    """
    index = read_index(folder)
    shards = {name: files.inspect_file(folder / name) for name in index.shards}
    params: dict[str, int] = {}
    for info in shards.values():
        for dt, n in info["parameters"].items():
            params[dt] = params.get(dt, 0) + n
    sealed = [n for n, i in shards.items() if i["sealed"]]
    out: dict[str, Any] = {
        "file": str(folder),
        "index": INDEX,
        "shards": len(shards),
        "tensors": sum(i["tensors"] for i in shards.values()),
        "parameters": params,
        "blocks": sum(i["blocks"] for i in shards.values()),
        "sealed": len(sealed) == len(shards),
        "sealed_shards": len(sealed),
    }
    first = shards[sealed[0]] if sealed else next(iter(shards.values()))
    same = ("scheme", "level", "bits", "key_fingerprint")
    if sealed:
        ref = {k: first["seal"].get(k) for k in same}
        out["seal"] = {**ref, "authenticated": "not checked (inspect has no key; run verify)"}
        out["mismatched_shards"] = [
            n for n, i in shards.items() if not i["sealed"] or {k: i["seal"].get(k) for k in same} != ref
        ]
    out["levels"] = first["levels"]
    out["per_shard"] = {
        n: {"tensors": i["tensors"], "parameters": i["parameters"], "sealed": i["sealed"]} for n, i in shards.items()
    }
    return out


def _merge(kind: str, reports: dict[str, Report], set_issues: list[str], skipped: int = 0, unread: int = 0) -> Report:
    """One report for the whole checkpoint: tensors from every shard, the worst status.

    ``skipped`` shards (``unread`` blocks) were left out by a partial verification.
    """
    tensors: dict[str, TensorFinding] = {}
    extra, meta, notes = [], list(set_issues), []
    for shard, r in reports.items():
        tensors.update(r.tensors)
        extra += [f"{shard}:{n}" for n in r.extra_tensors]
        meta += [f"{shard}: {m}" for m in r.metadata_issues]
        notes += [f"{shard}: {n}" for n in r.notes if "partial verification" not in n]
    if skipped:
        notes.append(f"partial verification: {len(reports)} shard(s) checked, {skipped} not read")
    order: list[Status] = ["intact", "recovered", "tampered", "unrecoverable"]
    status: Status = max((r.status for r in reports.values()), key=order.index, default="intact")
    if set_issues and status in ("intact", "recovered"):
        status = "tampered" if kind == "verify" else "unrecoverable"
    first = next(iter(reports.values()), None) or Report(kind="verify", status=status, recoverable=False)
    return replace(
        first,
        kind=kind,  # type: ignore[arg-type]
        status=status,
        recoverable=all(r.recoverable for r in reports.values()) and not set_issues,
        tensors=tensors,
        extra_tensors=tuple(extra),
        metadata_issues=tuple(meta),
        notes=tuple(notes),
        total_blocks=sum(r.total_blocks for r in reports.values()) + unread,
        checked_blocks=None
        if all(r.checked_blocks is None for r in reports.values()) and not skipped
        else sum(r.total_blocks if r.checked_blocks is None else r.checked_blocks for r in reports.values()),
        lanes_failed=sum(r.lanes_failed for r in reports.values()),
    )


__all__ = [
    "INDEX",
    "SET_KEY",
    "Index",
    "inspect_dir",
    "is_sharded",
    "read_index",
    "recover_dir",
    "seal_dir",
    "verify_dir",
]

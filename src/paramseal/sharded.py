"""Sharded Hugging Face checkpoints: a folder with one safetensors index and its shards.

The index is the folder's one ``*.safetensors.index.json`` (``model.safetensors.index.json``,
diffusers' ``diffusion_pytorch_model.safetensors.index.json``, a variant's
``model.fp16.safetensors.index.json``); a folder with several is refused, as which set of
shards to seal would be a guess.

Every shard is sealed as a model of its own (its own salt, header and parity), so
shards are checked and repaired independently, in parallel, and a damaged shard
never costs another one its capacity. What ties them together is a **set
record** sealed into each shard's metadata (``paramseal_set``): a random set id,
the shard's file name and the list of every shard. Verify then also catches a
shard that is missing, renamed, swapped with another, or taken from another
sealed set, and an index whose ``weight_map`` disagrees with the shards (which
recover rebuilds from the shards' sealed headers). Shards only renamed or swapped,
the whole set there once each, recover writes back under their sealed names.

The index and the other files and subfolders (``config.json``, tokenizer files)
are copied unchanged: they are not protected.
"""

from __future__ import annotations

import fnmatch
import json
import math
import multiprocessing
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

from . import files
from ._layout import block_count
from ._pages import scratch_budget
from .errors import (
    FormatError,
    InputError,
    KeyMismatchError,
    MissingDependencyError,
    OutputError,
    ParamSealError,
    UnsupportedError,
    UsageError,
    cannot_write,
    io_failure,
)
from .formats import safetensors as st_format
from .formats.base import new_mode
from .formats.registry import adapters
from .header import METADATA_KEY, SET_KEY, metadata_digest, parse_header, peek_header
from .keys import Key
from .report import Report, Status, TensorFinding

INDEX = "model.safetensors.index.json"
INDEX_SUFFIX = ".safetensors.index.json"  # what every safetensors index's name ends with

T = TypeVar("T")


def index_files(folder: Path) -> list[str]:
    """The names of the safetensors indexes (``*.safetensors.index.json``) in ``folder``, sorted."""
    try:
        return sorted(p.name for p in folder.iterdir() if p.name.endswith(INDEX_SUFFIX) and p.is_file())
    except OSError:  # not a folder, or one we cannot list: no index (the caller says what is wrong)
        return []


def is_sharded(path: Path) -> bool:
    """Whether ``path`` is a folder holding a safetensors index (several: `read_index` refuses them)."""
    return path.is_dir() and bool(index_files(path))


def index_name(folder: Path) -> str:
    """The name of the folder's one safetensors index (``INDEX`` when it has none, which reading then reports).

    Several (a variant's beside the default, ``model.fp16.safetensors.index.json``) are refused:
    they name different shards, and picking one would seal, verify or recover a set the user did
    not choose.
    """
    names = index_files(folder)
    if len(names) > 1:
        raise UsageError(
            f"'{folder}' holds {len(names)} safetensors indexes ({', '.join(map(repr, names))}): ParamSeal "
            "takes one sharded checkpoint per folder; move each index with the shards it names into a folder "
            "of its own (the other files copied to each) and seal, verify or recover each folder"
        )
    return names[0] if names else INDEX


@dataclass(frozen=True, slots=True)
class Index:
    """A parsed safetensors index (``name``: its file name in ``folder``)."""

    folder: Path
    raw: dict[str, Any]
    weight_map: dict[str, str]
    name: str = INDEX

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
    name = index_name(folder)
    p = folder / name
    try:
        raw = json.loads(p.read_text(encoding="utf-8"))
        wm = raw["weight_map"]
        if not isinstance(wm, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in wm.items()):
            raise TypeError("weight_map must map tensor names to file names")
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, RecursionError) as e:
        raise FormatError(
            f"'{p}' is not a valid safetensors index ({e}); expected {{\"weight_map\": {{...}}}}"
        ) from None
    if not wm:
        raise FormatError(f"'{p}' names no shards: its weight_map is empty")
    for shard in set(wm.values()):
        if Path(shard).name != shard or not shard.endswith(".safetensors"):
            raise FormatError(f"'{p}' names shard '{shard}', which is not a .safetensors file in the same folder")
    idx = Index(folder, raw, dict(wm), name)
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
        initializer=_start_worker,
        initargs=(share, os.getpid()),
    ) as pool:
        try:
            with _sigint_blocked():  # the workers start here and inherit the mask (see _start_worker)
                futures = [pool.submit(_guarded, fn, *j) for j in jobs]
            out = [f.result() for f in futures]
        except BaseException:  # Ctrl-C, SIGTERM: stop the shards being written, do not wait for them
            for proc in list((getattr(pool, "_processes", None) or {}).values()):  # no public way to
                proc.terminate()  # stop a running job; the caller then removes the half-written folder
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    for r in out:
        if isinstance(r, _Raised):
            r.reraise()
    return out  # type: ignore[return-value]  # no _Raised is left


@contextmanager
def _sigint_blocked() -> Iterator[None]:
    """SIGINT blocked in this thread: a worker it starts keeps it pending, not a traceback from its imports."""
    if not hasattr(signal, "pthread_sigmask"):  # Windows: no masks
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _start_worker(mib: int, parent: int) -> None:
    os.environ["PARAMSEAL_SCRATCH_MIB"] = str(mib)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the parent stops us
    if hasattr(signal, "pthread_sigmask"):  # blocked since spawn: one sent meanwhile is discarded now
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    threading.Thread(target=_exit_without, args=(parent,), name="paramseal-parent", daemon=True).start()


def _exit_without(parent: int) -> None:
    """End this worker once ``parent`` is gone (SIGKILL, the OOM killer): nothing else tells it to stop.

    It would wait on the pool's queue forever, holding its memory, or go on writing a shard nobody reads.
    """
    while os.getppid() == parent:
        time.sleep(1)
    os._exit(1)


@dataclass(frozen=True, slots=True)
class _Raised:
    """A ParamSealError from a worker, carried by value.

    An error whose ``__init__`` takes other arguments than the message (KeyMismatchError)
    does not unpickle, and the pool would break instead of reporting it.
    """

    cls: type[ParamSealError]
    args: tuple[Any, ...]
    attrs: dict[str, Any]

    def reraise(self) -> None:
        e = self.cls.__new__(self.cls)
        e.args = self.args
        e.__dict__.update(self.attrs)
        raise e


def _guarded(fn: Callable[..., T], *job: Any) -> T | _Raised:
    try:
        return fn(*job)
    except ParamSealError as e:
        return _Raised(type(e), e.args, dict(e.__dict__))


@contextmanager
def _atomic_dir(dst: Path, src: Path) -> Iterator[Path]:
    """Build a folder beside ``dst`` and rename it into place only if everything succeeded."""
    if dst.exists() and dst.resolve() == src.resolve():
        raise UsageError(
            f"cannot write the sharded checkpoint '{src}' onto itself: --in-place works for single files "
            "only; give a new output folder"
        )
    if dst.exists():
        raise UsageError(f"output folder '{dst}' already exists; give a new folder name")
    if dst.suffix.lower() in {e for a in adapters() for e in a.extensions}:
        raise UsageError(
            f"a sharded checkpoint is written as a folder, but '{dst}' is named like a model file; "
            "give a folder name (ParamSeal does not merge shards into one file)"
        )
    parent = dst.parent if str(dst.parent) else Path(".")
    if not parent.is_dir():
        raise UsageError(f"cannot write '{dst}': folder '{parent}' does not exist")
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", suffix=".tmp", dir=parent))
        os.chmod(tmp, new_mode(folder=True))  # mkdtemp's 0700 would outlive the rename: make it a normal folder
    except OSError as e:
        raise cannot_write(dst, e) from e
    try:
        try:
            yield tmp
            os.replace(tmp, dst)
        except ParamSealError as e:
            # the user never sees the temporary folder: name the output they asked for
            e.args = tuple(a.replace(str(tmp), str(dst)) if isinstance(a, str) else a for a in e.args)
            raise
        except OSError as e:
            raise io_failure(dst, e, tmp) from e
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


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
                json.dumps({"set": set_id, "shard": name, "shards": shards}),
                code,
                reseal,
            )
            for name in shards
        ]
        _map(_seal_one, jobs, workers)
        _copy_others(src, tmp, set(shards), tmp)
    return shards


def _check_index(idx: Index) -> None:
    """Refuse to seal a checkpoint whose index disagrees with its shards (verify would call it tampered).

    Every difference is listed: a tensor a shard holds that the index omits or maps elsewhere,
    one the index maps to a shard that does not hold it.
    """
    held: dict[str, list[str]] = {}
    for shard in idx.shards:
        for e in st_format.read_layout(idx.folder / shard).entries:
            held.setdefault(e.name, []).append(shard)
    issues = []
    for name, where in held.items():
        mapped = idx.weight_map.get(name)
        if mapped is None:
            issues.append(f"tensor '{name}' in shard '{where[0]}' is not in the index")
        elif mapped not in where or len(where) > 1:
            issues.append(f"tensor '{name}' is mapped to '{mapped}' but held by {', '.join(map(repr, where))}")
    unheld = [(n, s) for n, s in idx.weight_map.items() if n not in held]
    issues += [f"tensor '{n}' is mapped to '{s}', which does not hold it" for n, s in unheld]
    if issues:
        raise FormatError(
            f"'{idx.folder / idx.name}' disagrees with its shards: " + "; ".join(issues) + "; fix the index so that it "
            "maps every tensor to the one shard holding it, then seal (a sealed set would fail verify)"
        )


# A shard that cannot be read as a sealed model (replaced by an unsealed file, truncated) is
# tampering with the set; these stay errors: a wrong key, a failed read or write, a missing extra.
_NOT_TAMPERING = (KeyMismatchError, InputError, OutputError, MissingDependencyError)


UNTRUSTED = "\0untrusted"  # a set record that nothing authenticates (see `_record`)


def _record(path: Path, key: Key) -> str | None:
    """A shard's set record as sealed, or ``UNTRUSTED`` when nothing vouches for it.

    From its authenticated header's user metadata, else the file's metadata when that matches
    the sealed digest (a header from the weights keeps only the digest).
    """
    meta = dict(st_format.read_layout(path).metadata)
    text = meta.pop(METADATA_KEY, None)
    try:
        h = parse_header(text if text is not None else files.read_header(path, key), key)
    except ParamSealError:
        return UNTRUSTED
    if h.user_metadata is not None:
        return h.user_metadata.get(SET_KEY)
    return meta.get(SET_KEY) if metadata_digest(meta) == h.digest else UNTRUSTED


def _verify_one(path: Path, key: Key, pattern: str | None) -> tuple[Report | None, str | None, str | None]:
    """``(report, set record, None)``, or ``(None, None, why)`` for a shard that cannot be verified."""
    try:
        rep = files.verify_file(path, key, tensors=pattern)
    except _NOT_TAMPERING:
        raise
    except ParamSealError as e:
        return None, None, f"shard '{path.name}' cannot be verified: {e}"
    return rep, _record(path, key), None


def _recover_one(src: Path, dst: Path, key: Key, allow_partial: bool) -> Report | str:
    try:
        return files.recover_file(src, dst, key, allow_partial=allow_partial).report
    except _NOT_TAMPERING:
        raise
    except ParamSealError as e:
        return f"shard '{src.name}' cannot be recovered: {e}"


def _peek(path: Path, key: Key) -> tuple[list[str] | None, list[str]]:
    """A shard's sealed tensor names (from its header, authenticated) and the shards its set record lists.

    Only to choose what to open. Names are None when the header is missing or does not
    authenticate (the shard is then read whole); the list is not trusted (verify checks it).
    """
    try:
        meta = st_format.read_layout(path).metadata
    except (ParamSealError, OSError):
        return None, []
    names: list[str] | None = None
    listed: list[str] = []
    try:
        names = [t.name for t in parse_header(meta[METADATA_KEY], key).tensors]
    except (ParamSealError, KeyError):
        pass
    try:
        listed = [n for n in json.loads(meta[SET_KEY])["shards"] if isinstance(n, str)]
    except (ValueError, KeyError, TypeError, RecursionError):
        pass
    return names, listed


def _shards(folder: Path, idx: Index, key: Key) -> tuple[list[str], dict[str, tuple[list[str] | None, list[str]]]]:
    """The shards to check: the index's, then any other that a shard's set record lists and the folder holds.

    Returns them (present or not) and what `_peek` found in each present one.
    """
    peeked = {s: _peek(folder / s, key) for s in idx.shards if (folder / s).is_file()}
    more = dict.fromkeys(n for _, listed in peeked.values() for n in listed)
    extra = [
        n
        for n in more
        if n not in idx.weight_map.values()
        and Path(n).name == n
        and n.endswith(".safetensors")
        and (folder / n).is_file()
    ]
    peeked |= {s: _peek(folder / s, key) for s in extra}
    return idx.shards + extra, peeked


def _locate(folder: Path, idx: Index, key: Key) -> tuple[list[str], dict[str, Any], dict[str, str]]:
    """`_shards`, by sealed name, and the file holding each shard (empty unless renamed or swapped: `_placement`)."""
    everything, peeked = _shards(folder, idx, key)
    where = _placement(folder, key, everything, peeked)
    if where is None:
        return everything, peeked, {}
    everything = [*idx.shards, *(s for s in where if s not in idx.shards)]
    return everything, {s: _peek(folder / f, key) for s, f in where.items()}, where


def _claimed(path: Path) -> str | None:
    """The shard a file's set record names, unauthenticated: only to choose whether to look further."""
    try:
        return str(json.loads(st_format.read_layout(path).metadata[SET_KEY])["shard"])
    except (ParamSealError, OSError, ValueError, KeyError, TypeError, RecursionError):
        return None


def _placement(folder: Path, key: Key, everything: list[str], peeked: dict[str, Any]) -> dict[str, str] | None:
    """Sealed shard name -> the file holding it, when the folder holds the sealed set whole under other names.

    That is: every shard the index or a set record sends us to, and every other ``.safetensors``
    file whose set record claims a shard, carries an authenticated record of one set; each shard
    of the set is claimed by exactly one file; and some file holds a shard other than its name.
    Anything else (a shard missing, two files claiming one, a shard of another set, a record not
    authenticated) gives None and is reported as it always was.
    """
    if len(peeked) == len(everything) and all(_claimed(folder / s) in (s, None) for s in peeked):
        return None  # every shard is in place (or is reported for what it is)
    try:
        others = sorted(p.name for p in folder.iterdir() if p.suffix == ".safetensors" and p.name not in peeked)
    except OSError:
        return None
    others = [f for f in others if (folder / f).is_file() and _claimed(folder / f) is not None]
    ids: set[str] = set()
    lists: set[tuple[str, ...]] = set()
    holders: dict[str, list[str]] = {}
    for f in [*peeked, *others]:
        try:
            rec = json.loads(_record(folder / f, key) or "")  # UNTRUSTED is no JSON either
            names = tuple(rec["shards"])
            if not all(isinstance(n, str) for n in [rec["set"], rec["shard"], *names]):
                raise TypeError("not text")
        except (ParamSealError, OSError, ValueError, KeyError, TypeError, RecursionError):
            if f in peeked:
                return None
            continue  # a file beside the shards, not one of them
        ids.add(rec["set"])
        lists.add(names)
        holders.setdefault(rec["shard"], []).append(f)
    if len(ids) != 1 or len(lists) != 1:
        return None
    names = lists.pop()
    if set(holders) != set(names) or any(len(h) > 1 for h in holders.values()):
        return None
    if not all(Path(n).name == n and n.endswith(".safetensors") for n in names):
        return None
    where = {n: holders[n][0] for n in names}
    return where if any(n != f for n, f in where.items()) else None


def _moved(where: dict[str, str]) -> list[str]:
    """What `_placement` found, file by file (a wrong name only: recover writes each shard under its own)."""
    return [
        f"file '{f}' holds sealed shard '{s}': shards were renamed or swapped (recover writes it as '{s}')"
        for s, f in where.items()
        if f != s
    ]


def verify_dir(folder: Path, key: Key, *, tensors: str | None = None, workers: int | None = None) -> Report:
    """Verify every shard (only those holding tensors that match ``tensors``), plus the set and the index.

    A shard the index names but the folder lacks is tampering (not recoverable), not a bad input;
    so is a shard that cannot be read as a sealed model. With ``tensors``, a shard is opened when
    the index or its sealed header puts a matching tensor in it.
    """
    idx = read_index(folder, missing_ok=True)
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
            raise UsageError(f"--tensors '{tensors}' matches no tensor in '{folder / idx.name}'; check the pattern")
        # a shard the index sends us to that seals no match (swapped, or a wrong index) is read
        # whole: its report and set record say what is wrong, where the pattern would only fail
        patterns = {s: tensors if hit(sealed.get(s)) else None for s in chosen}
    opened = [s for s in chosen if s in peeked]
    results = _map(_verify_one, [(folder / where.get(s, s), key, patterns[s]) for s in opened], workers)
    reports = {s: r for s, (r, _, _) in zip(opened, results, strict=True) if r is not None}
    failed = {s: why for s, (_, _, why) in zip(opened, results, strict=True) if why is not None}
    records = {s: rec for s, (r, rec, _) in zip(opened, results, strict=True) if r is not None}
    grave, fixable, lost, failed = _verdict(idx, records, reports, failed, chosen, everything, peeked, tensors)
    unread = [s for s in everything if s not in chosen and s in peeked]
    # the model's blocks not checked, for the total
    blocks = sum(_blocks(folder / where.get(s, s)) for s in [*unread, *failed])
    return _merge(
        "verify",
        reports,
        grave,
        fixable=[*_moved(where), *fixable],
        lost=lost,
        skipped=len(everything) - len(chosen),
        unread=blocks,
    )


def _verdict(
    idx: Index,
    records: dict[str, str | None],
    reports: dict[str, Report],
    failed: dict[str, str],
    asked: list[str],
    everything: list[str],
    peeked: dict[str, Any],
    pattern: str | None = None,
) -> tuple[list[str], list[str], dict[str, TensorFinding], dict[str, str]]:
    """The set's findings, for verify and recover alike: ``(grave, fixable, lost tensors, failed shards)``.

    ``asked``: the shards looked for (present or not). A failed file that neither the index nor
    an authenticated set record names (an edited record, say) is no shard, and is left out.
    """
    grave, fixable, listed = _set_issues(idx, records, reports, pattern)
    failed = {s: why for s, why in failed.items() if s in idx.shards or s in listed}
    gone = _gone(idx, [s for s in asked if s not in peeked], listed)
    missing = gone["missing"] + (sorted(listed - set(everything)) if pattern is None else [])
    grave += [f"shard '{s}' named in the index is missing from the folder (deleted or moved)" for s in missing]
    grave += list(failed.values())
    lost = _lost(idx, missing, "its shard '{}' is missing: its weights are lost", pattern)
    lost |= _lost(idx, list(failed), "its shard '{}' cannot be checked", pattern)
    return grave, fixable + gone["bogus"], lost, failed


def _gone(idx: Index, absent: list[str], listed: set[str]) -> dict[str, list[str]]:
    """Split shards the index names but the folder lacks: missing ones, and names the sealed set never had."""
    out: dict[str, list[str]] = {"missing": [], "bogus": []}
    for s in absent:
        if listed and s not in listed:
            out["bogus"].append(f"the index names shard '{s}', which is neither in the folder nor in the sealed set")
        else:
            out["missing"].append(s)
    return out


def _lost(idx: Index, shards: list[str], why: str, pattern: str | None) -> dict[str, TensorFinding]:
    """Findings for the tensors the index puts in ``shards`` (shards with no report to name them)."""
    return {
        n: TensorFinding(n, issues=(why.format(s),))
        for s in shards
        for n in idx.tensors_in(s)
        if pattern is None or fnmatch.fnmatchcase(n, pattern)
    }


def float_widths(folder: Path, shards: list[str]) -> set[tuple[str, int]]:
    """``(dtype, k)`` of every float tensor the sealed shards in ``folder`` carry bits in (their headers)."""
    out: set[tuple[str, int]] = set()
    for s in shards:
        h = peek_header(st_format.read_layout(folder / s).metadata[METADATA_KEY])  # written just now, by us
        out |= {(str(t["dtype"]), int(t["k"])) for t in h["tensors"] if t["k"]}
    return out


def _blocks(shard: Path) -> int:
    """Blocks of a shard, from its header alone (0 if it cannot be read)."""
    try:
        return sum(block_count(math.prod(e.shape)) for e in st_format.read_layout(shard).entries)
    except (ParamSealError, OSError):
        return 0


def recover_dir(
    src: Path, dst: Path, key: Key, *, allow_partial: bool = False, workers: int | None = None
) -> tuple[Report, bool]:
    """Recover every shard into the new folder ``dst``; returns the report and whether ``dst`` was written.

    ``dst`` appears (atomically, whole) only if every shard recovers and the set is
    consistent, or with ``allow_partial``. An index that disagrees with a consistent set of
    shards is rebuilt from the shards' sealed headers, which fully determine it. Shards renamed
    or swapped (the whole set there, each once: see `_placement`) are written under their sealed names.
    """
    idx = read_index(src, missing_ok=True)
    everything, peeked, where = _locate(src, idx, key)
    shards = [s for s in everything if s in peeked]
    try:
        with _atomic_dir(dst, src) as tmp:
            jobs = [(src / where.get(s, s), tmp / s, key, True) for s in shards]
            results = dict(zip(shards, _map(_recover_one, jobs, workers), strict=True))
            reports = {s: r for s, r in results.items() if isinstance(r, Report)}
            failed = {s: r.replace(str(tmp), str(dst)) for s, r in results.items() if isinstance(r, str)}
            records = {s: _record(tmp / s, key) for s in reports}
            grave, fixable, lost, failed = _verdict(idx, records, reports, failed, everything, everything, peeked)
            everything = [s for s in everything if s in reports or s in failed or s not in peeked]  # others copied
            # nothing is written unless the shards recovered, so neither is an index
            fixing = not grave and (allow_partial or all(r.ok for r in reports.values()))
            rebuild = bool(fixable) and fixing
            moved = _moved(where)
            fixes = [f"{idx.name} was rebuilt from the shards' sealed headers"] if rebuild else []
            fixes += [f"file '{f}' was written as '{s}', its sealed name" for s, f in where.items() if f != s]
            merged = _merge(
                "recover",
                reports,
                grave,
                fixable=[*moved, *fixable],
                fixed=fixes if fixing else [],
                lost=lost,
            )
            if not (merged.ok or allow_partial):
                raise _Discard(merged)
            shard_files = set(everything) | {where.get(s, s) for s in everything}
            _copy_others(src, tmp, shard_files | ({idx.name} if rebuild else set()), tmp)
            if rebuild:
                index = _rebuilt_index(idx, reports, tmp)
                (tmp / idx.name).write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
    except _Discard as e:
        return e.report, False
    return merged, True


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


class _Discard(Exception):
    """Leave the output folder unwritten (carries the report)."""

    def __init__(self, report: Report) -> None:
        super().__init__("not recovered")
        self.report = report


def _set_issues(
    idx: Index, records: dict[str, str | None], reports: dict[str, Report], pattern: str | None = None
) -> tuple[list[str], list[str], set[str]]:
    """Everything wrong with the set as a whole: ``(membership and naming, the index, shards the set lists)``.

    The first kind loses or misplaces weights; the second is a wrong index only, which the
    shards' sealed headers can rebuild. The shards listed come from authenticated records.
    """
    grave: list[str] = []
    index: list[str] = []
    ids: dict[str, list[str]] = {}
    listed: set[str] = set()
    for shard, text in records.items():
        if text == UNTRUSTED:  # metadata edited where only its digest is sealed: the set cannot be checked
            grave.append(f"shard '{shard}': its set record cannot be trusted (its metadata was edited)")
            continue
        if text is None:
            grave.append(f"shard '{shard}' carries no set record (not sealed as part of this checkpoint)")
            continue
        try:
            rec = json.loads(text)
            ids.setdefault(rec["set"], []).append(shard)
            listed.update(rec["shards"])
            if rec["shard"] != shard:
                grave.append(f"shard '{shard}' was sealed as '{rec['shard']}': shards were renamed or swapped")
        except (ValueError, KeyError, TypeError):
            grave.append(f"shard '{shard}' has a malformed set record")
    if len(ids) > 1:  # name them: the odd one out is the smaller group
        groups = sorted(ids.values(), key=len, reverse=True)
        together = "; ".join(", ".join(f"'{s}'" for s in g) for g in groups)
        grave.append(
            f"the shards come from {len(ids)} different sealed sets: a shard was replaced by one from another seal "
            f"(sealed together: {together})"
        )
    if pattern is None:
        for name in sorted(listed - set(idx.shards)):
            index.append(f"shard '{name}' of the sealed set is missing from the index")
        for name in sorted(set(idx.shards) & set(records) - listed) if listed else []:
            grave.append(f"shard '{name}' in the index is not part of the sealed set")

    def asked(n: str) -> bool:
        return pattern is None or fnmatch.fnmatchcase(n, pattern)

    for shard, rep in reports.items():
        names = set(idx.tensors_in(shard))
        sealed = set(rep.tensors)
        for n in sorted(names - sealed):
            if asked(n):
                index.append(f"the index maps tensor '{n}' to shard '{shard}', which does not hold it")
        for n in sorted(sealed - names):
            if asked(n):
                where = idx.weight_map.get(n)
                index.append(
                    f"shard '{shard}' holds sealed tensor '{n}', which the index "
                    + ("does not list" if where is None else f"maps to shard '{where}'")
                )
    return grave, index, listed


def inspect_dir(folder: Path) -> dict[str, Any]:
    """Describe a sharded checkpoint without a key: totals, the seal settings, and each shard.

    The settings shown are the first sealed shard's (``scheme``: every sealed shard's, as it
    follows each shard's code); any shard whose level, bits or key fingerprint differs (or that
    is not sealed) is listed under ``mismatched_shards``. ``levels``
    merges every shard's (each shard is sealed on its own, so the weakest shard sets a dtype's bound).
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
        "index": index.name,
        "shards": len(shards),
        "tensors": sum(i["tensors"] for i in shards.values()),
        "parameters": params,
        "blocks": sum(i["blocks"] for i in shards.values()),
        "sealed": len(sealed) == len(shards),
        "sealed_shards": len(sealed),
    }
    first = shards[sealed[0]] if sealed else next(iter(shards.values()))
    same = ("level", "bits", "key_fingerprint")  # not the scheme: it follows each shard's code (irs or lanes)
    if sealed:
        ref = {k: first["seal"].get(k) for k in same}
        schemes = " + ".join(sorted({str(shards[n]["seal"].get("scheme")) for n in sealed}))
        out["seal"] = {"scheme": schemes, **ref, "authenticated": "not checked (inspect has no key; run verify)"}
        out["mismatched_shards"] = [
            n for n, i in shards.items() if not i["sealed"] or {k: i["seal"].get(k) for k in same} != ref
        ]
    out["levels"] = _merge_levels([i["levels"] for i in shards.values()])
    out["per_shard"] = {
        n: {"tensors": i["tensors"], "parameters": i["parameters"], "sealed": i["sealed"]} for n, i in shards.items()
    }
    return out


def _merge_levels(each: list[dict[str, Any]]) -> dict[str, Any]:
    """Every shard's ``levels``: for a dtype two shards give differently, the smaller contiguous bound."""
    out: dict[str, dict[str, Any]] = {}
    for levels in each:
        for label, dtypes in levels.items():
            mine = out.setdefault(label, {})
            for dt, cap in dtypes.items():
                old = mine.get(dt)
                if old is None or cap.get("contiguous_bound", 1) < old.get("contiguous_bound", 1):
                    mine[dt] = cap
    return out


def _merge(
    kind: str,
    reports: dict[str, Report],
    set_issues: list[str],
    *,
    fixable: list[str] | None = None,
    fixed: list[str] | None = None,
    lost: dict[str, TensorFinding] | None = None,
    skipped: int = 0,
    unread: int = 0,
) -> Report:
    """One report for the whole checkpoint: tensors from every shard, the worst status.

    ``set_issues`` lose weights; ``fixable`` ones are a wrong index, which recover rebuilds, or
    shards under the wrong names, which it writes under their own (``fixed``: it did, each a
    note). ``lost`` names tensors of shards with no report. ``skipped`` shards
    (``unread`` blocks) were left out by a partial verification, or could not be read.
    """
    tensors: dict[str, TensorFinding] = {}
    fixable = fixable or []
    extra, meta, notes = [], [*set_issues, *fixable], []
    for shard, r in reports.items():
        tensors.update(r.tensors)
        extra += [f"{shard}:{n}" for n in r.extra_tensors]
        meta += [f"{shard}: {m}" for m in r.metadata_issues]
        notes += [f"{shard}: {n}" for n in r.notes if "partial verification" not in n]
    tensors |= {n: f for n, f in (lost or {}).items() if n not in tensors}
    if skipped:
        notes.append(f"partial verification: {len(reports)} shard(s) checked, {skipped} not read")
    notes += fixed or []
    order: list[Status] = ["intact", "recovered", "tampered", "unrecoverable"]
    status: Status = max((r.status for r in reports.values()), key=order.index, default="intact")
    if set_issues and status in ("intact", "recovered"):
        status = "tampered" if kind == "verify" else "unrecoverable"
    elif fixable and status in ("intact", "recovered"):
        status = "tampered" if kind == "verify" else "recovered" if fixed else "unrecoverable"
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
    "verify_dir",
]

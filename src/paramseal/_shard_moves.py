"""Tensors moved whole from their sealed shard into another one, their data kept: found there and put back.

Each shard is checked alone, so a tensor moved to another shard (by hand, or a tool that re-sharded the
folder and kept each shard's metadata) was only "missing" from its shard, past what the shard's parity
rebuilds, though every value of it was in the folder. `borrowed` finds each such tensor from the headers
alone (its shard's sealed names, authenticated, and the names each file holds); its shard is then checked
and recovered with the other file's copy under the tensor's own name (`verify_moved`, `recover_moved`):
the copy is taken only if most of its blocks verify under its own seal, so a tensor of that name that is
not its data stays missing. Its finding says where it was (`MOVED`), the set's findings what recover does.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from ._file_header import FoundHeader, check_loaded, own_header, prefixed_errors
from ._model_io import open_model
from ._progress import Progress
from ._recover_file import recover_loaded
from .errors import ParamSealError
from .formats import Loaded
from .formats import safetensors as st_format
from .keys import Key
from .report import Report
from .verify import Check, pinned_check, report_of

MOVED = "moved to shard '{}'"  # the moved tensor's one issue: the file that holds it


def borrowed(
    folder: Path, shards: list[str], peeked: dict[str, Any], where: dict[str, str]
) -> dict[str, dict[str, str]]:
    """Sealed shard -> {tensor it was sealed with and its file lacks: the one other shard file holding it}.

    Only shards whose header authenticates (``peeked``: `_shard_set._peek`) take part, and the other file
    must hold the tensor without its own seal listing it (a file with no seal of the key, one added to the set,
    may hold it too); a name two files hold is not guessed.
    """
    files = {s: where.get(s, s) for s in shards if s in peeked}
    held: dict[str, set[str]] = {}
    for s, f in files.items():
        try:
            held[s] = {e.name for e in st_format.read_layout(folder / f).entries}
        except (ParamSealError, OSError):
            continue  # its own check says what is wrong with it
    out: dict[str, dict[str, str]] = {}
    for s, names in held.items():
        sealed = peeked[s][0]
        for n in sealed or ():
            if n in names:
                continue
            holders = [o for o, h in held.items() if o != s and n in h and n not in (peeked[o][0] or ())]
            if len(holders) == 1:
                out.setdefault(s, {})[n] = files[holders[0]]
    return out


@contextmanager
def _with_copies(path: Path, folder: Path, borrow: dict[str, str]) -> Iterator[Loaded]:
    """The shard at ``path`` loaded with each borrowed tensor read from the file named in ``borrow``."""
    with ExitStack() as stack:
        loaded = stack.enter_context(open_model(path))
        others = {f: stack.enter_context(open_model(folder / f)) for f in set(borrow.values())}
        yield replace(loaded, tensors={**loaded.tensors, **{n: others[f].tensors[n] for n, f in borrow.items()}})


def _passing(chk: Check, borrow: dict[str, str]) -> dict[str, str]:
    """Of ``borrow``, the tensors whose copy has under half its blocks failing in ``chk``, and no other issue.

    From the check itself: a report's finding does not carry the tensor's size (its ``numel`` is 0 there).
    """
    at = {s.name: t for t, s in enumerate(chk.specs)}
    return {
        n: f
        for n, f in borrow.items()
        if int(chk.bad[at[n]].sum()) * 2 < chk.specs[at[n]].nblocks and not chk.issues[at[n]]
    }


def _marked(rep: Report, borrow: dict[str, str]) -> Report:
    """``rep`` with each borrowed tensor's finding saying where its data was."""
    tensors = dict(rep.tensors)
    for n, f in borrow.items():
        if n in tensors:
            tensors[n] = replace(tensors[n], issues=(MOVED.format(f), *tensors[n].issues))
    return replace(rep, tensors=tensors)


@contextmanager
def _settled(
    path: Path, key: Key, borrow: dict[str, str], pattern: str | None = None, label: str | None = None
) -> Iterator[tuple[Loaded, Check, FoundHeader, dict[str, str], Progress | None]]:
    """The shard at ``path`` checked once with every copy in ``borrow``; again without each copy that fails.

    A tensor's finding is its own (a check of the copy alone would give the same), so the copies taken are
    known from the check: yields the model with them, its check, the header found, the copies taken and the
    check's progress line (``label``: shown as a run without copies shows it; None: none).
    """
    taken = borrow
    while True:
        with _with_copies(path, path.parent, taken) as loaded:
            prog = None if label is None else Progress(label, len(loaded.tensors))
            with prefixed_errors(path):
                chk, found = check_loaded(loaded, path, key, None, select=pattern, progress=prog)
            passing = _passing(chk, taken)
            if passing == taken:
                yield loaded, chk, found, taken, prog
                return
        taken = passing


def verify_moved(path: Path, key: Key, pattern: str | None, borrow: dict[str, str]) -> tuple[Report, dict[str, str]]:
    """Verify the shard at ``path`` with the tensors in ``borrow`` read from the other files (`_settled`)."""
    if pattern is not None:
        borrow = {n: f for n, f in borrow.items() if fnmatch.fnmatchcase(n, pattern)}
    with _settled(path, key, borrow, pattern) as (loaded, chk, _, taken, _), prefixed_errors(path):
        rep = pinned_check(report_of(chk), chk, loaded.tensors, None, own_header(loaded))
    return _marked(rep, taken), taken


def recover_moved(
    src: Path, dst: Path, key: Key, allow_partial: bool, borrow: dict[str, str]
) -> tuple[Report, dict[str, str]]:
    """Recover the shard at ``src`` into ``dst`` with the tensors in ``borrow`` read from the other files.

    Those taken (`_settled`); recover goes on from that check (a copy not taken leaves its tensor missing, for
    the shard's parity to rebuild if it can).
    """
    with _settled(src, key, borrow, label="recover") as (loaded, chk, found, taken, prog):
        assert prog is not None
        prog.done()
        res = recover_loaded(
            loaded, src, dst, "safetensors", key, allow_partial=allow_partial, progress=None, checked=(chk, found)
        )
    return _marked(res.report, taken), taken


def moved_issues(taken: dict[str, dict[str, str]]) -> list[str]:
    """One finding of the set per tensor moved (``taken``: sealed shard -> {tensor: the file holding it})."""
    return [
        f"tensor '{n}' sealed in shard '{s}' is held by shard '{f}' (moved between shards, its data kept; "
        f"recover writes it back into '{s}')"
        for s, moved in taken.items()
        for n, f in moved.items()
    ]


def without_moved(
    reports: dict[str, Report], where: dict[str, str], taken: dict[str, dict[str, str]]
) -> dict[str, Report]:
    """The reports with each moved tensor no longer an extra tensor of the file that holds it."""
    gone: dict[str, set[str]] = {}
    for moved in taken.values():
        for n, f in moved.items():
            gone.setdefault(f, set()).add(n)
    return {
        s: replace(r, extra_tensors=tuple(n for n in r.extra_tensors if n not in gone.get(where.get(s, s), ())))
        for s, r in reports.items()
    }

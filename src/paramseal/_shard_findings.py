"""What is wrong with a sharded checkpoint's set as a whole, and the one report made of its shards'.

`_verdict` and `_set_issues` say what is wrong with the set and the index (from the set records
`_shard_set` reads), `_strays` names files beside the shards that are none, and `_merge` makes one
report of the shards'. Kept apart from `_shard_set`, which reads the records and finds the shards.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from . import _json
from ._shard_index import Index
from ._shard_jobs import Failed
from ._shard_set import UNTRUSTED, _all_text, _listing, _parsed, _record
from .errors import ParamSealError
from .files import read_header
from .formats import safetensors as st_format
from .header import METADATA_KEY, SET_KEY, parse_header
from .keys import Key
from .report import Report, Status, TensorFinding


@dataclass(frozen=True, slots=True)
class Verdict:
    """The set's findings (`_verdict`): ``grave`` lose weights, ``fixable`` are the index's (or an added shard's).

    ``lost``: findings for the tensors of shards with no report; ``failed``: shard -> why it cannot be checked;
    ``added``: unsealed shards (or another key's) the index names and the set does not (`ADDED`); ``extra``: their
    tensors, as ``FILE:TENSOR``, extra tensors of the set.
    """

    grave: list[str]
    fixable: list[str]
    lost: dict[str, TensorFinding]
    failed: dict[str, str]
    added: list[str]
    extra: list[str]


ADDED = (
    "shard '{}' in the index is not part of the sealed set and carries no seal: a file added to the checkpoint, its "
    "tensors extra tensors not in the seal (recover leaves it out, and them out of the index)"
)


def _verdict(
    idx: Index,
    records: dict[str, str | None],
    reports: dict[str, Report],
    failed: dict[str, Failed],
    asked: list[str],
    everything: list[str],
    peeked: dict[str, Any],
    pattern: str | None = None,
    aside: dict[str, str | None] | None = None,
    taken: dict[str, dict[str, str]] | None = None,
) -> Verdict:
    """The set's findings, for verify and recover alike.

    ``asked``: the shards looked for (present or not); ``aside``: the authenticated set records of shards a
    partial verification did not open, which still say which files the set has; ``taken``: the tensors moved
    between files that their shards took back (`_shard_moves`), none an added file's extra tensor. A failed file that
    neither the
    index nor an authenticated set record names (an edited record, say) is no shard, and is left out. An unsealed
    file the index names and no authenticated set record lists was added to the set, as an extra tensor
    is to a file: tampering that recover undoes by leaving it out.
    """
    grave, fixable, listed = _set_issues(idx, records, reports, pattern)
    listed |= {n for text in (aside or {}).values() for n in _listing(text)}
    kept = {s: f for s, f in failed.items() if s in idx.shards or s in listed}
    added = [
        s for s, f in kept.items() if (f.unsealed or f.other_key or f.borrowed_seal) and listed and s not in listed
    ]
    back = {f"{f}:{n}" for moved in (taken or {}).values() for n, f in moved.items()}
    extra = [f"{s}:{n}" for s in added for n in _held(idx, s) if pattern is None or fnmatch.fnmatchcase(n, pattern)]
    extra = [e for e in extra if e not in back]
    why = {s: f.why for s, f in kept.items() if s not in added}
    gone = _gone(idx, [s for s in asked if s not in peeked], listed)
    unlisted = sorted(listed - set(everything)) if pattern is None else []  # the index does not name these
    missing = gone["missing"] + unlisted
    named = "of the sealed set" if idx.lost else "named in the index"
    grave += [f"shard '{s}' {named if s not in unlisted else 'of the sealed set'} is missing from the folder "
              "(deleted or moved)" for s in missing]  # fmt: skip
    grave += list(why.values())
    lost = _lost(idx, missing, "its shard '{}' is missing: its weights are lost", pattern)
    lost |= _lost(idx, list(why), "its shard '{}' cannot be checked", pattern)
    fixable = [*([idx.lost] if idx.lost else []), *fixable, *gone["bogus"], *(_added(s, kept[s]) for s in added)]
    return Verdict(grave, fixable, lost, why, added, extra)


def _added(shard: str, f: Failed) -> str:
    """`ADDED` for ``shard``; one sealed with another key says so, not that it carries no seal."""
    said = ADDED.format(shard)
    moved = "ParamSeal records, as a sealed tensor moved or copied into it leaves them"
    if f.other_key:
        how = f"was sealed with another key (fingerprint {f.other_key})"
        return said.replace("carries no seal", how + (f", and holds {moved}" if f.borrowed_seal else ""))
    if f.borrowed_seal:
        return said.replace("carries no seal", f"carries no seal of its own (it holds {moved})")
    return said


def _held(idx: Index, shard: str) -> list[str]:
    """The tensors a shard file holds, from its header (the index's for it, if it cannot be read)."""
    try:
        return [e.name for e in st_format.read_layout(idx.folder / shard).entries]
    except (ParamSealError, OSError):
        return idx.tensors_in(shard)


def _gone(idx: Index, absent: list[str], listed: set[str]) -> dict[str, list[str]]:
    """Split shards the index names but the folder lacks: missing ones, and names the sealed set never had."""
    out: dict[str, list[str]] = {"missing": [], "bogus": []}
    for s in absent:
        if listed and s not in listed:
            # a file there that was not asked for holds a shard of the set under another name (`_placement`)
            what = "is not in the sealed set (the file holds another of its shards)"
            if not (idx.folder / s).is_file():
                what = "is neither in the folder nor in the sealed set"
            out["bogus"].append(f"the index names shard '{s}', which {what}")
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
            rec = _json.loads(text)
            if not _all_text(rec):
                raise TypeError("not text")  # forged with the key: sorted with the others below, it crashed
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
            grave.append(f"shard '{name}' in the {'folder' if idx.lost else 'index'} is not part of the sealed set")
    if idx.lost:  # made from the shards: comparing it with them says nothing (`_verdict` reports it lost)
        return grave, [], listed

    def asked(n: str) -> bool:
        return pattern is None or fnmatch.fnmatchcase(n, pattern)

    for shard, rep in reports.items():
        names = set(idx.tensors_in(shard))
        sealed = set(rep.tensors)
        for n in sorted(names - sealed):
            if asked(n):
                # held, but not sealed with it (an extra tensor), or not held at all
                how = "holds it but was not sealed with it" if n in rep.extra_tensors else "does not hold it"
                index.append(f"the index maps tensor '{n}' to shard '{shard}', which {how}")
        for n in sorted(sealed - names):
            if asked(n):
                where = idx.weight_map.get(n)
                # its header's tensor: the file may have lost it (re-sharded), which its own finding says
                gone = any(i == "missing" or i.startswith("moved to shard ") for i in rep.tensors[n].issues)
                index.append(
                    f"shard '{shard}' {'was sealed with, and no longer holds,' if gone else 'holds'} sealed tensor "
                    f"'{n}', which the index " + ("does not list" if where is None else f"maps to shard '{where}'")
                )
    return grave, index, listed


def _strays(folder: Path, shards: set[str], done: str, key: Key | None = None, set_id: str = "") -> list[str]:
    """A note for each ``.safetensors`` file in ``folder`` that is not one of ``shards`` (file names).

    Not tampering (no index nor authenticated set record names it), but a loader that reads
    every ``*.safetensors`` file in a folder would load it with the shards. ``done``: what
    verify or recover did with it. A shard's set record as the file holds it (unauthenticated)
    may name a stray: an edited record, said so. A stray whose own record authenticates with ``key`` and names set
    ``set_id`` is a shard of this set renamed, its name taken by another file (checked as that shard): said so.
    """
    try:
        names = sorted(p.name for p in folder.iterdir() if p.name.endswith(".safetensors") and p.name not in shards)
    except OSError:
        return []  # the shards were read: a listing that fails now hides nothing they were checked for
    edited = {n for s in shards for n in _file_listing(folder / s)} if names else set()
    out = []
    for n in names:
        if not (folder / n).is_file():
            continue
        shard = _sealed_as(folder / n, key, set_id)
        if shard is not None and _seal_of(folder / n, key) == _seal_of(folder / shard, key):
            out.append(
                f"file '{n}' is not a shard of this checkpoint (a copy of shard '{shard}', whose seal it carries) and "
                f"was {done}; a loader that reads every *.safetensors file in the folder would load it too: remove it "
                "or move it out of the folder"
            )
            continue
        if shard is not None:
            out.append(
                f"file '{n}' is no shard the index names, but its sealed set record says it is shard '{shard}' of "
                f"this checkpoint, a name another file in the folder holds (checked as that shard); it was {done}; "
                "a loader that reads every *.safetensors file in the folder would load it too: if it is that shard, "
                "put it back under its name"
            )
            continue
        why = (
            "the index does not name it, nor does a sealed set record: only a set record that was edited does"
            if n in edited
            else "neither the index nor a sealed set record names it"
        )
        out.append(
            f"file '{n}' is not a shard of this checkpoint ({why}) and was {done}; a loader that reads every "
            "*.safetensors file in the folder would load it too: remove it or move it out of the folder"
        )
    return out


def _seal_of(path: Path, key: Key | None) -> str | None:
    """The seal (salt) of ``path``'s header that authenticates with ``key``, if any."""
    try:
        text = st_format.read_layout(path).metadata.get(METADATA_KEY)
        return parse_header(text if text is not None else read_header(path, key), key).salt.hex() if key else None
    except (ParamSealError, OSError):
        return None


def _sealed_as(path: Path, key: Key | None, set_id: str) -> str | None:
    """The shard of set ``set_id`` that ``path``'s authenticated set record says it is, if it says one."""
    if key is None or not set_id:
        return None
    try:
        rec = _parsed(_record(path, key))
    except (ParamSealError, OSError):
        return None
    return rec["shard"] if rec is not None and rec["set"] == set_id else None


def _unasked(everything: list[str], chosen: list[str], peeked: dict[str, Any], pattern: str | None) -> list[str]:
    """A note for each shard missing from the folder that a partial verification was not asked about."""
    return [
        f"shard '{s}' is missing from the folder (deleted or moved); not judged here, as none of its tensors matches "
        f"'{pattern}': verify without --tensors judges it"
        for s in everything
        if s not in chosen and s not in peeked
    ]


def _file_listing(path: Path) -> list[str]:
    """The shards the set record in ``path``'s metadata lists, as the file holds it (unauthenticated)."""
    try:
        return _listing(st_format.read_layout(path).metadata.get(SET_KEY))
    except (ParamSealError, OSError):
        return []


def _merge(
    kind: str,
    reports: dict[str, Report],
    set_issues: list[str],
    *,
    fixable: list[str] | None = None,
    extra: list[str] | None = None,
    fixed: list[str] | None = None,
    strays: list[str] | None = None,
    lost: dict[str, TensorFinding] | None = None,
    skipped: int = 0,
    unread: int = 0,
    vouched: set[str] | None = None,
    moved: dict[str, str] | None = None,
    set_id: str = "",
) -> Report:
    """One report for the whole checkpoint: tensors from every shard, the worst status.

    ``set_issues`` lose weights; ``fixable`` ones are a wrong index, which recover rebuilds, or
    shards under the wrong names, which it writes under their own (``fixed``: it did, each a
    note). ``strays``: notes on files beside the shards that are none (`_strays`). ``lost`` names tensors of
    shards with no report. ``skipped`` shards
    (``unread`` blocks) were left out by a partial verification, or could not be read. ``vouched``: the
    files an authenticated set record names (`_vouched`; None: all); another file's finding for a tensor
    one of them holds too (a copy listed by an edited index) is its own, named ``file:tensor``.
    ``moved``: where `_placement` found each shard (sealed name -> file); those under another name are kept.
    ``extra``: extra tensors beside the shards' own (an added shard's, `Verdict`).
    ``level``: the one the shards checked were sealed at; "" when they differ, with a note naming each.
    """
    tensors: dict[str, TensorFinding] = {}
    fixable = fixable or []
    extra, meta, notes = list(extra or []), [*set_issues, *fixable], []
    said: dict[str, list[str]] = {}  # note -> the shards that give it, in order
    held = {n for s, r in reports.items() if vouched is None or s in vouched for n in r.tensors}
    for shard, r in reports.items():
        mine = vouched is None or shard in vouched
        for n, f in r.tensors.items():
            tensors[n if (mine or n not in held) and n not in tensors else f"{shard}:{n}"] = f
        extra += [f"{shard}:{n}" for n in r.extra_tensors]
        meta += [f"{shard}: {m}" for m in r.metadata_issues]
        for n in r.notes:
            if "partial verification" not in n:
                said.setdefault(n, []).append(shard)
    # a note every shard gives alike (the older block MAC's) is said once, naming the shards
    notes += [f"{_which(shards, len(reports))}: {n}" for n, shards in said.items()]
    tensors |= {n: f for n, f in (lost or {}).items() if n not in tensors}
    levels: dict[str, list[str]] = {}  # level -> the shards checked that were sealed at it
    for shard, r in reports.items():
        if r.level:
            levels.setdefault(r.level, []).append(shard)
    if len(levels) > 1:  # shards sealed apart (no one `seal DIR`): no one level; say each
        each = "; ".join(f"{lv} ({', '.join(shards)})" for lv, shards in sorted(levels.items()))
        notes.append(f"shards sealed at different levels: {each}")
    if skipped:
        notes.append(f"partial verification: {len(reports)} shard(s) checked, {skipped} not read")
    notes += [*(fixed or []), *(strays or [])]
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
        level=next(iter(levels)) if len(levels) == 1 else "",  # as `_shard_set.sealed_level`
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
        moved_shards={s: f for s, f in (moved or {}).items() if f != s},
        seal_id=set_id,  # not the first shard's own (its header's salt)
    )


def _which(shards: list[str], of: int) -> str:
    """The shards a note came from: one by name, all of them as 'every shard'."""
    return shards[0] if len(shards) == 1 else "every shard" if len(shards) == of else ", ".join(shards)

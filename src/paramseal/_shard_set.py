"""The set a sharded checkpoint's shards were sealed as: set records, where each shard is, the findings.

Each shard carries a set record (``paramseal_set``): the set id, its own name and every
shard's. `_record` reads it as sealed; `_locate` finds the shards, by sealed name, and the
file holding each (`_placement`: shards renamed or swapped); `_verdict` and `_set_issues`
say what is wrong with the set and the index; `_merge` makes one report of the shards'.
`open_index` reads the index, or makes one from the set records when it is lost.
"""

from __future__ import annotations

import fnmatch
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from . import files
from ._embed import header_copies
from ._shard_index import INDEX, INDEX_SUFFIX, Index, index_files, read_index, salvage, set_files
from .errors import FormatError, ParamSealError, UsageError
from .formats import safetensors as st_format
from .header import METADATA_KEY, SET_KEY, Header, metadata_digest, parse_header
from .keys import Key
from .report import Report, Status, TensorFinding

UNTRUSTED = "\0untrusted"  # a set record that nothing authenticates (see `_record`)


def _record(path: Path, key: Key, salt: str | None = None) -> str | None:
    """A shard's set record as sealed, or ``UNTRUSTED`` when nothing vouches for it.

    From its authenticated header's user metadata, else the file's metadata when that matches
    the sealed digest (a header from the weights keeps only the digest). ``salt``: the seal the
    shard's weights were verified under (its report's ``seal_id``); only that seal's header vouches.
    """
    meta = dict(st_format.read_layout(path).metadata)
    text = meta.pop(METADATA_KEY, None)
    try:
        found = parse_header(text if text is not None else files.read_header(path, key), key)
        # an approved shard's header put onto an older shard's weights: verify used the weights' own seal, and
        # the pasted header's record (the approved set id) would vouch for weights it does not seal
        h = found if salt is None or found.salt.hex() == salt else _copy_of(path, key, salt)
    except ParamSealError:
        return UNTRUSTED
    if h is None:
        return UNTRUSTED
    if h.user_metadata is not None:
        return h.user_metadata.get(SET_KEY)
    return meta.get(SET_KEY) if metadata_digest(meta) == h.digest else UNTRUSTED


def _copy_of(path: Path, key: Key, salt: str) -> Header | None:
    """The authentic header copy of seal ``salt`` in a shard's weights, if any."""
    m, tensors, _ = st_format.map_tensors(path)
    try:
        for _, text in header_copies(tensors):
            try:
                h = parse_header(text, key)
            except ParamSealError:
                continue
            if h.salt.hex() == salt:
                return h
        return None
    finally:
        m.close()


def open_index(folder: Path, key: Key) -> Index:
    """The folder's index (shards may be missing), or one made from the shards when it is lost.

    Lost: missing, or not a usable index (malformed, naming no shards), in a folder whose files
    carry set records (`set_files`). The index made then maps each shard's sealed tensors
    (authenticated header) to its sealed name (authenticated set record), is named as the
    records say, and says in ``lost`` what happened (a fixable finding: recover rebuilds it).
    A folder without set records keeps `read_index`'s error.
    """
    try:
        return read_index(folder, missing_ok=True)
    except FormatError as e:
        members = set_files(folder)
        if not members:
            raise
        present = index_files(folder)  # at most one: read_index refused several
        return _from_records(folder, key, members, present[0] if present else None, str(e))


def _from_records(folder: Path, key: Key, members: list[str], present: str | None, error: str) -> Index:
    """The index of `open_index` when the folder's is lost (``present``: its file, if any; ``error``: why)."""
    sets: dict[str, list[str]] = {}
    named: set[str] = set()
    weight_map: dict[str, str] = {}
    records = {f: _parsed(_record(folder / f, key)) for f in members}
    # A file nothing vouches for is a shard only under a name the vouched records list (one whose
    # record was damaged), as with an index only the files it names are: another key's file is
    # no part of the set. The vouched first: a stray copy of a shard must not take its tensors.
    listed = {n for r in records.values() if r is not None for n in r["shards"]}
    # None vouched for (every record edited, or another key's): each file is checked under its own name and
    # reported, as an index with no shard would let recover "rebuild" one naming nothing, the shards unchecked.
    anyone = any(r is not None for r in records.values())
    chosen = (f for f in members if records[f] is not None or f in listed or not anyone)
    for f in sorted(chosen, key=lambda f: records[f] is None):
        rec = records[f]
        shard = f  # a record nothing vouches for: the file is checked under its own name (and reported)
        if rec is not None:
            sets.setdefault(rec["set"], []).append(f)
            shard = rec["shard"]
            if isinstance(rec.get("index"), str):
                named.add(rec["index"])
        for n in _tensor_names(folder / f, key):
            weight_map.setdefault(n, shard)
    if len(sets) > 1:
        together = "; ".join(", ".join(f"'{s}'" for s in g) for g in sets.values())
        raise UsageError(
            f"{error}, and the files in '{folder}' carry set records of {len(sets)} different sealed sets (sealed "
            f"together: {together}): which is the checkpoint would be a guess; "
            "restore the index, or move each set's shards into a folder of its own"
        )
    names = [n for n in named if Path(n).name == n and n.endswith(INDEX_SUFFIX)]
    name = names[0] if len(names) == 1 else present or INDEX
    lost = f"the index '{name}' is missing from the folder (deleted or moved)" if present is None else error
    lost += "; recover rebuilds it from the shards' sealed headers"
    if present not in (None, name):
        lost += f" as '{name}', the name the set records give"
    if len(names) != 1 and present is None:
        lost += (
            f" (the set records do not name the index, as in shards sealed before they did: it is rebuilt as "
            f"'{INDEX}', the conventional name; rename it if the checkpoint used another)"
        )
    raw = salvage(folder / present) if present is not None else {}
    return Index(folder, raw, weight_map, name, lost)


def _all_text(rec: Any) -> bool:
    """Whether a set record's id, shard name and listed shard names are all text (raises on a missing key)."""
    return all(isinstance(n, str) for n in [rec["set"], rec["shard"], *rec["shards"]])


def _parsed(text: str | None) -> dict[str, Any] | None:
    """A set record as a dict, when well-formed (set id and shard names text, the shard's a plain file name)."""
    try:
        rec = json.loads(text or "")  # UNTRUSTED is no JSON either
        ok = _all_text(rec)
    except (ValueError, KeyError, TypeError, RecursionError):
        return None
    shard = rec["shard"] if ok else ""
    return rec if ok and Path(shard).name == shard and shard.endswith(".safetensors") else None


def _set_id(records: dict[str, str | None]) -> str:
    """The set id the authenticated set records give: the set's seal id.

    "" when they differ, or a shard gives none (no record, one nothing vouches for, a malformed one):
    an older shard whose record was stripped or edited must not take the others' id.
    """
    parsed = [_parsed(t) for t in records.values()]
    ids = {r["set"] for r in parsed if r is not None}
    return ids.pop() if len(ids) == 1 and all(r is not None for r in parsed) else ""


def _vouched(records: dict[str, str | None]) -> set[str]:
    """The files whose authenticated set record names them as the shard they are.

    `_merge` reports their findings under plain tensor names; another file's, for the same names, as ``file:tensor``.
    """
    return {f for f, text in records.items() if (rec := _parsed(text)) is not None and rec["shard"] == f}


def _tensor_names(path: Path, key: Key) -> list[str]:
    """A shard's sealed tensor names (authenticated header), else the names in the file (unread: none)."""
    names, _ = _peek(path, key)
    if names is not None:
        return names
    try:
        return [e.name for e in st_format.read_layout(path).entries]
    except (ParamSealError, OSError):
        return []


def _peek(path: Path, key: Key) -> tuple[list[str] | None, list[str]]:
    """A shard's sealed tensor names (from its header, authenticated) and the shards its set record lists.

    Only to choose what to open. Names are None when the header is missing or does not
    authenticate (the shard is then read whole); the list is the sealed record's when the header
    authenticates, else the file's, not trusted (verify checks it).
    """
    try:
        meta = st_format.read_layout(path).metadata
    except (ParamSealError, OSError):
        return None, []
    names: list[str] | None = None
    record = meta.get(SET_KEY)
    try:
        h = parse_header(meta[METADATA_KEY], key)
        names = [t.name for t in h.tensors]
        if h.user_metadata is not None:  # the record as sealed: an edited one must not make a file a shard
            record = h.user_metadata.get(SET_KEY)
    except (ParamSealError, KeyError):
        pass
    return names, _listing(record)


def _listing(record: str | None) -> list[str]:
    """The shard names (text) a set record's JSON lists; none when it is no well-formed record."""
    try:
        return [n for n in json.loads(record or "")["shards"] if isinstance(n, str)]
    except (ValueError, KeyError, TypeError, RecursionError):
        return []


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
    unlisted = sorted(listed - set(everything)) if pattern is None else []  # the index does not name these
    missing = gone["missing"] + unlisted
    named = "of the sealed set" if idx.lost else "named in the index"
    grave += [f"shard '{s}' {named if s not in unlisted else 'of the sealed set'} is missing from the folder "
              "(deleted or moved)" for s in missing]  # fmt: skip
    grave += list(failed.values())
    lost = _lost(idx, missing, "its shard '{}' is missing: its weights are lost", pattern)
    lost |= _lost(idx, list(failed), "its shard '{}' cannot be checked", pattern)
    return grave, [*([idx.lost] if idx.lost else []), *fixable, *gone["bogus"]], lost, failed


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
            rec = json.loads(text)
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
                index.append(f"the index maps tensor '{n}' to shard '{shard}', which does not hold it")
        for n in sorted(sealed - names):
            if asked(n):
                where = idx.weight_map.get(n)
                # its header's tensor: the file may have lost it (re-sharded), which its own finding says
                gone = "missing" in rep.tensors[n].issues
                index.append(
                    f"shard '{shard}' {'was sealed with, and no longer holds,' if gone else 'holds'} sealed tensor "
                    f"'{n}', which the index " + ("does not list" if where is None else f"maps to shard '{where}'")
                )
    return grave, index, listed


def _strays(folder: Path, shards: set[str], done: str) -> list[str]:
    """A note for each ``.safetensors`` file in ``folder`` that is not one of ``shards`` (file names).

    Not tampering (no index nor authenticated set record names it), but a loader that reads
    every ``*.safetensors`` file in a folder would load it with the shards. ``done``: what
    verify or recover did with it. A shard's set record as the file holds it (unauthenticated)
    may name a stray: an edited record, said so.
    """
    try:
        names = sorted(p.name for p in folder.iterdir() if p.name.endswith(".safetensors") and p.name not in shards)
    except OSError:
        return []  # the shards were read: a listing that fails now hides nothing they were checked for
    edited = {n for s in shards for n in _file_listing(folder / s)} if names else set()
    return [
        f"file '{n}' is not a shard of this checkpoint ("
        + (
            "the index does not name it, nor does a sealed set record: only a set record that was edited does"
            if n in edited
            else "neither the index nor a sealed set record names it"
        )
        + f") and was {done}; a loader that reads every *.safetensors file in the folder would load it too: "
        "remove it or move it out of the folder"
        for n in names
        if (folder / n).is_file()
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
    """
    tensors: dict[str, TensorFinding] = {}
    fixable = fixable or []
    extra, meta, notes = [], [*set_issues, *fixable], []
    held = {n for s, r in reports.items() if vouched is None or s in vouched for n in r.tensors}
    for shard, r in reports.items():
        mine = vouched is None or shard in vouched
        for n, f in r.tensors.items():
            tensors[n if (mine or n not in held) and n not in tensors else f"{shard}:{n}"] = f
        extra += [f"{shard}:{n}" for n in r.extra_tensors]
        meta += [f"{shard}: {m}" for m in r.metadata_issues]
        notes += [f"{shard}: {n}" for n in r.notes if "partial verification" not in n]
    tensors |= {n: f for n, f in (lost or {}).items() if n not in tensors}
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

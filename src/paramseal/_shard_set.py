"""The set a sharded checkpoint's shards were sealed as: set records, and where each shard is.

Each shard carries a set record (``paramseal_set``): the set id, its own name and every
shard's. `_record` reads it as sealed; `_locate` finds the shards, by sealed name, and the
file holding each (`_placement`: shards renamed or swapped). What is wrong with the set, and
the merged report, are `_shard_findings`'.
`open_index` reads the index, or makes one from the set records when it is lost.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import _json, files
from ._embed import header_copies
from ._shard_index import INDEX, INDEX_SUFFIX, Index, index_files, read_index, salvage, set_files
from .errors import FormatError, ParamSealError, UsageError
from .formats import safetensors as st_format
from .header import METADATA_KEY, SET_KEY, Header, metadata_digest, parse_header
from .keys import Key

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


def sealed_level(paths: list[Path], key: Key) -> str:
    """The level the shards at ``paths`` were sealed at, as a report says it, from their headers that authenticate.

    "" when none gives one, or they differ. For a verification that checked no shard, whose report has none.
    """
    levels = set()
    for p in paths:
        try:
            h = parse_header(st_format.read_layout(p).metadata[METADATA_KEY], key)
        except (ParamSealError, OSError, KeyError):
            continue
        levels.add(h.level if h.bits is None else f"bits={h.bits}")
    return levels.pop() if len(levels) == 1 else ""


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
        rec = _json.loads(text or "")  # UNTRUSTED is no JSON either
        ok = _all_text(rec)
    except (ValueError, KeyError, TypeError):
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
        return [n for n in _json.loads(record or "")["shards"] if isinstance(n, str)]
    except (ValueError, KeyError, TypeError):
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
    # a file the index names that holds no shard of the set (one added to it: `_placement`) stays, under its name
    added = {s: p for s, p in peeked.items() if s not in where and s not in where.values()}
    return everything, {s: _peek(folder / f, key) for s, f in where.items()} | added, where


def _claimed(path: Path) -> str | None:
    """The shard a file's set record names, unauthenticated: only to choose whether to look further."""
    try:
        return str(_json.loads(st_format.read_layout(path).metadata[SET_KEY])["shard"])
    except (ParamSealError, OSError, ValueError, KeyError, TypeError):
        return None


def _placement(folder: Path, key: Key, everything: list[str], peeked: dict[str, Any]) -> dict[str, str] | None:
    """Sealed shard name -> the file holding it, when the folder holds the sealed set whole under other names.

    That is: every shard the index or a set record sends us to, and every other ``.safetensors``
    file whose set record claims a shard, carries an authenticated record of one set; each shard
    of the set is claimed by exactly one file; and some file holds a shard other than its name.
    Anything else (a shard missing, two files claiming one, a shard of another set, a record not
    authenticated) gives None and is reported as it always was. A file sent to whose header does not authenticate
    with the key (unsealed, another key's) and whose name is no shard of the set was added to it: it does not
    stop the rest being found (verify then reports it as added).
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
    added: set[str] = set()
    for f in [*peeked, *others]:
        try:
            rec = _json.loads(_record(folder / f, key) or "")  # UNTRUSTED is no JSON either
            names = tuple(rec["shards"])
            if not all(isinstance(n, str) for n in [rec["set"], rec["shard"], *names]):
                raise TypeError("not text")
        except (ParamSealError, OSError, ValueError, KeyError, TypeError):
            if f in peeked and peeked[f][0] is None:
                added.add(f)  # no seal of this key: added to the set, unless it takes a shard's name (below)
            elif f in peeked:
                return None
            continue  # a file beside the shards, not one of them
        ids.add(rec["set"])
        lists.add(names)
        holders.setdefault(rec["shard"], []).append(f)
    if len(ids) != 1 or len(lists) != 1:
        return None
    names = lists.pop()
    if set(holders) != set(names) or any(len(h) > 1 for h in holders.values()) or added & set(names):
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

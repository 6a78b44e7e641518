"""A model sealed as one file and re-sharded since, checked and recovered as that one model.

``save_pretrained(max_shard_size=...)`` of a sealed single-file model writes shards with no ParamSeal
metadata and no set record, while the header copy in their weights seals tensors of more than one
shard. `sharded.verify_dir` and `recover_dir` come here first (`one_file_seal`); recover writes the
one file sealed (a folder as OUT is refused: the shards' layout is no seal's).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ._embed import header_copies
from ._file_header import check_loaded, prefixed_errors
from ._findings import unmatched
from ._paths import never_a_key, never_inside, never_read_only
from ._recover_file import recover_loaded
from ._shard_findings import _merge
from ._shard_index import Index, disagreements, read_index
from .errors import FormatError, ParamSealError, UsageError
from .formats import Loaded, adapter_for
from .formats import safetensors as st_format
from .header import METADATA_KEY, SET_KEY, parse_header
from .keys import Key
from .report import Report, pinned, seal_id_arg
from .verify import pinned_check, report_of


@dataclass(frozen=True)
class ManySeals:
    """A sealed *set* re-sharded since: the shards' tensors as one model, and each sealed shard's seal in them.

    ``seals``: seal id -> the tensor names that seal covers (no name in two); the header copies are in the weights.
    """

    loaded: Loaded
    seals: dict[str, frozenset[str]]


@contextmanager
def one_file_seal(folder: Path, key: Key) -> Iterator[Loaded | ManySeals | None]:
    """The folder's shards as one model, when they hold a model sealed as one file and re-sharded since.

    ``save_pretrained(max_shard_size=...)`` of a sealed single-file model writes shards with no ParamSeal
    metadata and no set record; the header copy in their weights seals tensors of more than one shard.
    Such a folder is that one model, not a set of sealed shards. None when the folder is not one.
    `ManySeals` when the weights carry the header copies of several seals, each over tensors of its own:
    a sealed set re-sharded the same way (its set records gone with the metadata), checked seal by seal.
    """
    maps: list[Any] = []
    try:
        try:
            idx = read_index(folder)  # a shard missing raises: verified shard by shard, below
            merged: dict[str, Any] = {}
            metas: list[dict[str, str]] = []
            held: list[set[str]] = []
            for shard in idx.shards:
                m, tensors, meta = st_format.map_tensors(folder / shard)
                maps.append(m)
                if METADATA_KEY in meta or SET_KEY in meta or merged.keys() & tensors.keys():
                    yield None  # a sealed shard set's (or a damaged one's): verified shard by shard
                    return
                merged.update(tensors)
                metas.append(dict(meta))
                held.append(set(tensors))
        except ParamSealError:  # no readable index or shards: verified shard by shard
            yield None
            return
        if not all(m == metas[0] for m in metas):  # before the scan of every tensor below
            yield None
            return
        spans = False
        seals: dict[str, frozenset[str]] = {}
        # intact copies only: a quick look, verify reads them all. Every tensor's: several seals have a carrier each;
        # a seal's copies are one text, authenticated once
        for text in dict.fromkeys(text for n in merged for _, text in header_copies({n: merged[n]})):
            try:
                h = parse_header(text, key)
            except ParamSealError:
                continue
            names = frozenset(t.name for t in h.tensors)
            seals.setdefault(h.salt.hex(), names)
            spans = spans or sum(1 for h in held if h & names) > 1
        one = Loaded(merged, metas[0], metadata_kept=True)
        if len(seals) > 1:  # disjoint: two sealings of one shard are no set (verified shard by shard)
            disjoint = sum(map(len, seals.values())) == len(frozenset().union(*seals.values()))
            yield ManySeals(one, seals) if disjoint else None
        else:
            yield one if spans and len(idx.shards) > 1 else None
    finally:
        for m in maps:
            m.close()


def verify_as_one(
    folder: Path, key: Key, one: Loaded | ManySeals, pattern: str | None, expect_seal: str | None
) -> Report:
    """Verify the shards of a re-sharded single-file seal (`one_file_seal`) as the one model they hold."""
    if isinstance(one, ManySeals):
        return _verify_seals(folder, key, one, pattern, expect_seal)
    with prefixed_errors(folder):
        chk, _ = check_loaded(one, folder, key, None, select=pattern)
        rep = pinned_check(report_of(chk), chk, one.tensors, seal_id_arg(expect_seal), [])
        rep = _index_checked(rep, read_index(folder))
    why = (
        f"the folder's shards hold one model sealed as a single file (seal id {rep.seal_id}) and re-sharded since "
        f"(save_pretrained with max_shard_size writes so): it was checked as that one model. {_MERGE}"
    )
    return replace(rep, notes=(*rep.notes, why))


def recover_as_one(
    src: Path, dst: Path, key: Key, one: Loaded | ManySeals, allow_partial: bool, expect_seal: str | None
) -> Report:
    """Recover the shards of a re-sharded single-file seal (`one_file_seal`) into the one file ``dst``.

    As `files.recover_file` (`_recover_file.recover_loaded` after the checks of a folder's paths): ``dst`` is written
    when the result verifies, else only with ``allow_partial``. A re-sharded set (`ManySeals`) is verified, not
    written: which shard each seal was, under which name, and that they were one set went with the set records.
    """
    if isinstance(one, ManySeals):
        rep = _verify_seals(src, key, one, None, expect_seal)
        return replace(rep, kind="recover", status="unrecoverable", written=False, decoded=False)
    idx = read_index(src)
    if dst.exists() and dst.resolve() in {(src / n).resolve() for n in (*idx.shards, idx.name)}:
        # the rename would replace one of the shards read (or the index): the input, changed without --in-place
        raise UsageError(
            f"output '{dst}' is one of the files of '{src}', the input; ParamSeal never modifies its input: give "
            "a path outside it (paramseal recover FOLDER OUT.safetensors); nothing was written"
        )
    never_inside(dst, src, folder=False)
    never_a_key(dst)  # first: its name is no model format's either, and what matters is the key it holds
    try:
        fmt = adapter_for(dst, must_exist=False).name
    except FormatError:  # a folder: the shards' layout is no seal's, so recover restores the one file
        raise UsageError(
            f"the shards of '{src}' hold one model sealed as a single file and re-sharded since "
            "(save_pretrained with max_shard_size writes so), not a sealed set of shards; nothing was "
            f"written. {_MERGE}"
        ) from None
    never_read_only(dst)
    res = recover_loaded(one, src, dst, fmt, key, allow_partial=allow_partial, progress=None, expect_seal=expect_seal)
    return _index_checked(replace(res.report, written=res.path is not None), idx)


def _verify_seals(folder: Path, key: Key, many: ManySeals, pattern: str | None, expect_seal: str | None) -> Report:
    """Verify a re-sharded sealed set (`ManySeals`): each seal's tensors under it, as the model it sealed."""
    reports: dict[str, Report] = {}
    everything = many.loaded.tensors
    for salt, names in many.seals.items():
        if pattern is not None and not any(fnmatch.fnmatchcase(n, pattern) for n in names):
            continue
        part = replace(many.loaded, tensors={n: a for n, a in everything.items() if n in names})
        with prefixed_errors(folder):
            chk, _ = check_loaded(part, folder, key, None, select=pattern)
        reports[f"seal {salt}"] = report_of(chk)
    if not reports:
        raise unmatched(pattern, everything, f"no tensor of the shards of '{folder}'")
    covered = frozenset().union(*many.seals.values())
    extra = [n for n in everything if n not in covered and (pattern is None or fnmatch.fnmatchcase(n, pattern))]
    ids = ", ".join(many.seals)
    why = (
        f"the folder's shards hold the tensors of {len(many.seals)} sealed shards (seal ids {ids}), re-sharded "
        "since (save_pretrained with max_shard_size writes so, without each shard's metadata): each one's tensors "
        "were checked under its own seal, but the set records went with the metadata, so that they are one sealed "
        "set cannot be checked, nor their shard names restored; put the sealed shards back, or seal the folder "
        "again (paramseal seal --reseal) once you trust it"
    )
    merged = _merge("verify", reports, [why])
    merged = replace(merged, extra_tensors=(*merged.extra_tensors, *extra))
    return pinned(_index_checked(merged, read_index(folder)), seal_id_arg(expect_seal))


def _index_checked(rep: Report, idx: Index) -> Report:
    """``rep`` with what the folder's index says wrongly of its shards: nothing seals it, but a loader follows it.

    A tensor the index maps to a shard that does not hold it (or one it lists that no shard holds) is
    tampering with what a loader reads, as `sharded.verify_dir` says of a sealed set's; recover writes
    the one file sealed, which needs no index.
    """
    wrong = [f"{idx.name}: {w}" for w in disagreements(idx)]
    if not wrong:
        return rep
    status = rep.status
    if status in ("intact", "recovered"):
        status = "tampered" if rep.kind == "verify" else "recovered"
    return replace(rep, status=status, metadata_issues=(*rep.metadata_issues, *wrong))


_MERGE = "recover restores it as the one file sealed: give a file as OUT (paramseal recover FOLDER OUT.safetensors)"

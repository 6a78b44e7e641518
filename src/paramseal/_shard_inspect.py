"""Describe a sharded checkpoint without a key (``paramseal inspect`` on a folder).

Kept apart from `sharded`, which seals, verifies and recovers with the key: this only reads
each shard's unauthenticated description (`files.inspect_file`) and sums it up.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import files
from ._model_io import PathLike
from ._shard_findings import _file_listing
from ._shard_index import disagreements, index_name, read_index, set_files
from ._shard_set import _parsed
from .errors import FormatError, InputError, ParamSealError, one_line
from .formats import safetensors as st_format
from .header import SET_KEY
from .report import SEAL_ID


def inspect_dir(folder: PathLike) -> dict[str, Any]:
    """Describe a sharded checkpoint without a key: totals, the seal settings, and each shard.

    The settings shown are the first sealed shard's (``scheme``: every sealed shard's, as it
    follows each shard's code); any shard whose level, bits or key fingerprint differs (or that
    is not sealed) is listed under ``mismatched_shards``. ``seal["set_id"]``: the set id (the seal id
    verify gives the folder) that every sealed shard's set record names, read without the key
    (`_unchecked_set_id`; each shard's under ``per_shard``), None when they name no one id. ``levels``
    merges every shard's (each shard is sealed on its own, so the weakest shard sets a dtype's bound); it is
    empty when seal refuses a shard (no tensors, no finite float tensor): ``cannot_seal`` then names the first
    such shard, as `sharded.seal_dir` refuses it, and ``per_shard`` each one.
    ``seal["one_file_seal_id"]``: present when every sealed shard carries the same seal's header (its salt, the
    seal id) and none a set record: a model sealed as one file and re-sharded since, which verify checks as one.

    ``index_disagreements``: each way the index disagrees with the shards described (`disagreements`, which
    seal refuses and verify reports on a sealed folder), when there is one.

    A sealed folder whose index is missing or unusable is described from the files carrying set
    records (`set_files`) and the shards those list (`_recorded`; one no file holds under ``missing_shards``),
    with ``index`` None and ``index_problem`` saying what is wrong.
    """
    folder = Path(folder)
    problem, members, idx = None, [], None
    try:
        idx = read_index(folder, missing_ok=True)
        names = idx.shards
    except FormatError as e:
        members = set_files(folder)
        if not members:
            raise
        problem = f"{e}; the shards carry set records: 'paramseal verify' checks them, 'paramseal recover' rebuilds it"
        names = _recorded(folder, members)
    shards, damaged = _described(folder, names)
    params: dict[str, int] = {}
    for info in shards.values():
        for dt, n in info["parameters"].items():
            params[dt] = params.get(dt, 0) + n
    sealed = [n for n, i in shards.items() if i["sealed"]]
    out: dict[str, Any] = {
        "file": str(folder),
        "index": None if problem else index_name(folder),
        **({"index_problem": problem} if problem else {}),
        "shards": len(names),
        "tensors": sum(i["tensors"] for i in shards.values()),
        "parameters": params,
        "blocks": sum(i["blocks"] for i in shards.values()),
        "sealed": len(sealed) == len(names),
        "sealed_shards": len(sealed),
        **damaged,
    }
    # as seal checks it before sealing (and verify on a sealed folder): the shards described, read again
    if idx is not None and (wrong := disagreements(idx, list(shards))):
        out["index_disagreements"] = wrong
    same = ("level", "bits", "key_fingerprint")  # not the scheme: it follows each shard's code (irs or lanes)
    named = {n: _unchecked_set_id(folder / n) for n in sealed}
    if sealed:
        ref = {k: shards[sealed[0]]["seal"].get(k) for k in same}
        schemes = " + ".join(sorted({str(shards[n]["seal"].get("scheme")) for n in sealed}))
        ids = set(named.values())
        one = ids.pop() if len(ids) == 1 else None  # None: the records name several sets, or a shard none
        out["seal"] = {"scheme": schemes, **ref, "set_id": one}
        salts = {shards[n]["seal"].get("salt") for n in sealed}
        if len(sealed) > 1 and not any(named.values()) and len(salts) == 1 and None not in salts:
            # one header in several shards and no set records: a single-file seal re-sharded since (`_resharded`),
            # which verify checks as one model; a sealed set's shards each carry their own seal and record
            out["seal"]["one_file_seal_id"] = salts.pop()
        out["seal"]["authenticated"] = "not checked (inspect has no key; run verify)"
        out["mismatched_shards"] = [
            n for n, i in shards.items() if not i["sealed"] or {k: i["seal"].get(k) for k in same} != ref
        ]
    # a shard's damaged or unreadable seal header: each message names its file
    if warned := {n: w for n, i in shards.items() if (w := i.get("header_problem") or i.get("seal_unreadable"))}:
        out["shard_warnings"] = warned
    # a shard seal refuses (seal_dir: the first in the index's order, named as its refusal names it) refuses the set
    refused = {n: f"shard '{n}': {i['cannot_seal']}" for n, i in shards.items() if i.get("cannot_seal")}
    if refused:
        out["cannot_seal"] = next(iter(refused.values()))
    out["levels"] = {} if refused else _merge_levels([i["levels"] for i in shards.values()])
    out["per_shard"] = {
        n: {
            "tensors": i["tensors"],
            "parameters": i["parameters"],
            "sealed": i["sealed"],
            "tensor_list": i["tensor_list"],
        }
        | ({"set_id": named[n]} if n in named else {})
        | ({"cannot_seal": refused[n]} if n in refused else {})
        for n, i in shards.items()
    }
    return out


def _described(folder: Path, names: list[str]) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Each shard's `files.inspect_file` description, and what is wrong with the set's files.

    A damaged set is described, not refused, as verify reports it: ``missing_shards`` (named, not in the
    folder), ``unreadable_shards`` (name: why it cannot be read as a model; truncated, not safetensors) and
    ``unlisted_files``, when a shard is missing or unreadable (``.safetensors`` files the index does not name, where
    a renamed shard would be: the shard each one's set record names, read without the key, or None). An I/O error
    stays an error, as in verify.
    """
    shards: dict[str, dict[str, Any]] = {}
    missing: list[str] = []
    unreadable: dict[str, str] = {}
    for name in names:
        path = folder / name
        if not path.exists():
            missing.append(name)
            continue
        try:
            shards[name] = files.inspect_file(path)
        except InputError:
            raise
        except ParamSealError as e:
            unreadable[name] = one_line(str(e))
    try:
        others = sorted(p.name for p in folder.iterdir() if p.name.endswith(".safetensors") and p.name not in names)
    except OSError:
        others = []
    unlisted = {n: _unchecked_record(folder / n, "shard") for n in others if (folder / n).is_file()}
    damaged: dict[str, Any] = {"missing_shards": missing} if missing else {}
    damaged |= {"unreadable_shards": unreadable} if unreadable else {}
    damaged |= {"unlisted_files": unlisted} if unlisted and (missing or unreadable) else {}
    return shards, damaged


def _recorded(folder: Path, members: list[str]) -> list[str]:
    """The shards of a folder whose index is lost: the files with set records (``members``), then those listed.

    Listed: named by the records, read without the key, as the index is when there is one. A listed shard that
    no file holds, under its name or by its record's ``shard`` (renamed), is then reported missing, as a shard
    the index names is; a listed file there without a record is described as a shard.
    """
    claimed = {_unchecked_record(folder / m, "shard") for m in members}
    listed = dict.fromkeys(n for m in members for n in _file_listing(folder / m))
    more = [n for n in listed if n not in members and Path(n).name == n and n.endswith(".safetensors")]
    return members + [n for n in more if n not in claimed or (folder / n).exists()]


def _unchecked_record(shard: Path, field: str) -> str | None:
    """A field of a shard's set record, read without the key; None without a well-formed record."""
    try:
        rec = _parsed(st_format.read_layout(shard).metadata.get(SET_KEY))
    except (ParamSealError, OSError):
        return None
    return None if rec is None else str(rec[field])


def _unchecked_set_id(shard: Path) -> str | None:
    """The set id a shard's set record names, read without the key (as inspect reads a file's salt).

    None when it has no record, or one that is malformed or names no well-formed id (nothing else
    from it is printed). seal prints the set id as ``seal id``; verify authenticates the records (``seal_id``).
    """
    named = _unchecked_record(shard, "set")
    return named if named is not None and SEAL_ID.fullmatch(named) else None


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

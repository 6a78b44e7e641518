"""What each worker does with one shard of a sealed set: verify it, or recover it into the new folder.

`sharded.verify_dir` and `recover_dir` run these on the pool (`_shard_pool._map`), one shard a job. A shard that
cannot be read as a sealed model comes back as `Failed` (tampering with the set, not a bad input), saying whether
the file carries no seal at all, or another key's: a file added to the set, when no set record lists it
(`_shard_findings._verdict`). Another key's seal is a wrong key only when no shard authenticates (`wrong_key`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import files
from ._shard_moves import recover_moved, verify_moved
from ._shard_set import _listing, _parsed, _record
from ._weights_header import HeaderOnlyInMetadata, RecordsWithoutHeader
from .errors import (
    BeyondSealError,
    InputError,
    KeyMismatchError,
    MissingDependencyError,
    NotSealedError,
    OutputError,
    ParamSealError,
)
from .formats import safetensors as st_format
from .header import METADATA_KEY, parse_header
from .keys import Key
from .report import Report

# A shard that cannot be read as a sealed model (replaced by an unsealed file, truncated) is
# tampering with the set; these stay errors: a wrong key, a failed read or write, a missing extra,
# a seal this version cannot check. Another key's seal is tampering unless the key is wrong for every shard
# (`wrong_key`).
_NOT_TAMPERING = (InputError, OutputError, MissingDependencyError, BeyondSealError)


@dataclass(frozen=True, slots=True)
class Failed:
    """A shard that cannot be verified or recovered: ``why``, and whether the file carries no seal at all.

    ``other_key``: the fingerprint of the key it was sealed with, when that is not the key given ("" otherwise).
    ``borrowed_seal``: the file has no seal of its own but ParamSeal records in its weights (and maybe a sealed
    shard's header copy: `sealed_elsewhere`), as a file a sealed tensor was moved into has.
    """

    why: str
    unsealed: bool
    other_key: str = ""
    borrowed_seal: bool = False


def _failed(e: ParamSealError, why: str) -> Failed:
    # a sealed model whose header only its metadata could hold, read without it, is sealed all the same
    if isinstance(e, (HeaderOnlyInMetadata, RecordsWithoutHeader)):  # records, no header: see `sealed_elsewhere`
        return Failed(why, False, borrowed_seal=True)
    return Failed(why, isinstance(e, NotSealedError))


def sealed_elsewhere(
    reports: dict[str, Report],
    failed: dict[str, Failed],
    records: dict[str, str | None],
    peeked: dict[str, Any],
    files: dict[str, Path],
    key: Key,
    aside: dict[str, str | None] | None = None,
) -> list[str]:
    """The files verified under another shard's seal: moved to ``failed``, and returned.

    A file holding a sealed shard's tensor (moved into it) holds that shard's ParamSeal records, and its header
    copy when the tensor carries one: read alone without a header of the key in its metadata (``peeked``:
    `_shard_set._peek`; none, or another key's), it is that shard's seal with most of its tensors missing, its own
    tensors extra. The shard whose seal it is (its authenticated set record naming its file) is another file: this
    one is no copy of it to judge as that shard, but a `Failed` with ``borrowed_seal``: a file added to the set
    when no set record lists it, else a shard of the set that cannot be checked (sealed with another key, say).
    ``files``: each shard's file; ``aside``: records of shards not verified, to list the set's files only.
    """
    listed = {n for text in [*records.values(), *(aside or {}).values()] for n in _listing(text)}
    mine = {
        r.seal_id: s for s, r in reports.items() if r.seal_id and (rec := _parsed(records.get(s))) and rec["shard"] == s
    }
    out = [s for s, r in reports.items() if listed and peeked[s][0] is None and mine.get(r.seal_id, s) != s]
    for s in out:
        other = _metadata_key(files[s], key)
        held = f"it holds tensors of shard '{mine[reports[s].seal_id]}' under that shard's seal (moved into it)"
        why = f"shard '{s}' cannot be verified: no seal of its own is in its metadata, and {held}"
        if other:
            why = _other_key(files[s], KeyMismatchError(other, key.fingerprint)).why + f"; {held}"
        failed[s] = Failed(why, False, other, borrowed_seal=True)
        del reports[s], records[s]
    return out


def _metadata_key(path: Path, key: Key) -> str:
    """The fingerprint of the other key the header in a file's metadata is sealed with ("" for none)."""
    try:
        parse_header(st_format.read_layout(path).metadata[METADATA_KEY], key)
    except KeyMismatchError as e:
        return e.stored
    except (ParamSealError, OSError, KeyError):
        pass
    return ""


def _other_key(path: Path, e: KeyMismatchError) -> Failed:
    why = f"shard '{path.name}' was sealed with another key (fingerprint {e.stored}): its weights cannot be trusted"
    return Failed(why + " or recovered", False, e.stored)


def wrong_key(key: Key, results: list[Report | Failed], peeked: dict[str, Any]) -> None:
    """Raise KeyMismatchError when shards are another key's and none authenticates with ``key``: the key is wrong.

    ``peeked``: the shards' headers read before the jobs (`_shard_set._peek`: sealed names first, None where the
    header did not authenticate with ``key``).
    """
    other = next((r.other_key for r in results if isinstance(r, Failed) and r.other_key), "")
    authentic = any(p[0] is not None for p in peeked.values())
    if other and not authentic and not any(isinstance(r, Report) for r in results):
        raise KeyMismatchError(other, key.fingerprint)


def verify_one(
    path: Path, key: Key, pattern: str | None, borrow: dict[str, str]
) -> tuple[Report | Failed, str | None, dict[str, str]]:
    """``(report, set record, tensors taken from other files)``, or ``(Failed, None, {})``.

    ``borrow``: tensors moved out of the shard, and the file holding each (`_shard_moves`).
    """
    taken: dict[str, str] = {}
    try:
        if borrow:
            rep, taken = verify_moved(path, key, pattern, borrow)
        else:
            rep = files.verify_file(path, key, tensors=pattern)
    except KeyMismatchError as e:
        return _other_key(path, e), None, {}
    except _NOT_TAMPERING:
        raise
    except ParamSealError as e:
        return _failed(e, f"shard '{path.name}' cannot be verified: {e}"), None, {}
    return rep, _record(path, key, rep.seal_id), taken


def recover_one(
    src: Path, dst: Path, key: Key, allow_partial: bool, borrow: dict[str, str]
) -> tuple[Report | Failed, dict[str, str]]:
    """``(report, tensors taken from other files)`` of ``src`` recovered into ``dst``, or ``(Failed, {})``."""
    try:
        if borrow:
            return recover_moved(src, dst, key, allow_partial, borrow)
        return files.recover_file(src, dst, key, allow_partial=allow_partial).report, {}
    except KeyMismatchError as e:
        return _other_key(src, e), {}
    except _NOT_TAMPERING:
        raise
    except ParamSealError as e:
        return _failed(e, f"shard '{src.name}' cannot be recovered: {e}"), {}

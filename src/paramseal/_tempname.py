"""Names of the temporary files and folders an output is written to before its rename into place.

A temporary name is '.NAME.XXXXXXXX.tmp' (the final name, random letters), cut so that it fits the
file system's name limit whenever NAME does: a legal output name must never fail for its temporary's.
Writers that need the final name (ONNX names its side files after it) look it up with `final_name`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_NAME_MAX = 255  # bytes in a name on the common file systems, where pathconf cannot tell
_TAIL = 8 + len(".tmp")  # mkstemp's random letters (secrets.token_hex(4) gives as many) and the suffix
_FINAL: dict[Path, str] = {}  # temporary path -> the name it is renamed to


def name_max(folder: Path) -> int:
    """The longest file name, in bytes, that ``folder``'s file system takes."""
    try:
        limit = os.pathconf(folder, "PC_NAME_MAX")
    except (AttributeError, OSError, ValueError):  # no pathconf (Windows), or no answer
        return _NAME_MAX
    return min(limit, _NAME_MAX) if limit > 0 else _NAME_MAX  # -1: the file system sets no limit


def temp_prefix(name: str, folder: Path) -> str:
    """'.NAME.' for a temporary beside ``folder / name``: NAME cut (at a character) to leave room for the tail."""
    return f".{cut_name(name, name_max(folder) - len('..') - _TAIL)}."


def cut_name(name: str, room: int) -> str:
    """``name`` cut at a character to at most ``room`` bytes (as the file system gets it; none if below 1)."""
    cut = name[: max(room, 0)]
    while cut and len(os.fsencode(cut)) > room:
        cut = cut[:-1]
    return cut


@contextmanager
def renamed_to(tmp: Path, name: str) -> Iterator[None]:
    """While the block runs, `final_name` of ``tmp`` is ``name``."""
    _FINAL[tmp] = name
    try:
        yield
    finally:
        _FINAL.pop(tmp, None)


def sync_folder(folder: Path) -> None:
    """Flush ``folder``'s entries to disk: a rename (or a new file) is durable only then, not at the file's fsync.

    Without it a crash after "OK: sealed" (or "recovered", in place) could bring back the old file, or none.
    Where a folder cannot be opened or flushed (Windows, some network file systems) there is nothing more to do.
    """
    try:
        fd = os.open(folder if str(folder) else ".", os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def final_name(path: Path) -> str:
    """The name the file being written at ``path`` will have: its own unless it is a temporary of `renamed_to`."""
    return _FINAL.get(path, path.name)

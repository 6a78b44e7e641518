"""Names of the temporary files and folders an output is written to before its rename into place.

A temporary name is '.NAME.XXXXXXXX.tmp' (the final name, random letters), cut so that it fits the
file system's name limit whenever NAME does: a legal output name must never fail for its temporary's.
A single file is written as NAME inside a new folder of that name, mode 0700, reached through its
descriptor (`private_temp`): the writers open it by name, and in a folder others may write, a link put at
its name (or at its folder's) meanwhile would have them (root among them) truncate and write the file it
names; no one else may enter a 0700 folder, and a path through its descriptor leads to it whatever is renamed.
Writers that need the final name (ONNX names its side files after it) look it up with `final_path`.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_NAME_MAX = 255  # bytes in a name on the common file systems, where pathconf cannot tell
_TAIL = 8 + len(".tmp")  # mkstemp's random letters (secrets.token_hex(4) gives as many) and the suffix
_FINAL: dict[Path, Path] = {}  # temporary path -> the path it is renamed to
_PRIVATE: dict[Path, tuple[int, Path]] = {}  # a `private_folder` as written to -> its descriptor, its name


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


def private_folder(name: str, folder: Path) -> Path:
    """A new folder of ours (0700) in ``folder`` (the same file system) for ``folder / name``'s temporary files.

    Returned as a path through its descriptor (/proc/self/fd/N, where there is one): another user who may
    write ``folder`` can rename it and put a link at its name, but not change where that path leads.
    `discard_folder` removes it. Raises OSError where ``folder`` takes no new folder, or where what its name
    leads to is no longer the folder made (by then only a link or a folder of someone else's).
    """
    return _pinned(Path(tempfile.mkdtemp(prefix=temp_prefix(name, folder), suffix=".tmp", dir=folder)))


def _pinned(made: Path) -> Path:
    if not hasattr(os, "O_DIRECTORY"):  # Windows: a folder cannot be opened; its name it is
        _PRIVATE[made] = (-1, made)
        return made
    flags = os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(made, flags)
    except OSError as e:
        try:
            os.rmdir(made)  # ours, unless a link was put there (not removed) or an empty folder (no loss)
        except OSError:
            pass
        if e.errno == errno.ELOOP:
            raise _replaced(made) from e
        raise
    st = os.fstat(fd)
    euid = os.geteuid() if hasattr(os, "geteuid") else st.st_uid
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != euid:  # another's folder: ours cannot be given away
        os.close(fd)
        raise _replaced(made)
    if st.st_mode & 0o077:  # a folder of ours open to others; or a file system that keeps no modes (vfat, CIFS)
        try:
            os.fchmod(fd, 0o700)
        except OSError:
            pass
    via = Path(f"/proc/self/fd/{fd}")
    at = via if via.is_dir() else made  # no /proc (not Linux): by its name
    _PRIVATE[at] = (fd, made)
    return at


def _replaced(made: Path, when: str = "as it was made") -> OSError:
    return OSError(
        0,
        f"its temporary folder '{made}' was replaced {when} (someone else may write that folder); nothing was written",
        str(made),
    )


def still_there(at: Path) -> None:
    """Refuse to rename a `private_folder` by its name (a folder has no other way) where it leads elsewhere."""
    fd, made = _PRIVATE[at]
    if fd >= 0:
        st, now = os.fstat(fd), os.lstat(made)
        if (st.st_dev, st.st_ino) != (now.st_dev, now.st_ino):
            raise _replaced(made, "before its rename")


def settle(at: Path, dst: Path, placed: bool) -> None:
    """Keep a `private_folder` renamed to ``dst`` (`let_go`), remove it otherwise (`discard_folder`).

    ``placed`` says the rename returned; where an interrupt came between it and the flag, the folder found at
    ``dst`` is ours and is kept: removing it through its descriptor emptied the output just put in place.
    """
    if not placed:
        fd, _ = _PRIVATE[at]
        try:
            placed = fd >= 0 and _same(os.fstat(fd), os.lstat(dst))
        except OSError:
            placed = False
    (let_go if placed else discard_folder)(at)


def _same(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def private_temp(name: str, folder: Path) -> Path:
    """A new empty file ``name`` (0600) in a `private_folder` in ``folder``; `discard` removes both."""
    tmp = private_folder(name, folder) / name
    try:
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600))
    except BaseException:
        discard(tmp)
        raise
    return tmp


def discard(tmp: Path) -> None:
    """Remove ``tmp``, and its folder where `private_temp` made it (with what a writer left in it)."""
    if tmp.parent in _PRIVATE:
        discard_folder(tmp.parent)
    else:
        tmp.unlink(missing_ok=True)


def discard_folder(at: Path) -> None:
    """Remove a `private_folder` and all in it, through its descriptor (its name may lead elsewhere by now)."""
    fd, made = _PRIVATE.pop(at)
    if fd < 0:
        shutil.rmtree(made, ignore_errors=True)
        return
    try:
        _empty(fd)
        try:
            st, now = os.fstat(fd), os.lstat(made)
            if (st.st_dev, st.st_ino) == (now.st_dev, now.st_ino):
                os.rmdir(made)
        except OSError:  # renamed by someone else: left empty, under the name they gave it
            pass
    finally:
        os.close(fd)


def _empty(fd: int) -> None:
    flags = os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_NOFOLLOW", 0)
    for name in os.listdir(fd):
        if stat.S_ISDIR(os.lstat(name, dir_fd=fd).st_mode):  # a writer's own folder (torch's)
            sub = os.open(name, flags, dir_fd=fd)
            try:
                _empty(sub)
            finally:
                os.close(sub)
            os.rmdir(name, dir_fd=fd)
        else:
            os.unlink(name, dir_fd=fd)


def named(at: Path) -> Path:
    """A `private_folder`'s name (for another process: a path through a descriptor is this one's alone)."""
    return _PRIVATE[at][1]


def through(made: Path) -> Path:
    """The path through its descriptor of the `private_folder` named ``made`` (``made`` if it is none)."""
    return next((at for at, (_, m) in list(_PRIVATE.items()) if m == made), made)  # a copy: other threads add


def let_go(at: Path) -> None:
    """Keep a `private_folder` (renamed into place): `discard_folder` no longer removes it."""
    fd, _ = _PRIVATE.pop(at)
    if fd >= 0:
        os.close(fd)


def shown(path: str) -> str:
    """``path`` as the user knows it: a `private_folder`'s by its name, not its descriptor."""
    for at, (_, made) in list(_PRIVATE.items()):  # a copy: other threads add and remove theirs
        if path == str(at) or path.startswith(f"{at}{os.sep}"):
            return f"{made}{path[len(str(at)) :]}"
    return path


@contextmanager
def renamed_to(tmp: Path, dst: Path) -> Iterator[None]:
    """While the block runs, `final_path` of ``tmp`` is ``dst``."""
    _FINAL[tmp] = dst
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


def final_path(path: Path) -> Path:
    """Where the file being written at ``path`` will be: ``path`` unless it is a temporary of `renamed_to`."""
    return _FINAL.get(path, path)


def final_name(path: Path) -> str:
    """The name the file being written at ``path`` will have (`final_path`'s)."""
    return final_path(path).name

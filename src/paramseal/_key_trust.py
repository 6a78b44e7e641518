"""Who else may read or replace a key file: its mode and owner, and each folder and link its path goes through.

As OpenSSH's StrictModes checks a file it trusts (``safe_path``): the file and every folder up to '/', owned by
the user or root, and not writable by group or others. A link is followed as opening the key follows it: the
folders of the link, of each link it names and of the file at the end can each let another user swap the key.
A sticky folder (/tmp's 1777) lets only an entry's owner (or the folder's) rename it, so there what matters is
that owner. Warnings, not refusals: a key readable by others is used with a warning (README), and so is this.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from .keys import WRITTEN_BY_OTHERS, exposed_to_others, exposure

_MAX_LINKS = 40  # as Linux's ELOOP: a loop of links ends the walk, and opening the key fails on its own


def _walk(path: Path) -> tuple[list[tuple[Path, Path, os.stat_result]], Path | None]:
    """Each entry opening ``path`` goes through, as (its folder, itself, its lstat), links followed; and the file.

    The file is None where the walk ends early: a name not there (``/dev/stdin``'s ``pipe:[N]``) or a loop.
    """
    p = path.absolute()  # not resolve(): '..' after a link is the link target's parent, as the kernel takes it
    folder = Path(p.anchor)
    pending = list(reversed(p.parts[1:]))
    entries: list[tuple[Path, Path, os.stat_result]] = []
    links = 0
    while pending:
        name = pending.pop()
        if name in ("", "."):
            continue
        if name == "..":
            folder = folder.parent
            continue
        entry = folder / name
        try:
            st = os.lstat(entry)
        except OSError:
            return entries, None
        entries.append((folder, entry, st))
        if not stat.S_ISLNK(st.st_mode):
            folder = entry
            continue
        links += 1
        try:
            target = Path(os.readlink(entry))
        except OSError:
            return entries, None
        if links > _MAX_LINKS:
            return entries, None
        if target.is_absolute():
            folder = Path(target.anchor)
        pending.extend(reversed(target.parts[1:] if target.is_absolute() else target.parts))
    return entries, folder


def _someone_else(uid: int) -> str | None:
    """``uid`` in words where it is neither the user running this nor root (who may replace any file anyway)."""
    if not hasattr(os, "geteuid") or uid in (os.geteuid(), 0):
        return None
    try:
        import pwd

        return f"user '{pwd.getpwuid(uid).pw_name}' (uid {uid})"
    except (ImportError, KeyError):
        return f"uid {uid}"


def _me() -> str:
    try:
        import pwd

        return pwd.getpwuid(os.geteuid()).pw_name
    except (ImportError, KeyError):
        return str(os.geteuid())


def key_file_warnings(path: str | os.PathLike[str]) -> list[str]:
    """What lets another user read or replace the key file at ``path``, one warning each; none for a safe key.

    Its mode (read or written by group or others) and owner, then each folder and link on its way from '/'.
    """
    shown = os.fspath(path)
    said: list[str] = []
    if (mode := exposed_to_others(Path(path))) is not None:
        said.append(f"key file '{shown}' is {exposure(mode)} by other users (mode {mode:o}); run 'chmod 600 {shown}'")
    entries, file = _walk(Path(path))
    try:
        st = os.stat(path)
    except OSError:
        st = None
    if st is not None and stat.S_ISREG(st.st_mode) and (who := _someone_else(st.st_uid)):
        said.append(
            f"key file '{shown}' is owned by {who}, another user, who could replace the key or let others read "
            f"it; have it given to you ('chown {_me()} {shown}', as root)"
        )
    seen: set[Path] = set()
    for folder, entry, est in entries:
        where = "is in" if file is not None and folder == file.parent else "is reached through"
        try:
            fmode = os.stat(folder)
        except OSError:
            continue
        open_to_others = bool(stat.S_IMODE(fmode.st_mode) & WRITTEN_BY_OTHERS)
        sticky = bool(fmode.st_mode & stat.S_ISVTX)
        if folder not in seen:
            seen.add(folder)
            if open_to_others and not sticky:
                said.append(
                    f"key file '{shown}' {where} folder '{folder}', which other users can write (mode "
                    f"{stat.S_IMODE(fmode.st_mode):o}): they could replace the key; run 'chmod go-w {folder}'"
                )
            if who := _someone_else(fmode.st_uid):
                said.append(
                    f"key file '{shown}' {where} folder '{folder}', owned by {who}, another user: they could "
                    "replace the key; keep it in a folder of your own"
                )
        # in a sticky folder others may write, a link's owner may replace it (a folder's or the file's: said above)
        if stat.S_ISLNK(est.st_mode) and open_to_others and sticky and (who := _someone_else(est.st_uid)):
            said.append(
                f"key file '{shown}' is reached through link '{entry}', owned by {who}, in folder '{folder}', "
                "which other users can write: they could point it at a key of theirs; keep the key and its links "
                "in a folder of your own"
            )
    return said

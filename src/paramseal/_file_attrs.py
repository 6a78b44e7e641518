"""What a file replaced by an output keeps: its mode, owner, group and extended attributes (ACLs among them).

An output is a new file renamed over the old one (`_paths.atomic_path`), so nothing of the old file's
inode survives unless it is copied: `kept_of` reads it before the new file is written, `give` sets it on
the temporary file before its rename. Where something cannot be kept, access is narrowed, never widened,
and a warning says what was lost. Hard links to the old file keep the old content: `warn_links` says so.
"""

from __future__ import annotations

import errno
import os
import stat
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from ._tempname import shown
from .errors import ParamSealWarning

# Extended attributes that decide who may read the file (POSIX ACLs, NFSv4 ACLs): one not copied must not
# leave the mode's group bits, which an ACL's mask had limited, to grant a group what the ACL denied.
ACCESS_XATTRS = frozenset({"system.posix_acl_access", "system.nfs4_acl", "system.nfs4acl"})
# Not copied: security labels and hashes are set by the kernel for the new file (an SELinux label from its
# folder; an IMA hash of the old content would mark the new content as tampered).
_NOT_COPIED = ("security.",)
_RUN_AS = stat.S_ISUID | stat.S_ISGID


@dataclass(frozen=True)
class Kept:
    """A replaced file's mode, owner, group, extended attributes (None: one that could not be read) and links."""

    mode: int
    uid: int
    gid: int
    xattrs: dict[str, bytes | None] = field(default_factory=dict)
    links: int = 0  # other hard links to it
    inode: int = 0


def kept_of(dst: Path) -> Kept | None:
    """What the regular file at ``dst`` has for its replacement to keep; None if there is none.

    A symbolic link at ``dst`` is replaced, and the file it names stays as it is: the new file is a new one.
    """
    try:
        st = os.lstat(dst)
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    return Kept(stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, _xattrs(dst), st.st_nlink - 1, st.st_ino)


def _xattrs(path: Path) -> dict[str, bytes | None]:
    if not hasattr(os, "listxattr"):  # not Linux: nothing to copy
        return {}
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:  # a file system without extended attributes
        return {}
    out: dict[str, bytes | None] = {}
    for n in names:
        if n.startswith(_NOT_COPIED):
            continue
        try:
            out[n] = os.getxattr(path, n, follow_symlinks=False)
        except OSError:
            out[n] = None  # there but unreadable: copying it fails, and an ACL so lost narrows the mode
    return out


def give(tmp: Path, kept: Kept | None, dst: Path, *, xattrs: bool = True, warn: bool = True) -> None:
    """Set on ``tmp`` (ours, mode 0600 while written) the mode, owner, group and attributes ``dst``'s replacement keeps.

    Owner and group first (only root may give a file away; a user may give it a group they are in), then the
    attributes (an ACL sets the mode's bits as well), the mode last: each step leaves ``tmp`` no more open than
    the final file. ``kept`` None: a new file's mode. ``xattrs`` False: only those that guard access (ONNX
    data files, whose user attributes would describe the model file). ``warn`` False: another call warns.
    All through one descriptor of the file written: by its name, a link put there by whoever else writes the
    folder gave the file it names (/etc/shadow, as root) the old file's owner and mode.
    """
    fd = _written(tmp)
    try:
        _give(fd, kept, dst, xattrs, warn)
    finally:
        os.close(fd)


def open_sole(path: Path, flags: int) -> int | None:
    """``path`` opened with ``flags`` where it is one plain file of its own; None for a link or another file's name.

    Checked through the descriptor: a name checked, then opened, may meanwhile be a link put there by whoever
    else writes its folder, and what is written next (as root) would go to the file it names.
    """
    try:
        fd = os.open(path, flags | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError as e:
        if e.errno != errno.ELOOP:
            raise
        return None
    st = os.fstat(fd)
    if stat.S_ISREG(st.st_mode) and st.st_nlink == 1:
        return fd
    os.close(fd)
    return None


def _written(tmp: Path) -> int:
    """``tmp`` opened, refused where it is no longer a file of its own: a link, or another name of a file."""
    if (fd := open_sole(tmp, os.O_RDONLY)) is not None:
        return fd
    raise OSError(
        0,
        f"its temporary file '{shown(str(tmp))}' was replaced while it was written, by a link or a file with another "
        "name (someone else may write that folder); nothing was written",
        str(tmp),
    )


def _give(fd: int, kept: Kept | None, dst: Path, xattrs: bool, warn: bool) -> None:
    if kept is None:
        from .formats.base import new_mode  # here: the ONNX writer, which formats imports, imports this module

        os.chmod(fd, new_mode())
        return
    mode, lost = kept.mode, []
    if mode & _RUN_AS:  # the new content is no program of the owner's: as a write by anyone but root drops them
        mode &= ~_RUN_AS
        lost.append("its setuid and setgid bits, which a model has no use for")
    st = os.fstat(fd)
    if (st.st_uid, st.st_gid) != (kept.uid, kept.gid):
        for uid in (kept.uid, -1):
            try:
                os.chown(fd, uid, kept.gid)
                break
            except OSError:
                continue
        st = os.fstat(fd)
    if st.st_uid != kept.uid:
        lost.append(f"its owner (uid {kept.uid}; only root may give a file to another user)")
    group_kept = st.st_gid == kept.gid
    if not group_kept:  # the group bits would open the file to another group: they go
        mode &= ~0o070
        lost.append(f"its group (gid {kept.gid}, which you are not in), and with it the group's access")
    failed = []
    for name, value in kept.xattrs.items():
        if not xattrs and name not in ACCESS_XATTRS:
            continue
        if name in ACCESS_XATTRS and not group_kept:
            failed.append(name)  # it would grant its owning group's access to the wrong group
            continue
        try:
            if value is None:
                raise OSError("unreadable")
            if _xattr_or_none(fd, name) != value:  # one the new file has already (inherited) is left
                os.setxattr(fd, name, value)
        except OSError:
            failed.append(name)
    for name in ACCESS_XATTRS - kept.xattrs.keys():  # one inherited from the folder's default ACL, which it lacked
        if _xattr_or_none(fd, name) is not None:
            try:
                os.removexattr(fd, name)
            except OSError:
                failed.append(name)
    if any(n in ACCESS_XATTRS for n in failed):
        mode &= 0o700  # who the ACL let in is unknown here: owner only, never more than the ACL allowed
    if failed:
        lost.append(f"extended attributes {', '.join(failed)}")
    os.chmod(fd, mode)
    if lost and warn:
        warnings.warn(
            f"'{dst}' was replaced without {'; '.join(lost)}: its mode is now {mode:o} (nothing was opened to "
            "more users than before); set them again (chown, chgrp, setfacl) if they are needed",
            ParamSealWarning,
            stacklevel=3,
        )


def _xattr_or_none(fd: int, name: str) -> bytes | None:
    if not hasattr(os, "getxattr"):  # not Linux (macOS: Python has none of the xattr calls): none to read
        return None
    try:
        return os.getxattr(fd, name)
    except OSError:
        return None


def warn_links(dst: Path, kept: Kept | None) -> None:
    """Warn that the other hard links of the file replaced at ``dst`` still hold its old content."""
    if kept is None or kept.links < 1:
        return
    n = kept.links
    warnings.warn(
        f"'{dst}' had {n} other hard link{'s' if n > 1 else ''} (another name for the same file), which still "
        f"hold{'' if n > 1 else 's'} the old content: only this name was given the new file (after recover "
        f"--in-place, a tampered model stays tampered there); find {'them' if n > 1 else 'it'} with 'find "
        f"MOUNTPOINT -xdev -inum {kept.inode}' and link {'each' if n > 1 else 'it'} to the new file (ln -f)",
        ParamSealWarning,
        stacklevel=3,
    )

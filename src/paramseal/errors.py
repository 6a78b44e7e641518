"""Errors raised by ParamSeal.

Every error derives from :class:`ParamSealError` and from the natural built-in
error, so callers can catch either. The CLI catches only these; a real bug keeps
its traceback.
"""

from __future__ import annotations

import errno
import os
import shutil
import unicodedata
from typing import Any

from ._tempname import shown


def one_line(text: str) -> str:
    r"""``text`` with its control and format characters escaped (``\n``, ``\x1b``, ``\u202e``).

    An error or a report quotes names from a file (tensors, members, metadata keys): a newline there split the
    line, and an escape sequence or a bidi override drove the reader's terminal.
    """
    return "".join(
        c.encode("unicode_escape").decode("ascii") if unicodedata.category(c)[0] == "C" or c in "\u2028\u2029" else c
        for c in text
    )


def cut(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters (its end marked ``...``): a length a message or a line can quote."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


class ParamSealError(Exception):
    """Base class for every error ParamSeal raises on purpose."""

    exit_code = 3

    def diagnostics(self) -> str:
        """Return the message a user sees: what went wrong and how to fix it."""
        return str(self)


class ParamSealWarning(UserWarning):
    """A result written as asked, with a weakness its user should know of (a ``warnings`` category).

    The ``paramseal`` program prints each as ``warning: <message>`` on standard error; an API caller
    sees Python's warning, or silences it with ``warnings.filterwarnings("ignore", category=ParamSealWarning)``.
    """


class UsageError(ParamSealError, ValueError):
    """An argument or option cannot be used as given."""


class FormatError(ParamSealError, ValueError):
    """A model file is malformed, truncated, or not in a supported format."""


class UnsupportedError(ParamSealError, TypeError):
    """A tensor or model cannot be sealed (dtype, non-finite values, no capacity)."""


class NonFiniteError(UnsupportedError):
    """A float tensor holds NaN or Inf, whose low bits are not free: seal retries with it sealed as data."""

    def __init__(self, tensor: str) -> None:
        super().__init__(
            f"cannot seal tensor '{tensor}' with watermark bits: it holds NaN or Inf values, whose low bits "
            "are not free (changing them turns Inf into NaN)"
        )
        self.tensor = tensor


class KeyFileError(ParamSealError, ValueError):
    """A key file or PARAMSEAL_KEY value cannot be read."""


class KeyMismatchError(ParamSealError, PermissionError):
    """The key given is not the key the model was sealed with."""

    def __init__(self, stored: str, given: str) -> None:
        self.stored = stored
        self.given = given
        super().__init__(
            f"key does not match: the model was sealed with key fingerprint {stored}, "
            f"but the key given has fingerprint {given}; pass the key used at seal time"
        )


class OutputError(ParamSealError, OSError):
    """An output cannot be written: a folder without write permission, a full disk."""


class InputError(ParamSealError, OSError):
    """An input cannot be read: an I/O error, or a file cut short while it was being read."""


_HINTS = {
    errno.ENOSPC: "the disk is full: free some space or write elsewhere",
    errno.EDQUOT: "the disk quota is used up: free some space or write elsewhere",
    errno.EACCES: "check that the folder is writable by you",
    # EPERM, not EACCES: an immutable or append-only file (chattr +i/+a), or a sticky folder's file of another user
    errno.EPERM: "check that the folder is writable by you, and that the file there is not immutable or append-only "
    "('lsattr'), nor another user's in a sticky folder such as /tmp",
    errno.EROFS: "the file system is read-only: write elsewhere",
    errno.ENOENT: "the folder does not exist, or that file system makes no files there: write elsewhere",
}


def cannot_write(dst: str | os.PathLike[str], e: OSError, *, what: str | None = None) -> OutputError:
    """The error to raise when writing ``dst`` failed with ``e``: the reason, a hint, the free space.

    ``what`` names what could not be written in place of ``'dst'`` (the folder's free space is ``dst``'s).
    """
    why = e.strerror or str(e)
    folder = os.path.dirname(os.path.abspath(dst))
    if e.filename and not _beside(shown(str(e.filename)), folder):  # not dst or its temporary file
        why += f" ('{shown(str(e.filename))}')"
    hint = _HINTS.get(e.errno or 0)
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        free = None
    if hint is None and free is not None and free < 64 << 20:  # e.g. torch.save reports a full disk as a bad position
        hint = f"only {free / 2**20:.1f} MiB are free there: is the disk full?"
    what = what or f"'{dst}'"
    return OutputError(f"cannot write {what}: {why}" + (f"; {hint}" if hint else ""))


def _beside(name: str, folder: str) -> bool:
    """Whether ``name`` is in ``folder``, or in a temporary folder there ('.NAME.XXXXXXXX.tmp', `_tempname`)."""
    at = os.path.dirname(os.path.abspath(name))
    return at == folder or (
        os.path.dirname(at) == folder and os.path.basename(at).startswith(".") and at.endswith(".tmp")
    )


def io_failure(
    dst: str | os.PathLike[str], e: OSError, scratch: str | os.PathLike[str] | None = None
) -> ParamSealError:
    """What an OSError met while making ``dst`` (in ``scratch``, its temporary file or folder) means.

    An error naming another file came from reading an input; any other is a failed write.
    """
    if isinstance(e, ParamSealError):
        return e
    name = None if e.filename is None else os.path.abspath(shown(str(e.filename)))
    ours = [os.path.abspath(shown(str(p))) for p in (dst, scratch) if p is not None]
    if name is not None and not any(name == p or name.startswith(p + os.sep) for p in ours):
        return InputError(f"cannot read '{shown(str(e.filename))}': {e.strerror or e}")
    return cannot_write(dst, e)


class BeyondSealError(UsageError):
    """An authentic seal this version cannot check (its older MAC's tensor past that MAC's counter).

    A refusal of input the tool cannot process (exit 3), not tampering: a sharded verify or recover
    stops with it too, where a shard that cannot be read is a finding of the set's report.
    """


class NotSealedError(ParamSealError, ValueError):
    """The model carries no ParamSeal header."""


class NativeUnavailableError(ParamSealError, RuntimeError):
    """``PARAMSEAL_NATIVE=require``, and the compiled kernels cannot be used here (exit 3, not a traceback)."""


class MissingDependencyError(ParamSealError, ImportError):
    """An optional framework is needed but not installed."""

    def __init__(self, what: str, extra: str) -> None:
        super().__init__(f"{what} needs an optional dependency: pip install 'paramseal[{extra}]'")


class TamperedError(ParamSealError, RuntimeError):
    """Raised by strict helpers when a model does not verify; carries the report."""

    exit_code = 1

    def __init__(self, message: str, report: Any) -> None:
        self.report = report
        super().__init__(message)


class UnrecoverableError(ParamSealError, RuntimeError):
    """Recovery could not restore every tampered parameter; carries the report."""

    exit_code = 2

    def __init__(self, message: str, report: Any) -> None:
        self.report = report
        super().__init__(message)


__all__ = [
    "FormatError",
    "InputError",
    "KeyFileError",
    "KeyMismatchError",
    "MissingDependencyError",
    "NotSealedError",
    "OutputError",
    "ParamSealError",
    "ParamSealWarning",
    "TamperedError",
    "UnrecoverableError",
    "UnsupportedError",
    "UsageError",
]

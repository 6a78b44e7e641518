"""Secret keys: generation, loading, and the subkeys derived from them with HKDF.

A key file holds 32 random bytes as 64 hex digits. The same text can be given in
the ``PARAMSEAL_KEY`` environment variable. The key itself never appears in any
output: reports show only its fingerprint, a one-way HKDF output.
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ._tempname import sync_folder, temp_prefix
from .errors import KeyFileError, UsageError, cannot_write

KEY_BYTES = 32
ENV_VAR = "PARAMSEAL_KEY"
_HKDF_SALT = b"paramseal/v1"
_KEY_FILE_LIMIT = 4096  # bytes read from a key file at most: 64 hex digits and some whitespace fit
#: Half a key's hex digits in a row: a "path" holding them is (most of) a pasted key, never to be quoted.
_KEYISH = re.compile(rf"[0-9a-fA-F]{{{KEY_BYTES},}}")
_KEYISH_DIR = re.compile(r"[0-9a-fA-F]{48,}")
#: Key text in groups (``b010f5bd-735b41d8-...``, ``b0:10:...``) or with a digit or two mistyped: runs of hex digits
#: broken by one or two other characters; three quarters of a key's digits in one such stretch are never quoted.
_HEX_RUN = re.compile(r"[0-9a-fA-F]+")
_GROUPED_DIGITS = 48
_HEX_WORD = re.compile(r"[0-9a-fA-F]{2,}")
#: Separators between groups longer than two characters ('b010f5bd - 735b41d8'): spaces and punctuation alone.
_SEPARATORS = re.compile(r"[\s,.:;_|-]{1,4}")


@dataclass(frozen=True, slots=True)
class Key:
    """A 256-bit ParamSeal key. ``repr`` and ``str`` show its fingerprint, never the secret."""

    secret: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if isinstance(self.secret, str):  # hex text, or a path: never quoted
            raise UsageError(
                "Key takes the secret as bytes, not str: for 64 hex digits use Key.from_text(text), for a key "
                "file paramseal.load_key(path)"
            )
        if not isinstance(self.secret, (bytes, bytearray, memoryview)):
            raise UsageError(f"Key takes the secret as bytes, not {type(self.secret).__name__}")
        if type(self.secret) is not bytes:  # a copy of its own: a bytearray changed later must not change the key
            object.__setattr__(self, "secret", bytes(self.secret))
        if len(self.secret) != KEY_BYTES:
            raise KeyFileError(f"a ParamSeal key is {KEY_BYTES} bytes; got {len(self.secret)} bytes")

    @classmethod
    def generate(cls) -> Key:
        """Return a fresh random key from the operating system's CSPRNG."""
        return cls(secrets.token_bytes(KEY_BYTES))

    @classmethod
    def from_text(cls, text: str, *, source: str = "key") -> Key:
        """Parse 64 hex digits (surrounding whitespace allowed)."""
        t = text.strip()
        if len(t) != 2 * KEY_BYTES:
            raise KeyFileError(
                f"{source} must hold {2 * KEY_BYTES} hex digits; found {len(t)} characters; "
                "create one with 'paramseal keygen KEYFILE'"
            )
        try:
            return cls(bytes.fromhex(t))
        except ValueError:
            raise KeyFileError(f"{source} is not hex; create one with 'paramseal keygen KEYFILE'") from None

    def derive(self, purpose: str, length: int = 32) -> bytes:
        """Derive an independent subkey for one purpose with HKDF-SHA256."""
        return HKDF(algorithm=hashes.SHA256(), length=length, salt=_HKDF_SALT, info=purpose.encode()).derive(
            self.secret
        )

    @property
    def fingerprint(self) -> str:
        """A public 16-hex-digit identifier of the key (HKDF output, not the key)."""
        return self.derive("fingerprint", 8).hex()

    def __str__(self) -> str:
        return f"Key(fingerprint={self.fingerprint})"

    def __repr__(self) -> str:  # in a list or a traceback too: the fingerprint, never the key's bytes
        return str(self)


def write_key(path: str | os.PathLike[str], key: Key, *, overwrite: bool = False) -> Path:
    """Write ``key`` to a new file readable only by its owner."""
    p = Path(path)
    if p.is_dir():  # "it exists ... --force" would point at an option that refuses it too
        raise UsageError(f"cannot write key to '{p}': it is a folder; give a file path, such as '{p / 'my.key'}'")
    if p.is_file() and not p.is_symlink() and p.stat().st_size and not looks_like_key_file(p):  # not a model
        raise UsageError(
            f"cannot write key to '{p}': it exists and holds no ParamSeal key (a model, or another file), which "
            "--force would destroy; choose another path, or remove that file first if it is not needed"
        )
    if p.exists() and not overwrite:
        raise UsageError(
            f"cannot write key to '{p}' because it exists; choose another path, or replace it on purpose "
            "with 'keygen --force' (models sealed with the old key can then no longer be checked)"
        )
    link = f"cannot write key to '{p}': it is a symbolic link; remove it or choose another path"
    if overwrite and p.is_symlink():  # replacing it would leave the file it names; writing through it, worse
        raise UsageError(link)
    if overwrite and p.exists() and not p.is_file():  # a FIFO or a device node: --force means a key file, not it
        raise UsageError(f"cannot write key to '{p}' because it is not a regular file; choose another path")
    # O_EXCL (no overwrite) or a new temporary file renamed over the old key: a failed write
    # leaves no empty key file behind and never destroys the key it was meant to replace
    target = p.parent / f"{temp_prefix(p.name, p.parent)}{secrets.token_hex(4)}.tmp" if overwrite else p
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
    try:
        fd = os.open(target, flags, stat.S_IRUSR | stat.S_IWUSR)
    except OSError as e:
        if p.is_symlink():
            raise UsageError(link) from None
        if e.errno == errno.ENOENT and not p.parent.is_dir():  # as seal says it, not a bare "No such file"
            raise UsageError(f"cannot write key to '{p}': folder '{p.parent}' does not exist") from None
        raise UsageError(f"cannot write key to '{p}': {e.strerror}") from None
    try:
        os.fchmod(fd, stat.S_IRUSR | stat.S_IWUSR)  # whatever the umask
        if overwrite:
            _keep_owner(fd, p)
        with os.fdopen(fd, "w") as f:
            f.write(key.secret.hex() + "\n")
            f.flush()
            os.fsync(f.fileno())
        if overwrite:
            os.replace(target, p)
        sync_folder(p.parent)  # the new key's name too: a key lost in a crash leaves its models unverifiable
    except OSError as e:
        target.unlink(missing_ok=True)
        raise cannot_write(p, e) from None
    return p


def _keep_owner(fd: int, p: Path) -> None:
    """A key replaced (--force) stays its owner's: root's keygen would leave a user without their key.

    Its mode stays 0600 and no ACL or other attribute is copied: only the owner may read a key.
    """
    try:
        old, new = os.lstat(p), os.fstat(fd)
        if (old.st_uid, old.st_gid) != (new.st_uid, new.st_gid):
            os.fchown(fd, old.st_uid, old.st_gid)
    except (OSError, AttributeError):  # no key there any more, not root, or no fchown (Windows): the user's own
        pass


def load_key(path: str | os.PathLike[str] | None = None) -> Key:
    """Load a key from ``path``, or from ``PARAMSEAL_KEY`` when ``path`` is None."""
    if path is None:
        env = os.environ.get(ENV_VAR)
        if not env:
            raise UsageError(
                f"no key given: pass --key KEYFILE or set {ENV_VAR}; create a key with 'paramseal keygen KEYFILE'"
            )
        if not _is_key_text(env) and os.path.isfile(env):  # `PARAMSEAL_KEY=my.key`: "create one" would lose models
            raise KeyFileError(
                f"the {ENV_VAR} variable holds the path of a file ('{env}'), not a key: it takes the key's 64 hex "
                f'digits themselves; pass the key file with --key {env}, or set {ENV_VAR}="$(cat {env})"'
            )
        return Key.from_text(env, source=f"the {ENV_VAR} variable")
    if not isinstance(path, (str, os.PathLike)):  # a Key, or the secret's bytes: never quoted
        hint = " (it is a key already: pass it as it is)" if isinstance(path, Key) else ""
        raise UsageError(f"load_key takes the path of a key file, not {type(path).__name__}{hint}")
    p = Path(path)
    # `--key "$(cat my.key)"`, or a key pasted with "0x", quotes or a digit too few: never to be quoted.
    if _holds_key_text(os.fspath(p)):
        raise KeyFileError(
            "the key was given where the path of a key file belongs (no such file; the text is not shown); "
            f"pass the file 'paramseal keygen' wrote, or put the key in the {ENV_VAR} variable"
        )
    try:
        with p.open("rb") as f:  # bounded: `--key /dev/zero` (or any endless stream) must not read forever
            raw = f.read(_KEY_FILE_LIMIT + 1)
        if len(raw) > _KEY_FILE_LIMIT:
            raise KeyFileError(
                f"'{p}' is not a ParamSeal key file (over {_KEY_FILE_LIMIT} bytes); "
                "pass the file 'paramseal keygen' wrote"
            )
        text = raw.decode("ascii")
    except FileNotFoundError:
        raise KeyFileError(f"key file '{p}' does not exist; create it with 'paramseal keygen {p}'") from None
    except UnicodeDecodeError:  # never quote the bytes: they may be someone's secret
        raise KeyFileError(
            f"'{p}' is not a ParamSeal key file (not text); pass the file 'paramseal keygen' wrote"
        ) from None
    except IsADirectoryError:
        raise KeyFileError(f"key file '{p}' is a folder; pass the file 'paramseal keygen' wrote") from None
    except OSError as e:
        raise KeyFileError(f"cannot read key file '{p}': {e.strerror or e}") from None
    return Key.from_text(text, source=f"key file '{p}'")


def _holds_key_text(value: str) -> bool:
    """Whether a path holds a pasted key, never to be quoted.

    64 hex digits, or a name with half a key's digits in a row (a folder's: 48, ``KEY/x``) that names
    nothing. Where that name exists it is a path: a hub snapshot folder is named by a commit hash.
    """
    if _is_key_text(value) and not os.path.exists(value):
        return True
    parts = Path(value).parts
    prefix = Path()
    for i, part in enumerate(parts):
        prefix /= part
        # a folder: more digits than a 40-digit commit hash, whose snapshot folder may be missing
        keyish = (_KEYISH if i == len(parts) - 1 else _KEYISH_DIR).search(part) or _grouped_key_text(part)
        if keyish and not os.path.exists(prefix):  # False, not ENAMETOOLONG, for a name too long to be a file
            return True
    return False


def _grouped_key_text(text: str) -> list[str]:
    """The stretches of ``text`` that hold a key in groups or mistyped: hex runs apart by 1-2 characters, or 3-4.

    Runs 3 or 4 characters apart only when those are spaces and punctuation ('b010f5bd - 735b41d8'); never '/'.

    One pass over the runs: a regular expression for it backtracks, quadratic in a long name.
    """
    found: list[str] = []
    start = end = digits = 0
    for m in _HEX_RUN.finditer(text):
        gap = text[end : m.start()]
        if not digits or not (1 <= len(gap) <= 2 or _SEPARATORS.fullmatch(gap)) or "/" in gap:
            if digits >= _GROUPED_DIGITS:
                found.append(text[start:end])
            start, digits = m.start(), 0
        end, digits = m.end(), digits + m.end() - m.start()
    if digits >= _GROUPED_DIGITS:
        found.append(text[start:end])
    return found


def _is_key_text(text: str) -> bool:
    """Whether ``text`` is what a key file holds (64 hex digits), so that it is never quoted as a path."""
    t = text.strip()
    return len(t) == 2 * KEY_BYTES and all(c in "0123456789abcdefABCDEF" for c in t)


def key_like_args(args: Iterable[str]) -> tuple[str, ...]:
    """The command-line words that hold key text rather than a path (``--opt=VALUE`` too): never to be quoted.

    The same test `load_key` makes of ``--key``: 64 hex digits, or a name with half a key's
    digits in a row, or three quarters of them in groups, that is no existing file (``paramseal verify
    "$PARAMSEAL_KEY" model``); and words of hex digits in a row that make three quarters of a key (a key
    kept in groups, unquoted). The runs of digits are hidden too: a message may quote the word changed
    (``KEY/`` as the path ``KEY``).
    """
    found: list[str] = []
    run: list[str] = []  # words of hex digits in a row: `--key $KEY` of a key kept in groups splits it
    for a in [*args, ""]:
        value = a.partition("=")[2] if a.startswith("-") else a
        if _HEX_WORD.fullmatch(value) and not os.path.exists(value):
            run.append(value)
        else:
            found += run if sum(map(len, run)) >= _GROUPED_DIGITS else []
            run = []
        if value and _holds_key_text(value):
            grouped = _grouped_key_text(value)
            found += [value, value.strip(), *_KEYISH.findall(value), *grouped]
            found += [w for g in grouped for w in re.findall(r"[0-9a-fA-F]{4,}", g)]  # a message may regroup it
    return tuple(sorted(set(found) - {""}, key=len, reverse=True))


def redact(text: str, hidden: Iterable[str]) -> str:
    """``text`` with each of ``hidden`` (from `key_like_args`) replaced by a placeholder."""
    for h in hidden:
        text = text.replace(h, "<key-like text, not shown>")
    return text


_READ_BY_OTHERS = stat.S_IRGRP | stat.S_IROTH
#: Written by others: whoever may replace the key may seal a model of theirs that then verifies under it.
WRITTEN_BY_OTHERS = stat.S_IWGRP | stat.S_IWOTH


def exposed_to_others(path: Path) -> int | None:
    """The permission bits of a key file that its group or others may read or write, else None."""
    try:
        st = path.stat()
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode):  # a terminal or pipe (`--key /dev/stdin`): its mode says nothing of the key's
        return None
    mode = stat.S_IMODE(st.st_mode)
    return mode if mode & (_READ_BY_OTHERS | WRITTEN_BY_OTHERS) else None


def exposure(mode: int) -> str:
    """What `exposed_to_others`'s ``mode`` lets other users do to a key file, in words."""
    how = [w for bits, w in ((_READ_BY_OTHERS, "readable"), (WRITTEN_BY_OTHERS, "writable")) if mode & bits]
    return " and ".join(how)


def looks_like_key_file(path: Path) -> bool:
    """Whether ``path`` holds what `write_key` writes (64 hex digits), so that it is never read as a model."""
    try:
        st = path.stat()
        if not stat.S_ISREG(st.st_mode) or st.st_size > 4 * KEY_BYTES:  # a FIFO's read would wait for a writer
            return False
        t = path.read_bytes().strip()
    except OSError:
        return False
    return len(t) == 2 * KEY_BYTES and all(c in b"0123456789abcdefABCDEF" for c in t)


def require_key(key: object) -> Key:
    """``key`` if it is a `Key`; else a clear error (a path or the hex text is a common slip)."""
    if not isinstance(key, Key):
        raise UsageError(
            f"the key must be a paramseal.Key, not {type(key).__name__}: load one with paramseal.load_key(path) "
            "(or make one with Key.generate())"
        )
    return key


__all__ = [
    "ENV_VAR",
    "Key",
    "exposed_to_others",
    "exposure",
    "key_like_args",
    "load_key",
    "looks_like_key_file",
    "redact",
    "require_key",
    "write_key",
]

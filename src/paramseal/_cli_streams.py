"""Standard output, standard error and signals while the ``paramseal`` program runs.

Separate from cli.py, which puts them in place: a stream that fails or is closed, a reader that
left, or SIGTERM and SIGHUP must not end the program with Python's exit 1 (the verdict "tampered but
recoverable") or leave a temporary output behind.
"""

from __future__ import annotations

import argparse
import errno
import io
import os
import re
import signal
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from types import FrameType
from typing import IO, Any, cast

from ._held_warnings import show_held
from .errors import ParamSealWarning, one_line
from .keys import Key, redact


def quoted(args: argparse.Namespace, text: object) -> str:
    """``text`` (a path, a pattern: the user's) as an output line quotes it: control characters escaped, key masked.

    As error and warning lines are (`errors.one_line`; ``args.hidden``, the command line's key-like words):
    an escape sequence or a carriage return in a file name drove the terminal, or forged an 'OK:' line.
    """
    return one_line(redact(str(text), getattr(args, "hidden", ())))


def warn(args: argparse.Namespace, message: str) -> None:
    """Print ``warning: <message>`` on stderr, escaped as an error line is: it may quote a path or a tensor name.

    Key text typed as a path is masked as in every other line (``args.hidden``, from `keys.key_like_args`):
    `seal m.pt KEY.pt` wrote the key into the warning that the .pt output keeps its header in one entry.
    """
    print(f"warning: {one_line(redact(message, getattr(args, 'hidden', ())))}", file=sys.stderr)


@dataclass(frozen=True)
class KeyMask:
    """What masks the key in text printed: ``words`` as `redact` does, key ``digits`` in either case of hex digits.

    And the digits of the key ``args`` loaded (``--key FILE`` too), looked up as each text is masked: the key is
    loaded once the command runs. `fixed` is the mask as it stands, for a worker process (it pickles).
    """

    words: tuple[str, ...]
    digits: tuple[str, ...] = ()
    args: argparse.Namespace | None = field(default=None, compare=False)

    def __call__(self, text: str) -> str:
        text = redact(text, self.words)
        for d in self._digits():
            text = re.sub(re.escape(d), "<key-like text, not shown>", text, flags=re.IGNORECASE)
        return text

    def _digits(self) -> tuple[str, ...]:
        loaded = getattr(self.args, "loaded_key", None)
        return (*self.digits, *((loaded.secret.hex(),) if isinstance(loaded, Key) else ()))

    def fixed(self) -> KeyMask:
        """The mask without ``args``: the loaded key's digits taken now."""
        return KeyMask(self.words, self._digits())


# the mask of the warnings_escaped running in this context, for the worker processes a command starts
_MASK: ContextVar[Callable[[str], str] | None] = ContextVar("_MASK", default=None)


@contextmanager
def warnings_escaped(mask: Callable[[str], str]) -> Iterator[None]:
    r"""While a command runs, Python's warnings (numpy's, torch's, the library's own) are ``warning:`` lines.

    Escaped and masked (``mask``: the key-like words hidden) as the program's own warning lines are, and still shown
    where Python's filters show them. Python's handler printed their text raw: it may quote a tensor name or a path,
    so an escape sequence drove the terminal, a '\r' forged a line, key text typed as OUT was shown.
    The worker processes a sharded command starts show theirs so too (`worker_mask`, `worker_streams`).
    """
    show = warnings.showwarning
    warnings.showwarning = _escaped(mask)
    token = _MASK.set(mask)
    try:
        yield
    finally:
        _MASK.reset(token)
        warnings.showwarning = show


# a KeyMask as a worker process is given it: its words and digits (`worker_mask`)
WorkerMask = tuple[tuple[str, ...], tuple[str, ...]]


def worker_mask() -> WorkerMask | None:
    """The mask a worker process started now gives its warnings (`worker_streams`); None outside warnings_escaped.

    A spawned worker starts with Python's own handler, which printed a worker's warnings raw, key text unmasked.
    Plain strings: a KeyMask would load this module (and cryptography) in the worker as it is unpickled, before the
    worker holds the warnings raised as modules load (`_held_warnings`).
    """
    mask = _MASK.get()
    return (mask.words, mask.fixed().digits) if isinstance(mask, KeyMask) else None


def worker_streams(mask: WorkerMask | None) -> None:
    """From now on, this worker process's warnings and standard error are the program's (None: as they were).

    Its warnings are escaped ``warning:`` lines masked by ``mask``, those held as its modules loaded shown so now,
    and its standard error is kept as `stderr_kept` keeps the program's: a worker's failed write of a warning
    (`2>/dev/full`) was an OSError out of its shard's job, the command's 'I/O error', exit 3; with none (`2>&-`),
    print() wrote the warning to standard output instead.
    """
    if mask is not None:
        warnings.showwarning = _escaped(KeyMask(*mask))
        sys.stderr = _kept(sys.stderr)
    show_held(warnings.showwarning)


def show_held_warnings(mask: Callable[[str], str]) -> None:
    """Show the warnings held as the program's modules loaded (`_held_warnings`) as its warning lines."""
    show_held(_escaped(mask))


def _escaped(mask: Callable[[str], str]) -> Callable[..., None]:
    def escaped(
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: IO[str] | None = None,
        line: str | None = None,
    ) -> None:
        # the library's own are said as the program's (`warn`); others with their kind and origin
        said = str(message)
        if not issubclass(category, ParamSealWarning):
            said = f"{category.__name__}: {said} ({filename}:{lineno})"
        stream = sys.stderr if file is None else file
        if stream is not None:  # one write: print's two let a sharded command's workers interleave theirs
            stream.write(f"warning: {one_line(mask(said))}\n")

    return escaped


@contextmanager
def stderr_kept() -> Iterator[None]:
    """While the program runs, a standard error that is closed or fails loses its messages, not the exit code.

    Closed (`2>&-`), Python has none; failing (`2>/dev/full`), a message's write raised OSError out of
    the handler that printed it (or out of a warning): Python's exit 1, the verdict "tampered but
    recoverable", for an intact model or a missing key file too.
    """
    err = sys.stderr
    sys.stderr = _kept(err)
    try:
        yield
    finally:
        sys.stderr.flush()
        sys.stderr = err


def _kept(err: IO[str] | None) -> IO[str]:
    """``err`` (sys.stderr; None: closed) as `stderr_kept` keeps it."""
    if isinstance(err, io.TextIOWrapper):  # a name from the file may hold a lone surrogate: print it escaped
        try:
            err.reconfigure(errors="backslashreplace")
        except OSError:  # it flushes what it holds, into a failing stream: _Stderr says so again below
            pass
    return _Discard() if err is None else cast(IO[str], _Stderr(err))


class _Stderr:
    """``sys.stderr`` whose failing writes are dropped, the stream pointed at /dev/null after the first.

    No io base class: its own isatty() would hide the stream's (the progress bar asks it).
    """

    def __init__(self, stream: Any) -> None:
        self._stream, self._failed = stream, False
        self._quieted = _QUIETED.get()  # a worker thread's progress line may be the write that fails

    def write(self, text: str) -> int:
        if not self._failed:
            try:
                self._stream.write(text)
            except (OSError, ValueError):  # ValueError: a stream closed under us
                self._lost()
        return len(text)

    def flush(self) -> None:
        if not self._failed:
            try:
                self._stream.flush()
            except (OSError, ValueError):
                self._lost()

    def _lost(self) -> None:
        self._failed = True
        _quiet(self._stream, self._quieted)  # flushed there: not at exit, where a failed flush is Python's exit 120

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


class _Discard(io.StringIO):
    """A stream that drops what is written to it (and is no terminal: no progress bar)."""

    def write(self, text: str) -> int:
        return len(text)


class StdoutFailed(OSError):
    """Writing to standard output failed (not a reader that left: that is BrokenPipeError)."""


class Stdout:
    """``sys.stdout`` whose write errors are told apart from the library's own OSErrors (which are bugs).

    No io base class: its own isatty(), fileno() and encoding would hide the stream's.
    """

    def __init__(self, stream: Any, hidden: tuple[str, ...] = ()) -> None:
        self._stream = stream
        self._hidden = hidden  # key text typed as a path: a success line names OUT too (`keygen KEY`)

    def write(self, text: str) -> int:
        self._require_open()
        if self._hidden:
            text = redact(text, self._hidden)
        try:
            return cast(int, self._stream.write(text))
        except BrokenPipeError:
            raise
        except OSError as e:
            raise StdoutFailed(e.errno, e.strerror) from e

    def flush(self) -> None:
        # closed: nothing was written, so nothing is lost. The flush may be another's (a sharded command's pool
        # flushes it as it starts its workers), which would give it as its own failure: 'cannot write OUT'
        if self._stream is None:
            return
        try:
            self._stream.flush()
        except BrokenPipeError:
            raise
        except OSError as e:
            raise StdoutFailed(e.errno, e.strerror) from e

    def _require_open(self) -> None:
        if self._stream is None:  # closed (`>&-`): Python has no sys.stdout at all
            raise StdoutFailed(errno.EBADF, "standard output is closed")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


# the files `_quiet` pointed at /dev/null in this main() call: descriptor -> (a copy of the caller's file, inheritable)
_QUIETED: ContextVar[dict[int, tuple[int, bool]] | None] = ContextVar("_QUIETED", default=None)


@contextmanager
def files_given_back() -> Iterator[None]:
    """The standard output and error files `_quiet` replaced are the caller's own again when main() returns.

    In-process, a stream that failed once (a full disk, an ASCII-only sys.stderr given a non-ASCII
    name) left its descriptor on /dev/null for good: the caller's later messages vanished.
    """
    quieted: dict[int, tuple[int, bool]] = {}
    token = _QUIETED.set(quieted)
    try:
        yield
    finally:
        _QUIETED.reset(token)
        for fd, (mine, inheritable) in quieted.items():
            os.dup2(mine, fd, inheritable=inheritable)
            os.close(mine)


def quiet_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush does not fail again."""
    _quiet(sys.stdout)


def _quiet(stream: Any, quieted: dict[int, tuple[int, bool]] | None = None) -> None:
    """Point ``stream``'s file at /dev/null so that flushing it (at the interpreter's exit too) cannot fail again."""
    if stream is None:  # closed: nothing is flushed at exit
        return
    try:
        fd = stream.fileno()
    except (OSError, ValueError, AttributeError):  # not a file (a test's StringIO): nothing is flushed at exit
        return
    quieted = _QUIETED.get() if quieted is None else quieted
    if quieted is not None and fd not in quieted:
        quieted[fd] = (os.dup(fd), os.get_inheritable(fd))
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, fd)
    os.close(null)
    try:  # what it holds goes to /dev/null now, not to the caller's file once main() gives it back
        stream.flush()
    except (OSError, ValueError):
        pass


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, unwound as Ctrl-C is: the atomic writes delete their temporary files."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def in_out(args: argparse.Namespace) -> str:
    """``IN -> OUT`` as a result line quotes them (`quoted`)."""
    return f"{quoted(args, args.input)} -> {quoted(args, args.output)}"


_STOPPING = tuple(s for s in (signal.SIGTERM, getattr(signal, "SIGHUP", None)) if s is not None)


_ENTRY_DONE = [False]  # set by the program's entry as it puts the default handlers back: its command is done


def entry_done(done: bool) -> None:
    """Tell `raise_terminated` that the program's command is done (True) or about to run (False)."""
    _ENTRY_DONE[0] = done


def raise_terminated(signum: int, frame: FrameType | None) -> None:
    """The SIGTERM and SIGHUP handler: raise `Terminated`, repeats ignored while the first unwinds.

    Once the entry is done, the signal takes its default action instead: it is met as the entry puts
    the defaults back (one signal's, then the other's), outside every try. Holding the signals there
    does not keep it out: sent to the process, it goes to a thread that does not hold them (OpenBLAS's).
    """
    if _ENTRY_DONE[0]:
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)  # held in this thread: taken once the entry lets it through
        return
    for s in _STOPPING:
        if signal.getsignal(s) is raise_terminated:
            signal.signal(s, signal.SIG_IGN)
    raise Terminated(signum)


@contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM and SIGHUP into `Terminated` while the program runs (a signal left ignored stays so).

    Their default action ends the process at once, which left a full-size temporary output
    behind (`kill`, a job scheduler, a closed terminal). The program's entry may have set
    `raise_terminated` already (from start-up on): it is kept, and put back after, unless it ran
    (its repeats ignored): then they stay ignored until the entry, done, puts the defaults back.
    A second `kill` right after the first met it again as the first was reported: a second
    `Terminated`, the entry's 'terminated' printed twice (a SIGHUP after a SIGTERM: exit 129).
    """
    main_thread = threading.current_thread() is threading.main_thread()  # only it may set handlers
    sigs = [s for s in _STOPPING if main_thread]
    ours = (signal.SIG_DFL, raise_terminated)
    old = {s: signal.signal(s, raise_terminated) for s in sigs if signal.getsignal(s) in ours}
    try:
        yield
    finally:
        for s, h in old.items():
            if h is raise_terminated and signal.getsignal(s) is signal.SIG_IGN:  # it ran: the program is stopping
                continue
            signal.signal(s, h)

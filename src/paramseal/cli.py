"""The ``paramseal`` command line: parse, call one library function, print the outcome.

Exit codes: 0 intact (or recovered), 1 tampered but recoverable, 2 tampered and
not fully recoverable, 3 usage error, bad file or wrong key.
"""

from __future__ import annotations

import argparse
import errno
import io
import json
import os
import re
import signal
import sys
import threading
import traceback
import warnings
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, nullcontext, redirect_stdout
from contextvars import ContextVar
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from types import FrameType
from typing import IO, Any, NoReturn, cast

from . import __version__, _cli_eval, _kernels, _pages, _paths, files, sharded
from ._layout import TensorSpec
from .errors import ParamSealError, ParamSealWarning, UsageError
from .keys import Key, exposed_to_others, key_like_args, load_key, redact, write_key
from .levels import BLOCK, FLOATS, LEVELS, max_relative_change
from .report import SEAL_ID, Report, seal_id_arg


def _key_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--key", metavar="KEYFILE", help="key file (default: the PARAMSEAL_KEY variable)")


def _print_json(rep: Report, extra: dict[str, Any] | None = None) -> None:
    """The report's JSON on stdout, streamed: a report of millions of values is never one string."""
    rep.write_json(sys.stdout, extra)
    sys.stdout.write("\n")


def _json_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print a machine-readable JSON report")


def _in_out(p: argparse.ArgumentParser, what_in: str, what_out: str) -> None:
    p.add_argument("input", metavar="IN", help=what_in)
    p.add_argument("output", metavar="OUT", help=what_out)


def _header_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--header-from",
        metavar="FILE",
        help="take the seal header from FILE (a copy of the sealed model, or its header in a .json file) when IN's own "
        "copies were lost or edited; it is authenticated with the key as usual",
    )


_FOLDER_IN_PLACE = "--in-place works for single files only; a sharded checkpoint is written to a new folder"


_SEAL_ID = "seal id: {} (keep it: verify --expect-seal ID refuses any other seal of this model)"


def _expect_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--expect-seal",
        metavar="ID",
        action=_Once,
        help="the seal id the model must carry (seal printed it): another seal of it, such as an older sealed "
        "version put back, is then tampering that cannot be recovered",
    )


def _header(args: argparse.Namespace, key: Key) -> str | None:
    if args.header_from is None:
        return None
    if sharded.is_sharded(Path(args.input)):
        raise UsageError(
            f"--header-from takes one file's header, and each shard of '{args.input}' carries its own: drop "
            "--header-from to check the folder, or give one shard's file as IN with the header kept for it"
        )
    return files.read_header(args.header_from, key)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


class _Parser(argparse.ArgumentParser):
    """argparse exits with 2 on bad usage; 2 means "not fully recoverable" here, so use 3."""

    commands: dict[str, _Parser]  # the top-level parser's, by name
    hidden: tuple[str, ...] = ()  # words of the command line holding key text: argparse would quote them

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # no prefixes: '--in' must not mean --in-place, nor '--forc' --force
        super().__init__(*args, **{**kwargs, "allow_abbrev": False})

    def error(self, message: str) -> NoReturn:
        message = redact(message, self.hidden)
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise _UsageExit(f"{self.prog}: {message}")


class _Once(argparse.Action):
    """An option that takes one value: given again it is refused, where argparse would keep the last silently.

    Two ``--tensors`` read as "check both"; argparse checked only the second and reported it intact.
    """

    def __call__(
        self, parser: argparse.ArgumentParser, ns: argparse.Namespace, value: Any, opt: str | None = None
    ) -> None:
        old = getattr(ns, self.dest)
        if old is not None:
            if self.dest != "tensors":  # a seal id: not quoted, as it is nowhere (see _seal_id_shown)
                parser.error(f"{opt} given twice: a model carries one seal")
            parser.error(
                f"{opt} given twice ('{old}', then '{value}'): it takes one glob; to check tensors that no one "
                "glob matches, run verify once for each"
            )
        setattr(ns, self.dest, value)


class _UsageExit(SystemExit):
    """Bad usage found by argparse: exit 3, with the message kept for a --json document."""

    def __init__(self, message: str) -> None:
        super().__init__(3)
        self.message = message


def _error_doc(exit_code: int, message: str, command: str | None) -> None:
    """A JSON reader gets a document for every outcome, not an empty stdout.

    verify's and recover's carry their ``kind`` as every report of theirs does (attack's ``kind`` is
    the attack's, which an error has not applied).

    A reader that left (`| head`, `| true`) does not turn the error's exit code into a
    BrokenPipeError traceback (exit 1, 'tampered but recoverable') or exit 120.
    """
    if sys.stdout is None:  # closed (`>&-`): no reader to give it to
        return
    doc: dict[str, object] = {"kind": command} if command in ("verify", "recover") else {}
    doc |= {"status": "tampered" if exit_code == 2 else "error", "recoverable": False, "exit_code": exit_code}
    try:
        print(json.dumps({**doc, "error": message}, indent=2))
        sys.stdout.flush()
    except OSError:  # stdout itself failed (a full disk, a reader that left): stderr has the message
        _quiet_stdout()


def _parser() -> _Parser:
    ap = _Parser(
        prog="paramseal",
        description="Keyed fragile watermark for model weights: detect, locate and self-recover tampering.",
        epilog="exit codes: 0 intact/recovered, 1 tampered but recoverable, 2 not fully recoverable, "
        "3 usage error, bad file or wrong key; stopped early: 130 Ctrl-C, 143 SIGTERM, 129 SIGHUP, "
        "141 a reader that left (| head)",
    )
    ap.add_argument("--version", action="version", version=f"paramseal {__version__}")
    sub = ap.add_subparsers(dest="cmd", required=True, metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("keygen", help="create a new random key file")
    p.add_argument("keyfile", metavar="KEYFILE", help="where to write the key (64 hex digits; keep it secret)")
    p.add_argument("--force", action="store_true", help="overwrite an existing file")

    p = sub.add_parser("seal", help="embed the watermark: IN -> OUT")
    _in_out(p, "the model to seal (a file, or a sharded checkpoint folder)", "where to write the sealed model")
    _key_args(p)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--level", choices=LEVELS, default="standard", help="protection level (default: standard)")
    ranges = ", ".join(f"1-{f.mantissa - 1} at {f.name.lower()}" for f in FLOATS.values())
    g.add_argument("--bits", type=int, metavar="K", help=f"low bits per float value instead of a level: {ranges}")
    p.add_argument("--in-place", action="store_true", help="allow OUT to be the IN file")
    p.add_argument(
        "--reseal",
        action="store_true",
        help="seal a model that carries a seal already (after a change you approved): its old seal is replaced",
    )
    p.add_argument(
        "--code",
        choices=("irs", "lanes"),
        help="redundancy code: irs (scattered and contiguous damage; fp32 models) or lanes (contiguous damage; "
        "every dtype); default: irs where it applies",
    )
    p.add_argument(
        "--header-out",
        metavar="FILE.json",
        help="also keep the seal header in FILE.json (no key in it), for --header-from: an .npy file, or a .pt saved "
        "again by torch, keeps only a digest of the sealed metadata (its weight ties) in its weights",
    )

    p = sub.add_parser("verify", help="check a sealed model and locate tampering")
    p.add_argument("input", metavar="IN", help="the sealed model (a file, or a sharded checkpoint folder)")
    _key_args(p)
    _json_arg(p)
    p.add_argument(
        "--tensors",
        metavar="PATTERN",
        action=_Once,
        help="check only tensors whose names match this glob (the others are not read); give it once",
    )
    _header_arg(p)
    _expect_arg(p)

    p = sub.add_parser("recover", help="restore a tampered model bit-exactly: IN -> OUT")
    _in_out(
        p, "the tampered sealed model (a file, or a sharded checkpoint folder)", "where to write the recovered model"
    )
    _key_args(p)
    _json_arg(p)
    p.add_argument("--allow-partial", action="store_true", help="write OUT even if not everything is recovered")
    _header_arg(p)
    _expect_arg(p)
    p.add_argument(
        "--in-place",
        action="store_true",
        help="allow OUT to be the IN file; a safetensors file whose header needs no change gets only its "
        "rebuilt blocks written",
    )

    p = sub.add_parser("inspect", help="show seal settings, perturbation bounds and recovery capacity")
    p.add_argument("input", metavar="IN", help="a model, sealed or not (a file, or a sharded checkpoint folder)")
    _json_arg(p)

    p = sub.add_parser("demo", help="offline demo on a small real model: seal, attack, verify, recover")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="seed of the training and the attacks (default 0)")
    p.add_argument("--keep", metavar="DIR", help="keep the demo files in DIR")
    _cli_eval.add_parsers(sub)
    ap.commands = sub.choices
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (callable from tests)."""
    with _files_given_back(), _stderr_kept():
        return _main(argv)


# path arguments by dest: an empty one ('verify "$MODEL"', MODEL unset) would name the current folder
_PATHS = {
    "input": "IN",
    "output": "OUT",
    "keyfile": "KEYFILE",
    "key": "--key",
    "header_from": "--header-from",
    "header_out": "--header-out",
    "keep": "--keep",
    "out": "--out",
    "docs": "--docs",
}


def _seal_id_shown(hidden: tuple[str, ...], given: str | None) -> tuple[str, ...]:
    """``hidden`` less a well-formed ``--expect-seal`` id: half a key's digits, but ``seal_id`` when it matches.

    Only the model's own id is ever printed (the one given is not quoted), so nothing else of it shows.
    """
    if given is None or not SEAL_ID.fullmatch(given.strip().lower()):
        return hidden
    return tuple(h for h in hidden if h.strip().lower() != given.strip().lower())


def _no_empty_paths(p: _Parser, args: argparse.Namespace) -> None:
    """Refuse an empty path: it reads as '.', and a sealed sharded folder there would verify as IN.

    Also a name longer than the system allows: every look at it (is it a folder?) raises ENAMETOOLONG.
    """
    for dest, name in _PATHS.items():
        value = getattr(args, dest, None)
        if value == "":
            p.error(f"{name} is empty (an unset shell variable?); give a path")
        if isinstance(value, str):
            try:
                os.stat(value)
            except OSError as e:
                if e.errno == errno.ENAMETOOLONG:
                    p.error(f"{name} holds a name longer than this system allows; give a shorter path")


def _main(argv: Sequence[str] | None) -> int:
    if argv is None:  # the paramseal program itself (not a caller's process): no spinning BLAS threads
        _kernels.one_blas_thread()
    ap = _parser()
    # a key pasted where a path or name belongs (`verify "$PARAMSEAL_KEY" model`) is never quoted back
    hidden = key_like_args(str(a) for a in (sys.argv[1:] if argv is None else argv))
    for p in (ap, *ap.commands.values()):
        p.hidden = hidden
    try:
        args, extra = ap.parse_known_args(argv)
        if extra:  # argparse reports these with the top-level usage, which lists none of the command's options
            ap.commands[args.cmd].error(f"unrecognized arguments: {' '.join(extra)}")
        _no_empty_paths(ap.commands[args.cmd], args)
    except _UsageExit as e:
        given = [str(a) for a in (sys.argv[1:] if argv is None else argv)]
        name = next((a for a in given if a in ap.commands), None)
        cmd = None if name is None else ap.commands[name]
        if "--json" in given and (cmd is None or "--json" in cmd._option_string_actions):  # keygen has none
            _error_doc(3, e.message, name)
        raise
    hidden = _seal_id_shown(hidden, getattr(args, "expect_seal", None))
    if isinstance(sys.stdout, io.TextIOWrapper):  # a name from the file may hold a lone surrogate: print it escaped
        sys.stdout.reconfigure(errors="backslashreplace")
    try:
        out = cast(IO[str], _Stdout(sys.stdout, hidden))  # a failing stdout told apart from the library's own OSErrors
        with _terminate_as_interrupt() if argv is None else nullcontext(), redirect_stdout(out):
            code = _run(args)
            sys.stdout.flush()  # here, so a reader that left is met below and not at interpreter exit
        return code
    except _StdoutFailed as e:
        # `verify ... > report.txt` on a full disk: exit 1 (with a traceback) read as "tampered"
        print(f"error: cannot write the output to standard output: {e.strerror or e}", file=sys.stderr)
        _quiet_stdout()
        return 3
    except ParamSealError as e:
        message = redact(e.diagnostics(), hidden)
        print(f"error: {message}", file=sys.stderr)
        if getattr(args, "json", False):
            _error_doc(e.exit_code, message, args.cmd)
        return e.exit_code
    except _Terminated as e:
        print("terminated", file=sys.stderr)
        return 128 + e.signum
    except KeyboardInterrupt:  # Ctrl-C: the atomic writes have cleaned up; a traceback would only alarm
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader left (`paramseal verify ... | head`): stop quietly, as a SIGPIPE'd Unix tool
        # would. Point stdout at /dev/null so the interpreter's final flush does not fail again.
        _quiet_stdout()
        return 128 + 13
    except Exception as e:  # a bug: its traceback is kept, its exit code must not read as a verdict
        return _internal_error(e, args, hidden)


def _internal_error(e: Exception, args: argparse.Namespace, hidden: Iterable[str]) -> int:
    """An exception none of ours: print its traceback (STYLE: a real bug keeps it) and exit 3.

    Python's own exit code for it, 1, is the verdict "tampered but recoverable", which a script
    would act on. The key, from the command line or PARAMSEAL_KEY, is masked in what is printed.
    """
    masked = [*hidden, *key_like_args([os.environ.get("PARAMSEAL_KEY", "")])]
    loaded = getattr(args, "loaded_key", None)  # from --key FILE too, in either case of hex digits
    secret = re.compile(re.escape(loaded.secret.hex()), re.IGNORECASE) if isinstance(loaded, Key) else None

    def mask(text: str) -> str:
        text = redact(text, masked)
        return secret.sub("<key-like text, not shown>", text) if secret is not None else text

    print(mask("".join(traceback.format_exception(e))), file=sys.stderr, end="")
    kinds = ((MemoryError, "out of memory"), (OSError, "I/O error"), (Exception, "internal error"))
    what = next(w for t, w in kinds if isinstance(e, t))
    try:
        said = str(e)
    except Exception:  # a broken __str__ must not turn this into Python's exit 1 after all
        said = "<exception str() failed>"
    message = mask(
        f"{what}, no verdict on the model ({type(e).__name__}: {said}); unless the machine ran out of "
        "memory or a disk failed, this is a bug in ParamSeal: please report it with the traceback above"
    )
    print(f"error: {message}", file=sys.stderr)
    if getattr(args, "json", False):
        _error_doc(3, message, getattr(args, "cmd", None))
    return 3


@contextmanager
def _stderr_kept() -> Iterator[None]:
    """While the program runs, a standard error that is closed or fails loses its messages, not the exit code.

    Closed (`2>&-`), Python has none; failing (`2>/dev/full`), a message's write raised OSError out of
    the handler that printed it (or out of a warning): Python's exit 1, the verdict "tampered but
    recoverable", for an intact model or a missing key file too.
    """
    err = sys.stderr
    if isinstance(err, io.TextIOWrapper):  # a name from the file may hold a lone surrogate: print it escaped
        try:
            err.reconfigure(errors="backslashreplace")
        except OSError:  # it flushes what it holds, into a failing stream: _Stderr says so again below
            pass
    sys.stderr = _Discard() if err is None else cast(IO[str], _Stderr(err))
    try:
        yield
    finally:
        sys.stderr.flush()
        sys.stderr = err


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


class _StdoutFailed(OSError):
    """Writing to standard output failed (not a reader that left: that is BrokenPipeError)."""


class _Stdout:
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
            raise _StdoutFailed(e.errno, e.strerror) from e

    def flush(self) -> None:
        self._require_open()
        try:
            self._stream.flush()
        except BrokenPipeError:
            raise
        except OSError as e:
            raise _StdoutFailed(e.errno, e.strerror) from e

    def _require_open(self) -> None:
        if self._stream is None:  # closed (`>&-`): Python has no sys.stdout at all
            raise _StdoutFailed(errno.EBADF, "standard output is closed")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


# the files `_quiet` pointed at /dev/null in this main() call: descriptor -> (a copy of the caller's file, inheritable)
_QUIETED: ContextVar[dict[int, tuple[int, bool]] | None] = ContextVar("_QUIETED", default=None)


@contextmanager
def _files_given_back() -> Iterator[None]:
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


def _quiet_stdout() -> None:
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


class _Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, unwound as Ctrl-C is: the atomic writes delete their temporary files."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


@contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM and SIGHUP into `_Terminated` while the program runs (a signal left ignored stays so).

    Their default action ends the process at once, which left a full-size temporary output
    behind (`kill`, a job scheduler, a closed terminal). Repeats are ignored while the first unwinds.
    """

    def stop(signum: int, frame: FrameType | None) -> None:
        for s in old:
            signal.signal(s, signal.SIG_IGN)
        raise _Terminated(signum)

    main_thread = threading.current_thread() is threading.main_thread()  # only it may set handlers
    sigs = [s for s in (signal.SIGTERM, getattr(signal, "SIGHUP", None)) if s is not None and main_thread]
    old = {s: signal.signal(s, stop) for s in sigs if signal.getsignal(s) is signal.SIG_DFL}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _run(args: argparse.Namespace) -> int:
    if args.cmd in ("seal", "verify", "recover", "eval", "demo"):
        # before any work: read where scratch is first needed, a bad setting passed an intact verify
        # and failed a recover only after its check (the whole model read)
        _pages.scratch_budget()
    match args.cmd:
        case "keygen":
            key = Key.generate()
            write_key(args.keyfile, key, overwrite=args.force)
            print(f"OK: wrote key {args.keyfile} (fingerprint {key.fingerprint}); keep it secret")
            return 0
        case "seal" if sharded.is_sharded(Path(args.input)):
            if args.in_place and Path(args.output).resolve() != Path(args.input).resolve():
                raise UsageError(_FOLDER_IN_PLACE)  # it was ignored (onto itself, the folder writer says why)
            if args.header_out is not None:
                raise UsageError("--header-out keeps one file's header; the shards of a checkpoint each keep their own")
            key = _load_key(args)
            names = sharded.seal_dir(
                Path(args.input),
                Path(args.output),
                key,
                level=args.level,
                bits=args.bits,
                code=args.code,
                reseal=args.reseal,
            )
            print(f"OK: sealed {len(names)} shard(s) of {args.input} -> {args.output} (each self-contained)")
            print(_SEAL_ID.format(sharded.seal_id(Path(args.output), key)))
            _warn_bits(sharded.float_widths(Path(args.output), names))
            return 0
        case "seal":
            keep = (
                None if args.header_out is None else _paths.check_header_out(args.header_out, args.input, args.output)
            )
            with _library_warnings() as warned:
                sealed = files.seal_file(
                    args.input,
                    args.output,
                    _load_key(args),
                    level=args.level,
                    bits=args.bits,
                    in_place=args.in_place,
                    code=args.code,
                    reseal=args.reseal,
                    header_out=keep,
                )
            h = sealed.header
            ks = sorted({(t.dtype, t.k) for t in h.tensors if t.k})
            desc = ", ".join(f"{dt} k={k}" for dt, k in ks)
            code = "irs" if h.irs else "lanes"
            how = f"level {h.level}" if h.bits is None else f"--bits {h.bits}"
            n = _count(len(h.tensors), "tensor")
            print(f"OK: sealed {args.input} -> {args.output} ({n}, {desc}, {how}, code {code})")
            print(_SEAL_ID.format(h.salt.hex()))
            _warn_bits(ks)
            _note_plain(h.tensors)
            for w in warned:
                print(f"warning: {w}", file=sys.stderr)
            if keep is not None:
                print(f"OK: kept the seal header in {keep} (for --header-from)")
            return 0
        case "verify":
            expect = seal_id_arg(args.expect_seal)
            key = _load_key(args)
            header = _header(args, key)
            if sharded.is_sharded(Path(args.input)):
                rep = sharded.verify_dir(Path(args.input), key, tensors=args.tensors, expect_seal=expect)
            else:
                rep = files.verify_file(args.input, key, tensors=args.tensors, header=header, expect_seal=expect)
            if args.json:
                _print_json(rep)
            elif rep.status == "intact" and rep.partial:
                rest = "the rest was not checked" if rep.checked_blocks != rep.total_blocks else "every tensor matched"
                print(
                    f"OK: the tensors of {args.input} matching '{args.tensors}' are intact ({rep.checked_blocks} of "
                    f"{rep.total_blocks} blocks verified; {rest})"
                )
                if rep.notes:
                    print(rep.summary())
            elif rep.status == "intact":
                print(f"OK: {args.input} is intact ({rep.total_blocks} blocks verified)")
                if rep.notes:
                    print(rep.summary())
            else:
                how = "recoverable: run 'paramseal recover'" if rep.recoverable else "NOT fully recoverable"
                print(f"FAIL: {args.input} was tampered with ({how})\n{rep.summary()}")
            return rep.exit_code
        case "recover":
            expect = seal_id_arg(args.expect_seal)
            key = _load_key(args)
            header = _header(args, key)
            warned = []  # the folder path writes none
            if sharded.is_sharded(Path(args.input)):
                if args.in_place and Path(args.output).resolve() != Path(args.input).resolve():
                    raise UsageError(_FOLDER_IN_PLACE)  # it was ignored (onto itself, the folder writer says why)
                rep = sharded.recover_dir(
                    Path(args.input), Path(args.output), key, allow_partial=args.allow_partial, expect_seal=expect
                )
                output = args.output if rep.written else None
            else:
                with _library_warnings() as warned:  # printed after the verdict, as seal prints its own
                    res = files.recover_file(
                        args.input,
                        args.output,
                        key,
                        allow_partial=args.allow_partial,
                        in_place=args.in_place,
                        header=header,
                        expect_seal=expect,
                    )
                rep, output = res.report, None if res.path is None else str(res.path)
            if args.json:
                # exit 2 is a partial result written (--allow-partial) or nothing: `restored` alone cannot say
                _print_json(rep, {"written": output is not None, "output": output})
            elif rep.status == "intact":
                print(f"OK: {args.input} was intact; written to {args.output}")
                if rep.notes:
                    print(rep.summary())
            elif rep.status == "recovered":
                print(f"OK: recovered {args.input} -> {args.output} ({_what_recover_did(rep)})")
                print(rep.summary())
            else:
                wrote = "nothing written" if output is None else f"partial result written to {args.output}"
                # whole blocks: which of their values changed is unknown, so "lost" would overstate it (a 30%
                # prune is 100% of the values in unrecoverable blocks). None counted: the reason is elsewhere
                # (a graph, a missing shard); the summary says it
                gone = rep.unrecoverable_count
                lost = f"{_count(gone, 'value')} in unrecoverable blocks; " if gone else ""
                print(f"FAIL: {args.input} cannot be fully recovered ({lost}{wrote})\n{rep.summary()}")
            for w in warned:
                print(f"warning: {w}", file=sys.stderr)
            return rep.exit_code
        case "inspect":
            if sharded.is_sharded(Path(args.input)):
                info = sharded.inspect_dir(Path(args.input))
            else:
                info = files.inspect_file(args.input)
            print(json.dumps(info, indent=2) if args.json else _inspect_text(info))
            return 0
        case "demo":
            from .demo import run_demo

            return run_demo(seed=args.seed, keep=args.keep)
        case "attack" | "eval":
            return _cli_eval.run(args)
    raise AssertionError(args.cmd)  # argparse rejects unknown commands


def _what_recover_did(rep: Report) -> str:
    """Values restored and tensors moved back: a swap undone restores no value, but is not "nothing needed"."""
    done = rep.restored_count
    swapped, renamed = len(rep.moved_by("swapped")), len(rep.moved_by("renamed"))
    parts = [f"{_count(done, 'value')} restored"] if done else []
    if swapped:
        parts.append(f"{_count(swapped, 'swapped tensor')} moved back in place")
    if renamed:
        whose = "its sealed name" if renamed == 1 else "their sealed names"
        parts.append(f"{_count(renamed, 'renamed tensor')} written under {whose}")
    # none: only the metadata or a shard index needed fixing; the summary's lines say which
    return ", ".join(parts) or "no value needed restoring"


def _load_key(args: argparse.Namespace) -> Key:
    path = args.key
    key = load_key(path)
    args.loaded_key = key  # masked in an internal error's traceback: a key FILE's digits are in no argument
    if path is not None and (mode := exposed_to_others(Path(path))) is not None:
        print(
            f"warning: key file '{path}' is readable by other users (mode {mode:o}); run 'chmod 600 {path}'",
            file=sys.stderr,
        )
    return key


def _warn_bits(widths: Iterable[tuple[str, int]]) -> None:
    """Warn about each float dtype sealed with more bits than level strong gives it (an explicit --bits)."""
    for dt, k in sorted(set(widths)):
        strong = FLOATS[dt].levels["strong"] if dt in FLOATS else k
        if k > strong:
            print(
                f"warning: k={k} changes {dt} weights by up to {max_relative_change(dt, k):.1e} of their "
                f"magnitude, against {max_relative_change(dt, strong):.1e} at level strong; check the "
                "model's accuracy before you use it",
                file=sys.stderr,
            )


@contextmanager
def _library_warnings() -> Iterator[list[str]]:
    """The library's `ParamSealWarning` messages, kept to print as this program's ``warning:`` lines.

    Not also shown by Python (once, not twice); other warnings are shown as ever.
    """
    kept: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("always", ParamSealWarning)  # each seal's own, though an earlier one said the same
        show = warnings.showwarning

        def keep(message: Warning | str, category: type[Warning], *args: Any, **kw: Any) -> None:
            if issubclass(category, ParamSealWarning):
                kept.append(str(message))
            else:
                show(message, category, *args, **kw)

        warnings.showwarning = keep
        yield kept


def _note_plain(specs: Iterable[TensorSpec]) -> None:
    """Name the float tensors sealed as data because they hold NaN or Inf (smaller ones are data anyway)."""
    plain = [s.name for s in specs if s.dtype in FLOATS and s.k == 0 and s.numel >= BLOCK]
    if plain:
        shown = ", ".join(repr(n) for n in plain[:8]) + (", ..." if len(plain) > 8 else "")
        print(
            f"note: {len(plain)} float tensor(s) hold NaN or Inf values and carry no watermark bits ({shown}); "
            "they are authenticated and recoverable as integer tensors are, and their values are unchanged",
            file=sys.stderr,
        )


FEW_BLOCKS = 64  # below this, inspect warns that its capacity bounds are asymptotic


def _pct(fraction: float) -> str:
    """A bound given to 4 places (inspect's JSON) as a percentage to 1 place, halves rounded up.

    0.4765 (the bound 0.47653) is 47.7, not the 47.6 that formatting the binary float 47.65 gives.
    """
    return str((Decimal(str(fraction)) * 100).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP))


def _seal_fields(seal: dict[str, Any]) -> Iterator[str]:
    """The seal settings as ``name=value``: header copies by tensor name, no bits unless --bits set them."""
    for k, v in seal.items():
        if k == "bits" and v is None:  # the level's own bits: the level says it
            continue
        if k == "level" and seal.get("bits") is not None:  # --bits set them: the header's default level set nothing
            continue
        if k == "header_copies_in_weights" and "header_copies_in_tensors" in seal:
            names = seal["header_copies_in_tensors"]
            if isinstance(names, list) and names:  # as header_in names its tensor
                v = f"{'tensor' if len(names) == 1 else 'tensors'} {' and '.join(map(repr, names))}"
            else:
                v = names or "none"
        elif k == "header_copies_in_tensors":
            continue
        elif k == "set_id" and v is None:  # a sharded folder's: its shards' records name no one set
            v = "none (the shards' set records name no one set; run verify)"
        yield f"{k}={v}"


def _inspect_text(info: dict[str, object]) -> str:
    lines = [
        f"{info['file']}: {_count(cast(int, info['tensors']), 'tensor')}, parameters by dtype {info['parameters']}"
    ]
    blocks = info.get("blocks")
    if isinstance(blocks, int) and blocks < FEW_BLOCKS:
        lines.append(
            f"note: only {blocks} block(s) of 64 values: damage counts in whole blocks and the bounds below hold "
            "for models of many blocks; one damaged block here may be beyond recovery"
        )
    if "shards" in info:
        lines[0] += f", in {info['shards']} shards ({info['sealed_shards']} sealed)"
        odd = info.get("mismatched_shards")
        if isinstance(odd, list) and odd:
            lines.append(f"WARNING: shards sealed differently or not at all: {', '.join(map(str, odd))}")
        if info.get("index_problem"):
            lines.append(f"WARNING: {info['index_problem']}")
        warned = info.get("shard_warnings")
        lines += [f"WARNING: {w}" for w in (warned.values() if isinstance(warned, dict) else ())]
        each = info.get("per_shard")
        seal = info.get("seal")
        if isinstance(each, dict) and isinstance(seal, dict) and seal.get("set_id") is None:
            named = ", ".join(f"{n}: {i['set_id'] or 'none'}" for n, i in each.items() if "set_id" in i)
            lines.append(f"WARNING: the sealed shards' set records (read without the key) name no one set id: {named}")
    if info.get("cannot_seal"):
        lines.append(f"cannot be sealed: {info['cannot_seal']}")
    if info.get("header_problem"):
        lines.append(f"WARNING: {info['header_problem']}")
    seal = info.get("seal")
    if isinstance(seal, dict):
        lines.append("sealed: " + ", ".join(_seal_fields(seal)))
    elif info.get("seal_unreadable"):
        lines.append(f"WARNING: {info['seal_unreadable']}")
        lines.append("no readable seal header; what each level would give a fresh seal:")
    else:
        lines.append("not sealed; what each level would give:")
    levels = info["levels"]
    assert isinstance(levels, dict)
    for lv, caps in levels.items():
        for dt, c in caps.items():
            if c.get("k") and c.get("code") == "irs":
                lines.append(
                    f"  {lv:<9} {dt:<5} k={c['k']:<3} max relative change {c['max_relative_change']:.2e}  code irs: "
                    f"recovers contiguous damage up to {_pct(c['contiguous_bound'])}% and scattered values up to "
                    f"{_pct(c['scattered_radius_per_group'])}% (per-group bounds; see README)"
                )
            elif c.get("k"):
                lines.append(
                    f"  {lv:<9} {dt:<5} k={c['k']:<3} max relative change {c['max_relative_change']:.2e}  code lanes: "
                    f"recovers up to {_pct(c['contiguous_bound'])}% of parameters in tampered blocks "
                    f"(bound; scattered values: under {100 * c['scattered_bound']:.2g}%, where their blocks reach "
                    "the bound; recovery stops short of it)"
                )
            else:
                lines.append(f"  {lv:<9} {dt:<5} {c['note']}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())

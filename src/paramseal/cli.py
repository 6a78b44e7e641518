"""The ``paramseal`` command line: parse, call one library function, print the outcome.

Exit codes: 0 intact (or recovered), 1 tampered but recoverable, 2 tampered and
not fully recoverable, 3 usage error, bad file or wrong key.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import traceback
from collections.abc import Iterable, Sequence
from contextlib import nullcontext, redirect_stdout
from typing import IO, cast

from . import _kernels
from ._cli_commands import run
from ._cli_parser import UsageExit, build_parser, no_empty_paths, seal_id_shown
from ._cli_streams import (
    KeyMask,
    Stdout,
    StdoutFailed,
    Terminated,
    files_given_back,
    quiet_stdout,
    show_held_warnings,
    stderr_kept,
    terminate_as_interrupt,
    warnings_escaped,
)
from ._progress import hiding
from .errors import ParamSealError, one_line
from .keys import key_like_args, redact


def _error_doc(exit_code: int, message: str, command: str | None) -> None:
    """A JSON reader gets a document for every outcome, not an empty stdout.

    keygen's, seal's, verify's and recover's carry their ``kind`` as every report of theirs does (attack's
    ``kind`` is the attack's, which an error has not applied).

    A reader that left (`| head`, `| true`) does not turn the error's exit code into a
    BrokenPipeError traceback (exit 1, 'tampered but recoverable') or exit 120.
    """
    if sys.stdout is None:  # closed (`>&-`): no reader to give it to
        return
    doc: dict[str, object] = {"kind": command} if command in ("keygen", "seal", "verify", "recover") else {}
    doc |= {"status": "tampered" if exit_code == 2 else "error", "recoverable": False, "exit_code": exit_code}
    try:
        print(json.dumps({**doc, "error": message}, indent=2))
        sys.stdout.flush()
    except OSError:  # stdout itself failed (a full disk, a reader that left): stderr has the message
        quiet_stdout()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (callable from tests)."""
    with files_given_back(), stderr_kept():
        return _main(argv)


def _main(argv: Sequence[str] | None) -> int:
    if argv is None:  # the paramseal program itself (not a caller's process): no spinning BLAS threads
        _kernels.one_blas_thread()
    ap = build_parser()
    # a key pasted where a path or name belongs (`verify "$PARAMSEAL_KEY" model`) is never quoted back
    hidden = key_like_args(str(a) for a in (sys.argv[1:] if argv is None else argv))
    show_held_warnings(_masking(None, hidden))  # raised as the program's modules loaded (`__main__.main`)
    for p in (ap, *ap.commands.values()):
        p.hidden = hidden
    try:
        args, extra = ap.parse_known_args(argv)
        if extra:  # argparse reports these with the top-level usage, which lists none of the command's options
            ap.commands[args.cmd].error(f"unrecognized arguments: {' '.join(extra)}")
        no_empty_paths(ap.commands[args.cmd], args)
    except UsageExit as e:
        given = [str(a) for a in (sys.argv[1:] if argv is None else argv)]
        name = next((a for a in given if a in ap.commands), None)
        cmd = None if name is None else ap.commands[name]
        if "--json" in given and (cmd is None or "--json" in cmd._option_string_actions):  # demo and eval have none
            _error_doc(3, e.message, name)
        raise
    except BrokenPipeError:  # `--help | true`: as a reader that left a command's output
        quiet_stdout()
        return 128 + 13
    except OSError as e:  # --help or --version into a failing stdout (`> /dev/full`), raised by _Parser
        print(f"error: cannot write the output to standard output: {e.strerror or e}", file=sys.stderr)
        quiet_stdout()
        return 3
    hidden = seal_id_shown(hidden, getattr(args, "expect_seal", None))
    args.hidden = hidden  # the command's warning lines, on stderr, mask them too
    if isinstance(sys.stdout, io.TextIOWrapper):  # a name from the file may hold a lone surrogate: print it escaped
        sys.stdout.reconfigure(errors="backslashreplace")
    try:
        out = cast(IO[str], Stdout(sys.stdout, hidden))  # a failing stdout told apart from the library's own OSErrors
        mask = _masking(args, hidden)  # progress and warning lines alike (workers' too)
        with (
            terminate_as_interrupt() if argv is None else nullcontext(),
            redirect_stdout(out),
            hiding(mask),
            warnings_escaped(mask),
        ):
            code = run(args)
            sys.stdout.flush()  # here, so a reader that left is met below and not at interpreter exit
        return code
    except StdoutFailed as e:
        # `verify ... > report.txt` on a full disk: exit 1 (with a traceback) read as "tampered"
        print(f"error: cannot write the output to standard output: {e.strerror or e}", file=sys.stderr)
        quiet_stdout()
        return 3
    except ParamSealError as e:
        message = one_line(redact(e.diagnostics(), hidden))
        print(f"error: {message}", file=sys.stderr)
        if getattr(args, "json", False):
            _error_doc(e.exit_code, message, args.cmd)
        return e.exit_code
    except Terminated as e:
        print("terminated", file=sys.stderr)
        return 128 + e.signum
    except KeyboardInterrupt:  # Ctrl-C: the atomic writes have cleaned up; a traceback would only alarm
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader left (`paramseal verify ... | head`): stop quietly, as a SIGPIPE'd Unix tool
        # would. Point stdout at /dev/null so the interpreter's final flush does not fail again.
        quiet_stdout()
        return 128 + 13
    except Exception as e:  # a bug: its traceback is kept, its exit code must not read as a verdict
        return _internal_error(e, args, hidden)


def _masking(args: argparse.Namespace | None, hidden: Iterable[str]) -> KeyMask:
    """What masks the key in text printed: the command line's key-like words, PARAMSEAL_KEY's, a key file's digits.

    The key file's are looked up as each text is masked: the key is loaded once the command runs.
    """
    return KeyMask((*hidden, *key_like_args([os.environ.get("PARAMSEAL_KEY", "")])), args=args)


def _internal_error(e: Exception, args: argparse.Namespace, hidden: Iterable[str]) -> int:
    """An exception none of ours: print its traceback (STYLE: a real bug keeps it) and exit 3.

    Python's own exit code for it, 1, is the verdict "tampered but recoverable", which a script
    would act on. The key, from the command line or PARAMSEAL_KEY, is masked in what is printed.
    """
    mask = _masking(args, hidden)
    # each line escaped as error lines are: the exception may quote a path or a name from the file
    shown = "\n".join(map(one_line, mask("".join(traceback.format_exception(e))).split("\n")))
    print(shown, file=sys.stderr, end="")
    kinds = ((MemoryError, "out of memory"), (OSError, "I/O error"), (Exception, "internal error"))
    what = next(w for t, w in kinds if isinstance(e, t))
    try:
        said = str(e)
    except Exception:  # a broken __str__ must not turn this into Python's exit 1 after all
        said = "<exception str() failed>"
    message = one_line(
        mask(
            f"{what}, no verdict on the model ({type(e).__name__}: {said}); unless the machine ran out of "
            "memory or a disk failed, this is a bug in ParamSeal: please report it with the traceback above"
        )
    )
    print(f"error: {message}", file=sys.stderr)
    if getattr(args, "json", False):
        _error_doc(3, message, getattr(args, "cmd", None))
    return 3


if __name__ == "__main__":
    sys.exit(main())

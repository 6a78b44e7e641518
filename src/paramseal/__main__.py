"""``python -m paramseal`` and the ``paramseal`` command: the CLI, Ctrl-C, SIGTERM and SIGHUP handled from the start."""

import os
import signal
import sys
import threading
import warnings
from types import FrameType


def _say(what: str) -> None:
    try:
        os.write(2, f"{what}\n".encode())
    except OSError:  # a standard error that cannot be written loses the message, not the exit code
        pass


def _interrupted(signum: int, frame: FrameType | None) -> None:
    # Nothing is written yet. A KeyboardInterrupt raised inside an import is not always one when it
    # arrives (numpy reports 'numpy._core.umath failed to import', exit 1, read as "tampered").
    _say("interrupted")
    os._exit(130)


def _terminated(signum: int, frame: FrameType | None) -> None:
    # SIGTERM or SIGHUP while the modules load: nothing is written yet (and raising is unsafe, as above)
    _say("terminated")
    os._exit(128 + signum)


def _standard_fds_open() -> None:
    """Give a closed standard descriptor (``2>&-``) /dev/null, so no file the command opens takes its number.

    Else the next file opened (a model's output) becomes fd 2, and a C-level write to standard error
    (Python's fatal-error report, faulthandler, a library's message) would land in it.
    """
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            os.open(os.devnull, os.O_RDWR)  # the lowest free number: this one, as the lower ones are open


def main() -> int:
    """Run the ``paramseal`` program; Ctrl-C, SIGTERM or SIGHUP while its modules load exit as they do later.

    The handlers are in place before numpy, numba and the formats load (``paramseal`` itself loads
    them lazily), so a `kill` at start-up exits 128 + its number with a message as later, not with
    the signal's own status. `cli.main` then handles Ctrl-C as KeyboardInterrupt and the others as
    `Terminated`, so its outputs are cleaned up.
    """
    _standard_fds_open()
    # an ignored signal stays ignored; only the main thread may set a handler (cli.main runs in any thread)
    main_thread = threading.current_thread() is threading.main_thread()
    mine = main_thread and signal.getsignal(signal.SIGINT) is signal.default_int_handler
    if mine:
        signal.signal(signal.SIGINT, _interrupted)
    stops = [
        s
        for s in (signal.SIGTERM, getattr(signal, "SIGHUP", None))
        if s is not None and main_thread and signal.getsignal(s) is signal.SIG_DFL
    ]
    for s in stops:
        signal.signal(s, _terminated)
    from . import _held_warnings

    _held_warnings.hold()  # a warning raised as they load is shown as a warning line once cli.main masks it
    try:
        from ._cli_streams import Terminated, entry_done, raise_terminated
        from .cli import main as cli_main
    except BaseException:  # they did not load: no cli.main to show what was held
        _held_warnings.stop_holding()
        _held_warnings.show_held(warnings.showwarning)
        raise
    _held_warnings.stop_holding()

    entry_done(False)
    try:
        if mine:  # inside the try: a Ctrl-C at the very next instruction is a KeyboardInterrupt met below
            signal.signal(signal.SIGINT, signal.default_int_handler)
        for s in stops:  # cli.main keeps this handler while it runs
            signal.signal(s, raise_terminated)
        return cli_main()
    except Terminated as e:  # before cli.main handles it (while it builds its parser): nothing written yet
        _say("terminated")
        return 128 + e.signum
    except KeyboardInterrupt:  # likewise
        _say("interrupted")
        return 130
    finally:
        # One arriving between two resets met the other's handler here, a traceback: it now takes its
        # default action (held in this thread while they are put back; the command is done by then).
        entry_done(True)
        held = signal.pthread_sigmask(signal.SIG_BLOCK, stops) if stops and hasattr(signal, "pthread_sigmask") else None
        for s in stops:
            signal.signal(s, signal.SIG_DFL)
        if held is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, held)


if __name__ == "__main__":
    sys.exit(main())

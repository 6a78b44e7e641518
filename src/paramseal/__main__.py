"""``python -m paramseal`` and the ``paramseal`` command: the CLI, with Ctrl-C handled from the start."""

import os
import signal
import sys
import threading
from types import FrameType


def _say_interrupted() -> None:
    try:
        os.write(2, b"interrupted\n")
    except OSError:  # a standard error that cannot be written loses the message, not the exit code
        pass


def _interrupted(signum: int, frame: FrameType | None) -> None:
    # Nothing is written yet. A KeyboardInterrupt raised inside an import is not always one when it
    # arrives (numpy reports 'numpy._core.umath failed to import', exit 1, read as "tampered").
    _say_interrupted()
    os._exit(130)


def main() -> int:
    """Run the ``paramseal`` program; Ctrl-C while its modules load exits 130 as it does later.

    The handler is in place before numpy, numba and the formats load (``paramseal`` itself loads
    them lazily); `cli.main` then handles Ctrl-C as KeyboardInterrupt, so its outputs are cleaned up.
    """
    # an ignored Ctrl-C stays ignored; only the main thread may set a handler (cli.main runs in any thread)
    mine = (
        threading.current_thread() is threading.main_thread()
        and signal.getsignal(signal.SIGINT) is signal.default_int_handler
    )
    if mine:
        signal.signal(signal.SIGINT, _interrupted)
    from .cli import main as cli_main

    try:
        if mine:  # inside the try: a Ctrl-C at the very next instruction is a KeyboardInterrupt met below
            signal.signal(signal.SIGINT, signal.default_int_handler)
        return cli_main()
    except KeyboardInterrupt:  # before cli.main handles it (while it builds its parser): nothing written yet
        _say_interrupted()
        return 130


if __name__ == "__main__":
    sys.exit(main())

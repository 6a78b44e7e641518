"""The program's standard streams in the worker processes a sharded command starts, and while its modules load.

A worker writes its own progress and warning lines to the standard error it inherits: closed (`2>&-`) or failing
(`2>/dev/full`), a sharded command must keep its exit code as the single-file command does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import helpers
import numpy as np
import pytest

import paramseal
from paramseal import files

SHARDS = ["model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors", "model-00003-of-00003.safetensors"]


@pytest.fixture()
def checkpoint(tmp_path: Path) -> Path:
    """Three shards and their index: a sharded command runs a pool of worker processes (`_shard_pool`)."""
    rng = np.random.default_rng(7)
    shards = {s: {f"layers.{i}.w": helpers.random_tensor(rng, np.float32, (64, 64))} for i, s in enumerate(SHARDS)}
    return helpers.write_checkpoint(tmp_path / "ckpt", shards)


@pytest.fixture()
def sealed_ckpt(tmp_path: Path, checkpoint: Path, key_file: Path) -> Path:
    assert helpers.run_cli(["seal", checkpoint, tmp_path / "sealed", "--key", key_file])[0] == 0
    return tmp_path / "sealed"


# The paramseal program, with a pool of two workers whatever the machine's CPUs. A spawned worker imports this file
# (as __mp_main__), so what it patches holds in the workers too: with WARN set, each shard's verify warns there as a
# library the worker calls would (numpy's, torch's), quoting the file it reads.
_PROGRAM = """
import os, sys, warnings
from paramseal import _shard_pool, files

_shard_pool._workers = lambda n: 2
verify_file = files.verify_file

def warned(path, *args, **kw):
    if os.environ.get("WARN"):
        warnings.warn(f"reading \\x1b[2J{path}", UserWarning)
    return verify_file(path, *args, **kw)

files.verify_file = warned
if __name__ == "__main__":
    from paramseal.__main__ import main
    sys.exit(main())
"""


def _program(tmp_path: Path, argv: list[object], redir: str, warn: bool = False) -> subprocess.CompletedProcess[bytes]:
    """Run `_PROGRAM` with ``argv`` and a shell's ``redir`` (`2>&-`, `2>/dev/full`, `>&-`); the rest captured."""
    script = tmp_path / "program.py"
    script.write_text(_PROGRAM)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "WARN": "1" if warn else ""}
    cmd = ["sh", "-c", f'exec "$@" {redir}', "sh", sys.executable, str(script), *map(str, argv)]
    return subprocess.run(cmd, capture_output=True, env=env, timeout=300)


def test_progress_without_a_standard_error_shows_none(
    sealed_file: Path, key: paramseal.Key, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Python gives a closed standard error (`2>&-`) as sys.stderr None: the progress line asked None.isatty()."""
    monkeypatch.setattr(sys, "stderr", None)
    assert files.verify_file(sealed_file, key).status == "intact"


def test_a_sharded_command_with_standard_error_closed_keeps_its_exit_code(
    tmp_path: Path, checkpoint: Path, sealed_ckpt: Path, key_file: Path
) -> None:
    """`2>&-`: each worker's progress line failed (AttributeError), and the command said 'internal error', exit 3."""
    for argv in (
        ["seal", checkpoint, tmp_path / "s2", "--key", key_file],
        ["verify", sealed_ckpt, "--key", key_file],
        ["recover", sealed_ckpt, tmp_path / "r", "--key", key_file],
    ):
        done = _program(tmp_path, argv, "2>&-")
        assert done.returncode == 0 and done.stdout.startswith(b"OK: "), (argv, done.stdout)
    assert sorted(p.name for p in (tmp_path / "r").glob("*.safetensors")) == SHARDS


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_a_workers_warning_on_a_standard_error_that_fails_or_is_closed_keeps_the_exit_code(
    tmp_path: Path, sealed_ckpt: Path, key_file: Path
) -> None:
    """A worker's warning line that could not be written (`2>/dev/full`) was an OSError out of its shard's job: the
    command's 'I/O error', exit 3, for an intact set. With standard error closed (`2>&-`), print() wrote it to
    standard output, where a --json reader found it before the document."""
    shown = tmp_path / "err.txt"
    done = _program(tmp_path, ["verify", sealed_ckpt, "--key", key_file], f"2>{shown}", warn=True)
    assert done.returncode == 0, shown.read_text()  # a terminal would see each shard's warning, escaped
    assert shown.read_text().count("warning: UserWarning: reading \\x1b[2J") == len(SHARDS), shown.read_text()
    for argv in (["verify", sealed_ckpt], ["recover", sealed_ckpt, tmp_path / "r"]):
        done = _program(tmp_path, [*argv, "--key", key_file], "2>/dev/full", warn=True)
        assert done.returncode == 0 and done.stdout.startswith(b"OK: "), (argv, done.stdout)
    assert sorted(p.name for p in (tmp_path / "r").glob("*.safetensors")) == SHARDS
    done = _program(tmp_path, ["verify", sealed_ckpt, "--key", key_file, "--json"], "2>&-", warn=True)
    assert done.returncode == 0 and b"warning" not in done.stdout, done.stdout
    assert json.loads(done.stdout)["status"] == "intact"


# The paramseal program, where cryptography warns as it loads (as it does under a Python or OpenSSL it finds old),
# quoting PARAMSEAL_KEY: in the program itself and in each worker process (which imports this file first).
_LOADING = """
import importlib.abc, os, sys, warnings

class Loading(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "cryptography":
            warnings.warn(f"loading \\x1b[2J\\r{os.environ['PARAMSEAL_KEY']}", UserWarning)
        return None

sys.meta_path.insert(0, Loading())
if __name__ == "__main__":
    from paramseal import _shard_pool
    _shard_pool._workers = lambda n: 2
    from paramseal.__main__ import main
    sys.exit(main())
"""


def test_warnings_raised_as_modules_load_are_escaped_and_masked_warning_lines(
    tmp_path: Path, sealed_ckpt: Path, key: paramseal.Key
) -> None:
    """A warning raised while the program's modules loaded, before its handler was in place, was printed raw by
    Python's: an escape sequence driving the terminal, a '\\r' forging a line, PARAMSEAL_KEY's text shown. So too
    in each worker of a sharded command, which loaded them before it took the program's handler."""
    script = tmp_path / "program.py"
    script.write_text(_LOADING)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "PARAMSEAL_KEY": key.secret.hex()}
    single = sealed_ckpt / SHARDS[0]
    for model, processes in ((single, 1), (sealed_ckpt, 3)):  # sharded: the program and its two workers
        done = subprocess.run(
            [sys.executable, str(script), "verify", str(model)], capture_output=True, env=env, timeout=300
        )
        err = done.stderr.decode()
        assert done.returncode == 0 and "\x1b" not in err and "\r" not in err and key.secret.hex() not in err, err
        line = "warning: UserWarning: loading \\x1b[2J\\r<key-like text, not shown> (" + str(script) + ":7)\n"
        assert err.count(line) == processes and err.count("loading") == processes, (model, err)


def test_a_warning_line_is_one_write_so_that_the_workers_lines_do_not_interleave() -> None:
    """CI saw two workers' warnings on one pipe as 'warning: ...warning: ...\\n\\n': print() wrote each line's text
    and its newline in two writes, and the other worker's text came between them. One write of a short line on a
    pipe is atomic."""
    import io
    import warnings

    from paramseal._cli_streams import worker_streams

    class Writes(io.StringIO):
        def __init__(self) -> None:
            super().__init__()
            self.calls: list[str] = []

        def write(self, text: str) -> int:
            self.calls.append(text)
            return len(text)

    stream, show, err = Writes(), warnings.showwarning, sys.stderr
    try:
        worker_streams((("secret",), ()))
        warnings.showwarning(UserWarning("loading secret\x1b"), UserWarning, "f.py", 7, stream)
    finally:
        warnings.showwarning, sys.stderr = show, err
    assert stream.calls == ["warning: UserWarning: loading <key-like text, not shown>\\x1b (f.py:7)\n"]


def test_a_sharded_seal_or_recover_with_standard_output_closed_writes_its_output_and_says_why_it_failed(
    tmp_path: Path, checkpoint: Path, sealed_ckpt: Path, key_file: Path
) -> None:
    """`>&-`: the pool's start flushed the closed standard output, and the command said 'cannot write OUT: standard
    output is closed', removing OUT, where the single-file command writes OUT and says its standard output failed."""
    for verb, src in (("seal", checkpoint), ("recover", sealed_ckpt)):
        out = tmp_path / f"{verb}-out"
        done = _program(tmp_path, [verb, src, out, "--key", key_file], ">&-")
        assert done.returncode == 3, done.stderr
        assert done.stderr.decode() == "error: cannot write the output to standard output: standard output is closed\n"
        assert helpers.run_cli(["verify", out, "--key", key_file])[0] == 0  # written in full: verify names its seal


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pseudo-terminal")
def test_the_workers_progress_lines_on_a_terminal_are_escaped_and_masked(
    tmp_path: Path, key: paramseal.Key, key_file: Path
) -> None:
    """Each worker of a sharded command draws its own progress line on the terminal it inherits: the tensor names it
    shows are escaped and masked as the program's own progress line does, the key file's digits too."""
    import threading

    names = [f"{key.secret.hex()}.{i}\x1b[2J\r" for i in range(3)]  # key text, an escape sequence, a '\r'
    shards = {s: {n: np.ones((64, 64), np.float32)} for s, n in zip(SHARDS, names, strict=True)}
    helpers.write_checkpoint(tmp_path / "odd", shards)
    assert helpers.run_cli(["seal", tmp_path / "odd", tmp_path / "s", "--key", key_file])[0] == 0
    (tmp_path / "program.py").write_text(_PROGRAM)
    main_fd, tty_fd = os.openpty()
    got: list[bytes] = []

    def read() -> None:  # as the terminal does, so that a full one never stops the program
        while True:
            try:
                chunk = os.read(main_fd, 4096)
            except OSError:  # EIO: every writer closed it
                return
            if not chunk:
                return
            got.append(chunk)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    argv = [sys.executable, str(tmp_path / "program.py"), "verify", str(tmp_path / "s"), "--key", str(key_file)]
    done = subprocess.run(argv, stdout=subprocess.PIPE, stderr=tty_fd, env=env, timeout=300)
    os.close(tty_fd)
    reader.join(30)
    os.close(main_fd)
    shown = b"".join(got).decode()
    assert done.returncode == 0, shown
    assert shown.count("\rverify [") == len(SHARDS), ascii(shown)  # each shard's line, drawn by its worker
    assert shown.count("<key-like text, not shown>.") == len(SHARDS) and "\\x1b[2J\\r" in shown, ascii(shown)
    assert "\x1b" not in shown and key.secret.hex()[:16] not in shown, ascii(shown)


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="reads /proc/self/fd")
def test_a_closed_standard_descriptor_is_not_taken_by_the_files_a_command_opens(tmp_path: Path, key_file: Path) -> None:
    """With 2>&- (or <&-, >&-) the number was free: the next file opened, a model's output among them, took it."""
    model = tmp_path / "m.safetensors"
    helpers.write_st(model, {"w": np.arange(4096, dtype=np.float32)})
    code = (
        "import os, sys\n"
        "from paramseal.__main__ import main\n"
        f"sys.argv = ['paramseal', 'seal', {str(model)!r}, {str(tmp_path / 's.safetensors')!r}, "
        f"'--key', {str(key_file)!r}]\n"
        "rc = main()\n"
        "seen = [os.readlink(f'/proc/self/fd/{fd}') for fd in (0, 1, 2)]\n"
        f"open({str(tmp_path / 'seen.txt')!r}, 'w').write(repr((rc, seen)))\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    cmd = ["sh", "-c", 'exec "$@" <&- 2>&-', "sh", sys.executable, "-c", code]  # stdout kept: it says OK
    subprocess.run(cmd, check=True, timeout=120, env=env, stdout=subprocess.DEVNULL)
    rc, seen = eval((tmp_path / "seen.txt").read_text())  # noqa: S307 - our own repr of an int and strings
    assert rc == 0
    assert (seen[0], seen[2]) == (os.devnull, os.devnull)
    assert files.verify_file(tmp_path / "s.safetensors", paramseal.load_key(key_file)).status == "intact"

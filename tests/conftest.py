"""Fixtures: keys, tiny models and sealed files in a temporary folder; hypothesis profiles."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

sys.path.insert(0, str(Path(__file__).parent))


def _interpret_triton_without_cuda() -> None:
    """Where triton is installed but no CUDA GPU is, run its kernels in triton's interpreter.

    The interpreter executes @triton.jit kernels on CPU tensors with numpy, so the GPU
    verifier's kernel is tested on every machine that has triton (tests/test_gpu_verify.py).
    triton reads the flag when a kernel is defined, so it is set here, before any test module
    imports triton; with a GPU the kernels are compiled and run on it instead. An explicit
    TRITON_INTERPRET in the environment is left as it is.
    """
    if "TRITON_INTERPRET" in os.environ or importlib.util.find_spec("triton") is None:
        return
    if "triton" in sys.modules:  # too late to switch this process to the interpreter
        return
    try:
        import torch
    except ImportError:
        return
    if not torch.cuda.is_available():
        os.environ["TRITON_INTERPRET"] = "1"


_interpret_triton_without_cuda()

import helpers  # noqa: E402

import paramseal  # noqa: E402

# The example database stays off (a seal's salt comes from the test's id and a count, below, so a
# replayed example would not see the salts it failed with) and the budget small (2 shared cores).
# "thorough" is for local runs.
settings.register_profile(
    "default",
    max_examples=25,
    deadline=None,
    database=None,
    derandomize=True,  # the same examples every run: CI results are reproducible
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("thorough", parent=settings.get_profile("default"), max_examples=300, derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

TEST_KEY_HEX = "5ea1" * 16

# Every seal draws a random salt, and the salt sets the interleaving: a test near the code's reach
# could pass for one salt and fail for another (CI failed once so, on 1 salt in 18). So 16-byte draws
# (salts, shard-set ids) come from the test's id and a count: each test sees the same salts every
# run, alone or in the suite. PARAMSEAL_TEST_SALTS=<word> draws another set (to sweep for tests that
# depend on their salts); =random gives os.urandom's own.
_SALTS = os.environ.get("PARAMSEAL_TEST_SALTS", "0")
_real_urandom = os.urandom
_drawn = {"test": "", "n": 0}


def _test_urandom(n: int) -> bytes:
    if n != 16 or _SALTS == "random":
        return _real_urandom(n)
    _drawn["n"] += 1
    return hashlib.sha256(f"{_SALTS}/{_drawn['test']}/{_drawn['n']}".encode()).digest()[:16]


os.urandom = _test_urandom


def others_may_swap(folder: Path) -> Path | None:
    """The first folder from ``folder`` up to '/' that lets another user swap what is in it, as `_key_trust` sees it."""
    for d in [folder, *folder.parents]:
        st = d.stat()
        open_to = st.st_mode & 0o022 and not st.st_mode & 0o1000  # writable by others, and not sticky (/tmp)
        if open_to or st.st_uid not in (os.geteuid(), 0):
            return d
    return None


def pytest_configure(config: pytest.Config) -> None:
    """Keep the tests' temporary root where no other user may swap a key written under it.

    Every key a test writes in tmp_path is reached through the folders above it, which the command line
    checks (`_key_trust`): under a TMPDIR in a folder its group may write (a CI workspace of 2775), each test
    that reads a key's warnings, or a command's whole standard error, failed on a warning about that folder.
    There, /tmp or /var/tmp is taken instead; PYTEST_DEBUG_TEMPROOT or --basetemp, when given, are kept.
    """
    if config.option.basetemp or "PYTEST_DEBUG_TEMPROOT" in os.environ or not hasattr(os, "geteuid"):
        return
    import tempfile

    if others_may_swap(Path(tempfile.gettempdir()).resolve()) is None:
        return
    for root in ("/tmp", "/var/tmp"):
        if Path(root).is_dir() and others_may_swap(Path(root).resolve()) is None:
            os.environ["PYTEST_DEBUG_TEMPROOT"] = root
            return


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    _drawn.update(test=item.nodeid, n=0)  # before the fixtures: a module's sealed model takes its first test's


@pytest.fixture(autouse=True)
def _no_env_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test picks up a PARAMSEAL_KEY from the developer's shell by accident.

    Nor a COLUMNS: argparse wraps its usage lines to it, so a narrow terminal's would split
    the usage the CLI tests read (80 is the width it falls back to without a terminal).
    """
    monkeypatch.delenv("PARAMSEAL_KEY", raising=False)
    monkeypatch.setenv("COLUMNS", "80")


@pytest.fixture(scope="session")
def key() -> paramseal.Key:
    return paramseal.Key(bytes.fromhex(TEST_KEY_HEX))


@pytest.fixture(scope="session")
def other_key() -> paramseal.Key:
    return paramseal.Key(bytes(range(32)))


@pytest.fixture(scope="session")
def model() -> dict[str, np.ndarray]:
    """A few thousand parameters of every supported dtype."""
    return helpers.small_model(0)


@pytest.fixture(scope="session")
def sealed(model: dict[str, np.ndarray], key: paramseal.Key) -> paramseal.SealedModel:
    return paramseal.seal(model, key, metadata={"author": "tests", "license": "apache-2.0"})


@pytest.fixture()
def key_file(tmp_path: Path, key: paramseal.Key) -> Path:
    return paramseal.write_key(tmp_path / "test.key", key)


@pytest.fixture()
def model_file(tmp_path: Path, model: dict[str, np.ndarray]) -> Path:
    return helpers.write_st(tmp_path / "model.safetensors", model, {"author": "tests", "license": "apache-2.0"})


@pytest.fixture()
def sealed_file(tmp_path: Path, model_file: Path, key: paramseal.Key) -> Path:
    from paramseal import files

    out = tmp_path / "sealed.safetensors"
    files.seal_file(model_file, out, key)
    return out

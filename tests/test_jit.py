"""numba on first use (`paramseal._jit`): commands that need no numba kernel never import it."""

from __future__ import annotations

import importlib
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from paramseal import _jit, _native


@pytest.mark.skipif(not _native.available(), reason="compiled kernels not built or no GFNI here")
def test_seal_verify_and_recover_with_the_library_never_import_numba(tmp_path: Path) -> None:
    """Importing numba cost every command about 0.3 s of start-up, for kernels the library replaces."""
    script = textwrap.dedent(
        """
        import sys
        import ml_dtypes, numpy as np, safetensors.numpy as stn
        from paramseal import cli

        rng = np.random.default_rng(0)
        for dt, name in ((np.float32, "f32"), (ml_dtypes.bfloat16, "bf16")):
            m = {"w": (0.02 * rng.standard_normal((512, 512))).astype(dt), "b": np.arange(300, dtype=np.int64)}
            stn.save_file(m, f"{name}.safetensors")
            assert cli.main(["seal", f"{name}.safetensors", f"{name}.s.safetensors", "--key", "k"]) == 0
            assert cli.main(["verify", f"{name}.s.safetensors", "--key", "k"]) == 0
            raw = bytearray(open(f"{name}.s.safetensors", "rb").read())
            raw[-1000] ^= 0x10
            open(f"{name}.t.safetensors", "wb").write(raw)
            assert cli.main(["recover", f"{name}.t.safetensors", f"{name}.r.safetensors", "--key", "k"]) == 0
            assert open(f"{name}.r.safetensors", "rb").read() == open(f"{name}.s.safetensors", "rb").read()
        print("numba" in sys.modules)
        """
    )
    subprocess.run([sys.executable, "-m", "paramseal", "keygen", "k"], cwd=tmp_path, check=True, capture_output=True)
    out = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "False"


def test_a_kernel_calling_another_compiles_with_numbas_prange(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A kernel's module holds `Kernel`s and range until its first call; numba must see its own objects."""
    if not _jit.available():
        pytest.skip("numba is not installed")
    (tmp_path / "jit_probe_mod.py").write_text(
        textwrap.dedent(
            """
            import numpy as np
            from paramseal._jit import njit, prange

            @njit(nogil=True, inline="always")
            def twice(x):
                return 2 * x

            @njit(nogil=True, parallel=True)
            def total(a):
                s = 0
                for i in prange(a.shape[0]):
                    s += twice(a[i])
                return s
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    mod = importlib.import_module("jit_probe_mod")
    assert isinstance(mod.total, _jit.Kernel) and mod.prange is range
    a = np.arange(1000, dtype=np.int64)
    assert mod.total(a) == 2 * int(a.sum())
    import numba

    assert mod.prange is numba.prange  # put in place by the first compile
    assert isinstance(mod.twice, numba.core.dispatcher.Dispatcher)
    assert mod.total.signatures  # the dispatcher's own attribute, through the Kernel


def test_numba_can_be_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARAMSEAL_NO_NUMBA", "1")
    assert not _jit.available()


def test_probing_a_kernel_does_not_import_numba() -> None:
    """inspect and copy ask for dunder attributes: those must not make the dispatcher (and import numba)."""
    script = textwrap.dedent(
        """
        import copy, inspect, sys
        from paramseal import _irs_kernels
        kernels = [v for v in vars(_irs_kernels).values() if type(v).__name__ == "Kernel"]
        assert kernels
        for v in kernels:
            inspect.unwrap(v)
            copy.copy(v)
            assert not hasattr(v, "__wrapped__")
        print("numba" in sys.modules)
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_a_second_thread_does_not_compile_before_the_module_is_rewritten(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """task_map threads call kernels together: one may compile while its module still holds `Kernel`s.

    numba types such a global through the Kernel's forwarded ``_numba_type_``, which waits for the rewrite.
    """
    if not _jit.available():
        pytest.skip("numba is not installed")
    (tmp_path / "jit_race_helper.py").write_text(
        "from paramseal._jit import njit\n\n@njit(nogil=True)\ndef helper(x):\n    return x + 1\n"
    )
    (tmp_path / "jit_race_mod.py").write_text(
        textwrap.dedent(
            """
            from jit_race_helper import helper
            from paramseal._jit import njit

            @njit(nogil=True)
            def inner(x):
                return 2 * x

            @njit(nogil=True)
            def outer(x):
                return inner(x) + helper(x)
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    helper_mod = importlib.import_module("jit_race_helper")
    mod = importlib.import_module("jit_race_mod")
    rewriting = threading.Event()
    slow = helper_mod.helper
    real = slow.dispatcher

    def slow_dispatcher() -> object:  # widens the window of the first thread's module rewrite, once
        if not rewriting.is_set():
            rewriting.set()
            time.sleep(1.0)
        return real()

    monkeypatch.setattr(slow, "dispatcher", slow_dispatcher)
    import numba

    numba.njit(lambda x: x)(1)  # numba's own first-compile set-up (seconds) would hide the window
    got: dict[str, object] = {}

    def call(tag: str) -> None:
        try:
            got[tag] = mod.outer(3)
        except Exception as e:  # a numba TypingError on a `Kernel` global
            got[tag] = e

    first = threading.Thread(target=call, args=("first",))
    first.start()
    assert rewriting.wait(30)
    call("second")
    first.join()
    assert got == {"first": 10, "second": 10}


def test_prange_is_numbas_before_a_kernels_dispatcher_is_visible(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another thread compiles a kernel as soon as its dispatcher is set: prange must be numba's by then.

    Otherwise a parallel kernel compiled in that window loops serially, and cache=True keeps it so.
    """
    if not _jit.available():
        pytest.skip("numba is not installed")
    (tmp_path / "jit_prange_mod.py").write_text(
        textwrap.dedent(
            """
            from paramseal._jit import njit, prange

            @njit(nogil=True, parallel=True)
            def total(a):
                s = 0
                for i in prange(a.shape[0]):
                    s += a[i]
                return s
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    mod = importlib.import_module("jit_prange_mod")
    seen: list[object] = []

    def spy(self: _jit.Kernel, name: str, value: object) -> None:
        if name == "_made" and value is not None:
            seen.append(self.py_func.__globals__["prange"])
        object.__setattr__(self, name, value)

    monkeypatch.setattr(_jit.Kernel, "__setattr__", spy)
    assert mod.total(np.arange(10, dtype=np.int64)) == 45
    import numba

    assert seen == [numba.prange]

"""The public API: ``__all__`` is accurate, the tour in the docstring runs, errors follow the rules."""

from __future__ import annotations
import __future__

import doctest
import inspect
import types

import pytest

import paramseal
from paramseal import errors


def _public_names() -> set[str]:
    return {
        n
        for n, v in vars(paramseal).items()
        if not n.startswith("_") and not isinstance(v, types.ModuleType) and not isinstance(v, __future__._Feature)
    }


def test_all_names_exist() -> None:
    missing = [n for n in paramseal.__all__ if not hasattr(paramseal, n)]
    assert missing == []
    assert len(set(paramseal.__all__)) == len(paramseal.__all__), "duplicates in __all__"


def test_every_public_name_is_in_all() -> None:
    assert _public_names() - set(paramseal.__all__) == set()
    assert set(paramseal.__all__) - {"__version__"} == _public_names()


def test_star_import_gives_exactly_all() -> None:
    ns: dict[str, object] = {}
    exec("from paramseal import *", ns)
    assert set(ns) - {"__builtins__"} == set(paramseal.__all__)


def test_one_call_functions_are_functions_not_submodules() -> None:
    for name in ("seal", "verify", "recover"):
        obj = getattr(paramseal, name)
        assert inspect.isfunction(obj), name
        assert obj.__doc__


def test_every_public_item_has_a_docstring() -> None:
    undocumented = [
        n
        for n in paramseal.__all__
        if not n.startswith("__")
        and not isinstance(getattr(paramseal, n), tuple)
        and not (getattr(paramseal, n).__doc__ or "").strip()
    ]
    assert undocumented == []


def test_module_docstring_example_runs() -> None:
    assert paramseal.__doc__ and ">>>" in paramseal.__doc__
    result = doctest.testmod(paramseal, verbose=False, raise_on_error=False, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 5
    assert result.failed == 0


def test_version_is_a_string() -> None:
    assert isinstance(paramseal.__version__, str) and paramseal.__version__.count(".") >= 1


@pytest.mark.parametrize("name", errors.__all__)
def test_every_error_is_a_paramseal_error_and_a_builtin_error(name: str) -> None:
    cls = getattr(errors, name)
    assert issubclass(cls, errors.ParamSealError)
    if cls is not errors.ParamSealError:
        builtin = [b for b in cls.__mro__ if b.__module__ == "builtins" and b not in (Exception, BaseException, object)]
        assert builtin, f"{name} should also derive from a natural built-in error"
    assert cls.exit_code in (1, 2, 3)


def test_error_diagnostics_is_the_message() -> None:
    e = paramseal.UsageError("cannot use 'x' because it is a symlink")
    assert e.diagnostics() == str(e)


def test_report_and_finding_are_frozen(sealed: paramseal.SealedModel, key: paramseal.Key) -> None:
    r = paramseal.verify(sealed.tensors, key, sealed.header_json)
    with pytest.raises(AttributeError):
        r.status = "intact"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        r.tensors["fc.weight"].tampered_blocks = ()  # type: ignore[misc]


def test_exit_codes_follow_the_table() -> None:
    R = paramseal.Report
    assert R("verify", "intact", True).exit_code == 0
    assert R("recover", "recovered", True).exit_code == 0
    assert R("verify", "tampered", True).exit_code == 1
    assert R("verify", "tampered", False).exit_code == 2
    assert R("recover", "unrecoverable", False).exit_code == 2

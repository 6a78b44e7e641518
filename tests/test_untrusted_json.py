"""JSON read from outside goes through one loader (`paramseal._json`): every failure is a ValueError, never a
RecursionError (Python's parser recurses once per level of nesting) that ends in a traceback."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import helpers
import numpy as np
import pytest

import paramseal
from paramseal import _json, sharded
from paramseal.errors import FormatError
from paramseal.formats import numpy as np_format
from paramseal.formats import safetensors as st_format

DEEP = "[" * 100_000 + "]" * 100_000


@pytest.mark.parametrize("text", [DEEP, DEEP.encode(), '{"a": ' + DEEP + "}"])
def test_json_nested_too_deep_is_a_value_error_saying_so(text: str | bytes) -> None:
    with pytest.raises(ValueError, match="^nested too deep to read$") as e:
        _json.loads(text)
    assert isinstance(e.value, _json.TooDeepError)
    with pytest.raises(_json.TooDeepError):
        _json.raw_decode(f"xx{text if isinstance(text, str) else DEEP}", 2)


@pytest.mark.parametrize("raw", [b'{"a": "\xff"}', b'\xef\xbb\xbf{"a": 1}', '{"a": 1}'.encode("utf-16")])
def test_json_bytes_are_utf8_only(raw: bytes) -> None:
    """No guessing UTF-16 or skipping a byte order mark (json.loads of bytes does both): a ValueError."""
    with pytest.raises(ValueError):
        _json.loads(raw)
    assert _json.loads(b'{"a": "\xc3\xa9"}') == {"a": "\u00e9"}
    assert _json.raw_decode('x{"a": [1]} tail', 1) == ({"a": [1]}, 11)


def test_every_file_format_says_a_json_nested_too_deep_in_the_same_words(tmp_path: Path) -> None:
    """Each said Python's 'maximum recursion depth exceeded while decoding a JSON array from a unicode string'."""
    npz = tmp_path / "m.npz"
    np.savez(npz, w=np.ones(3, np.float32), **{np_format.METADATA_ENTRY: np.array(DEEP)})
    st = helpers.write_st(tmp_path / "m.safetensors", {"w": np.ones(3, np.float32)}, {})
    raw = st.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    head = raw[8 : 8 + n].rstrip(b" ")[:-1] + b',"x":' + DEEP.encode() + b"}"
    st.write_bytes(len(head).to_bytes(8, "little") + head + raw[8 + n :])
    for path in (npz, st):
        with pytest.raises(FormatError, match="nested too deep to read") as e:
            paramseal.formats.adapter_for(path).read(path)
        assert "recursion" not in str(e.value)
    with pytest.raises(FormatError, match=r"invalid JSON: nested too deep to read\)"):
        st_format.read_layout(st)


@pytest.fixture()
def checkpoint(tmp_path: Path) -> Path:
    rng = np.random.default_rng(5)
    shards = {
        f"model-0000{i + 1}-of-00002.safetensors": {f"l{i}.w": helpers.random_tensor(rng, np.float32, (96, 64))}
        for i in range(2)
    }
    return helpers.write_checkpoint(tmp_path / "ckpt", shards, index_metadata={})


@pytest.mark.parametrize("lost", [False, True])
def test_a_set_record_forged_with_the_key_nested_too_deep_is_malformed_not_a_crash(
    tmp_path: Path, checkpoint: Path, key: paramseal.Key, monkeypatch: pytest.MonkeyPatch, lost: bool
) -> None:
    """The set's findings parsed each authentic record with json.loads alone: a RecursionError out of verify_dir."""
    real = sharded._seal_one

    def forged(src: Path, dst: Path, k: paramseal.Key, level: str, bits: int | None, record: str, *rest: Any) -> str:
        return real(src, dst, k, level, bits, DEEP, *rest)

    sealed = tmp_path / "sealed"
    with monkeypatch.context() as m:
        m.setattr(sharded, "_seal_one", forged)
        sharded.seal_dir(checkpoint, sealed, key, workers=1)
    if lost:
        (sealed / sharded.INDEX).unlink()
    rep = sharded.verify_dir(sealed, key, workers=1)
    assert rep.exit_code == 2, rep.summary()
    shards = sorted(p.name for p in checkpoint.glob("*.safetensors"))
    assert all(any(f"shard '{s}' has a malformed set record" in i for i in rep.metadata_issues) for s in shards)
    rep = sharded.recover_dir(sealed, tmp_path / "fixed", key, workers=1)
    assert rep.exit_code == 2 and not rep.written and not (tmp_path / "fixed").exists()

"""The shared format-adapter suite (zarr's ``StoreTests`` pattern): written once, every format subclasses it.

A subclass says which adapter it tests and how to make a file *with the format's own
library* (not the adapter under test), then inherits every test::

    class TestNpzSuite(AdapterTests):
        adapter_name = "npz"
        suffix = ".npz"

        def make_file(self, path, tensors, metadata):
            ...  # write with numpy itself

Capabilities that differ between formats are class attributes, not skips hidden in
tests: ``keeps_metadata`` (the format can hold string metadata), ``keeps_order``
(a written file keeps the tensor order it was given), ``single_tensor`` (the format
holds exactly one array, named ``single_name``) and ``detect_by_content`` (a file is
recognised without its extension).

Every model here is built in ``tmp_path``: tiny checkpoints in fp32, fp16, bf16 and
fp64, each with an int64 and a bool tensor. The flows go through the public file API
(``paramseal.files``) and the CLI (``paramseal.cli.main``) and check ground truth with
byte comparisons (``helpers``), never with the engine's own word.
"""

from __future__ import annotations

import itertools
import json
import shutil
import tempfile
from pathlib import Path
from typing import ClassVar

import helpers
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import paramseal
from paramseal import FormatError, files
from paramseal.formats import GRAPH_KEY, Adapter, Loaded, adapter_for
from paramseal.formats.registry import adapters
from paramseal.levels import FLOATS, dtype_name, max_relative_change, max_subnormal_change

FLOAT_DTYPES = [np.dtype(np.float32), np.dtype(np.float16), helpers.BF16, np.dtype(np.float64)]
ALL_DTYPES = [*FLOAT_DTYPES, np.dtype(np.int64), np.dtype(np.bool_)]
_IDS = {np.dtype(np.float32): "fp32", np.dtype(np.float16): "fp16", helpers.BF16: "bf16",
        np.dtype(np.float64): "fp64", np.dtype(np.int64): "int64", np.dtype(np.bool_): "bool"}  # fmt: skip
_EXAMPLES = itertools.count()
METADATA = {"author": "adapter suite", "license": "apache-2.0", "unicode ✓": "värde"}


def _ids(dts: list[np.dtype]) -> list[str]:
    return [_IDS[d] for d in dts]


class AdapterTests:
    """Every format adapter passes these. Subclasses set the class attributes and ``make_file``."""

    #: Registry name of the adapter under test (``--format`` name).
    adapter_name: ClassVar[str]
    #: File suffix used for files in the tests (one of the adapter's extensions).
    suffix: ClassVar[str]
    #: The format stores string metadata (the seal header travels there; else it lives in the weights).
    keeps_metadata: ClassVar[bool] = True
    #: A file written by the adapter keeps the tensor order it was given.
    keeps_order: ClassVar[bool] = True
    #: The format holds exactly one array, read back under ``single_name``.
    single_tensor: ClassVar[bool] = False
    single_name: ClassVar[str] = "array"
    #: The format is recognised by content alone (no extension needed).
    detect_by_content: ClassVar[bool] = True

    # ------------------------------------------------------------------ hooks

    def make_file(self, path: Path, tensors: dict[str, np.ndarray], metadata: dict[str, str]) -> None:
        """Write ``tensors`` (and ``metadata`` where the format can) with the format's own library."""
        raise NotImplementedError

    def read_native(self, path: Path) -> dict[str, np.ndarray] | None:
        """Read a file with the format's own library (None: the subclass has no independent reader)."""
        return None

    # ------------------------------------------------------------------ fixtures and helpers

    @property
    def adapter(self) -> Adapter:
        return adapter_for(Path("x"), self.adapter_name)

    def path(self, folder: Path, stem: str = "model") -> Path:
        return folder / f"{stem}{self.suffix}"

    def model(self, dtype: np.dtype, seed: int = 0, scale: int = 1) -> dict[str, np.ndarray]:
        """A tiny checkpoint whose float tensors have ``dtype``, plus int64 and bool tensors.

        ``scale`` multiplies the big float tensor (formats without metadata carry the seal
        header in the weights, which needs room: see ``flow_model``).
        """
        rng = np.random.default_rng(seed)
        big = helpers.random_tensor(rng, dtype, (96 * scale, 64))
        if self.single_tensor:
            return {self.single_name: big}
        return {
            "embed.weight": big,
            "layers.0.fc.weight": helpers.random_tensor(rng, dtype, (64, 64)),
            "layers.0.fc.bias": helpers.random_tensor(rng, dtype, (64,)),
            "norm.weight": helpers.random_tensor(rng, dtype, (64,)),
            "position_ids": np.arange(40, dtype=np.int64).reshape(1, 40),
            "attention_mask": helpers.random_tensor(rng, np.bool_, (3, 11)),
        }

    def flow_model(self, dtype: np.dtype) -> dict[str, np.ndarray]:
        """A model big enough for the seal flow: the header copy in the weights takes at most 2% of blocks."""
        if self.keeps_metadata:
            return self.model(dtype)
        # Storage bytes per block after the 4-byte tag (standard level): fp64 124, fp32 60, fp16 12, bf16 4;
        # a ~1 KB header then needs about 10k, 100k, 300k and 900k values (measured: 4, 16, 48, 144 below).
        scale = {8: 8, 4: 24, 2: 160 if dtype == helpers.BF16 else 64}[np.dtype(dtype).itemsize]
        return self.model(dtype, scale=scale)

    def one(self, dtype: np.dtype, shape: tuple[int, ...] = (300,), *, wild: bool = True) -> dict[str, np.ndarray]:
        """One tensor of ``dtype`` (every finite bit pattern when ``wild``), named as the format requires."""
        rng = np.random.default_rng(7)
        return {self.single_name if self.single_tensor else "t": helpers.random_tensor(rng, dtype, shape, wild=wild)}

    def expected_metadata(self, metadata: dict[str, str]) -> dict[str, str]:
        return dict(metadata) if self.keeps_metadata else {}

    def write_native(self, folder: Path, tensors: dict[str, np.ndarray], stem: str = "model") -> Path:
        p = self.path(folder, stem)
        self.make_file(p, tensors, METADATA if self.keeps_metadata else {})
        return p

    # ------------------------------------------------------------------ registry and detection

    def test_is_a_registered_adapter_chosen_by_name_and_extension(self, tmp_path: Path) -> None:
        a = self.adapter
        assert isinstance(a, Adapter)
        assert a.name == self.adapter_name
        assert self.suffix in a.extensions
        assert a.name in [x.name for x in adapters()]
        assert adapter_for(self.path(tmp_path), must_exist=False).name == self.adapter_name
        assert adapter_for(tmp_path / f"MODEL{self.suffix.upper()}", must_exist=False).name == self.adapter_name

    def test_detected_by_content_alone_and_by_no_other_adapter(self, tmp_path: Path) -> None:
        if not self.detect_by_content:
            pytest.skip(f"{self.adapter_name} files have no signature to recognise")
        p = self.write_native(tmp_path, self.model(np.dtype(np.float32)))
        head = p.read_bytes()[:4096]
        assert [a.name for a in adapters() if a.sniff(head)] == [self.adapter_name]
        for ext in ("", ".weights", ".bin"):
            q = tmp_path / f"renamed{ext}"
            shutil.copyfile(p, q)
            assert adapter_for(q).name == self.adapter_name, ext
        assert not self.adapter.sniff(b"")
        assert not self.adapter.sniff(bytes(range(256)))

    # ------------------------------------------------------------------ reading and writing

    @pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=_ids(FLOAT_DTYPES))
    def test_reads_a_file_written_by_the_format_library_bit_exactly(self, tmp_path: Path, dtype: np.dtype) -> None:
        m = self.model(dtype)
        p = self.write_native(tmp_path, m)
        got = self.adapter.read(p)
        helpers.assert_model_equal(got.tensors, m)
        if self.keeps_order:
            assert list(got.tensors) == list(m)
        assert got.metadata == self.expected_metadata(METADATA)

    @pytest.mark.parametrize("dtype", ALL_DTYPES, ids=_ids(ALL_DTYPES))
    def test_write_read_round_trip_keeps_every_bit_pattern(self, tmp_path: Path, dtype: np.dtype) -> None:
        """Subnormals, -0.0, the largest finite values, every mantissa pattern: bytes in == bytes out."""
        m = self.one(dtype, (7, 33))
        if np.dtype(dtype) in FLOAT_DTYPES:
            flat = m[next(iter(m))].reshape(-1)
            flat[:4] = np.array([-0.0, 0.0, np.finfo(np.float16).max, -np.finfo(np.float16).tiny]).astype(dtype)
        p = self.path(tmp_path)
        self.adapter.write(p, Loaded(m))
        got = self.adapter.read(p)
        helpers.assert_model_equal(got.tensors, m)
        native = self.read_native(p)
        if native is not None:
            helpers.assert_model_equal(native, m)

    # Every subclass runs this one method (hypothesis calls that "differing executors"); the example
    # database is off (conftest), so nothing is replayed across formats.
    @settings(suppress_health_check=[*settings().suppress_health_check, HealthCheck.differing_executors])
    @given(data=st.data())
    def test_round_trip_property_any_dtypes_shapes_and_bits(self, data: st.DataObject) -> None:
        """Property: whatever tensors (dtype, shape incl. 0-d and empty, bit patterns), write then read is exact."""
        n = 1 if self.single_tensor else data.draw(st.integers(1, 4), label="tensors")
        tag = next(_EXAMPLES)  # fresh names per example: an adapter may remember graphs by their tensor names
        m = {}
        for i in range(n):
            dt = data.draw(st.sampled_from(ALL_DTYPES), label="dtype")
            shape = tuple(data.draw(st.lists(st.integers(0, 5), max_size=3), label="shape"))
            seed = data.draw(st.integers(0, 2**32 - 1), label="seed")
            name = self.single_name if self.single_tensor else f"ex{tag}.t{i}.weight"
            m[name] = helpers.random_tensor(np.random.default_rng(seed), dt, shape, wild=True)
        with tempfile.TemporaryDirectory() as d:
            p = self.path(Path(d))
            self.adapter.write(p, Loaded(m))
            got = self.adapter.read(p)
        helpers.assert_model_equal(got.tensors, m)
        if self.keeps_order:
            assert list(got.tensors) == list(m)

    def test_scalar_and_empty_tensors_keep_their_shapes(self, tmp_path: Path) -> None:
        if self.single_tensor:
            cases = [{self.single_name: np.array(1.5, np.float32)}, {self.single_name: np.zeros((0, 3), np.float16)}]
        else:
            cases = [{"w": np.ones((2, 3), np.float32), "scalar": np.array(1.5, np.float32),
                      "empty": np.zeros((0, 3), np.float16), "one": np.array([7], np.int64)}]  # fmt: skip
        for i, m in enumerate(cases):
            p = self.path(tmp_path, f"m{i}")
            self.adapter.write(p, Loaded(m))
            helpers.assert_model_equal(self.adapter.read(p).tensors, m)

    def test_tensor_names_and_order_are_kept(self, tmp_path: Path) -> None:
        if self.single_tensor:
            pytest.skip("a single-array format has one fixed name")
        rng = np.random.default_rng(1)
        names = ["z.last", "a.first", "layers.10.w", "layers.2.w", "model.embed_tokens.weight", "ß.unicode"]
        m = {n: helpers.random_tensor(rng, np.float32, (5, 3)) for n in names}
        p = self.path(tmp_path)
        self.adapter.write(p, Loaded(m))
        got = self.adapter.read(p)
        helpers.assert_model_equal(got.tensors, m)
        if self.keeps_order:
            assert list(got.tensors) == names
        native = self.read_native(p)
        if native is not None:
            assert set(native) == set(names), "the written file has extra or missing entries"

    def test_metadata_is_kept_where_the_format_can_hold_it(self, tmp_path: Path) -> None:
        m = self.model(np.dtype(np.float32))
        p = self.path(tmp_path)
        self.adapter.write(p, Loaded(m, dict(METADATA)))
        got = self.adapter.read(p)
        assert got.metadata == self.expected_metadata(METADATA)
        assert list(got.tensors) == list(m) if self.keeps_order else set(got.tensors) == set(m)
        native = self.read_native(p)
        if native is not None:  # metadata never appears as an extra tensor
            assert set(native) == set(m)

    def test_reading_garbage_is_a_format_error_naming_the_file(self, tmp_path: Path) -> None:
        p = self.path(tmp_path, "garbage")
        p.write_bytes(bytes(range(256)) * 4)
        with pytest.raises(FormatError) as ei:
            self.adapter.read(p)
        assert "garbage" in str(ei.value)

    # ------------------------------------------------------------------ seal flows

    @pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=_ids(FLOAT_DTYPES))
    def test_seal_verify_tamper_locate_recover_through_the_file_api(
        self, tmp_path: Path, key: paramseal.Key, dtype: np.dtype
    ) -> None:
        m = self.flow_model(dtype)
        src = self.write_native(tmp_path, m, "original")
        src_hash = helpers.sha256(src)
        out = self.path(tmp_path, "sealed")
        files.seal_file(src, out, key)
        assert helpers.sha256(src) == src_hash, "seal modified its input"
        sealed = self.adapter.read(out)
        # a format with a graph seals its digest too (GRAPH_KEY), so that editing the graph is tampering
        assert (GRAPH_KEY in sealed.metadata) == (sealed.graph is not None)
        assert {k: v for k, v in sealed.metadata.items() if k != GRAPH_KEY} == self.expected_metadata(METADATA) | (
            {"paramseal": sealed.metadata.get("paramseal", "")} if self.keeps_metadata else {}
        )
        assert list(sealed.tensors) == list(m) if self.keeps_order else set(sealed.tensors) == set(m)
        _assert_within_bound(sealed.tensors, m)
        assert files.verify_file(out, key).status == "intact"

        # one flip of the top mantissa bit (a data bit, never a watermark bit) of one value
        name = next(iter(m))
        idx = m[name].size // 2
        bit = FLOATS[dtype_name(dtype)].mantissa - 1
        tampered = helpers.flip_bit(sealed.tensors, name, idx, bit)
        bad = self.path(tmp_path, "tampered")
        self.make_file(bad, tampered, dict(sealed.metadata))
        bad_hash = helpers.sha256(bad)
        rep = files.verify_file(bad, key)
        assert (rep.status, rep.recoverable, rep.exit_code) == ("tampered", True, 1)
        assert rep.tampered_tensors == [name]
        assert rep.tensors[name].tampered_blocks == (idx // helpers.BLOCK,)

        fixed = self.path(tmp_path, "fixed")
        res = files.recover_file(bad, fixed, key)
        assert res.report.status == "recovered"
        assert res.report.tensors[name].restored_indices == (idx,)
        assert res.report.tensors[name].restored_xor == (1 << bit,)
        assert helpers.sha256(bad) == bad_hash, "recover modified its input"
        helpers.assert_model_equal(self.adapter.read(fixed).tensors, sealed.tensors)
        assert files.verify_file(fixed, key).status == "intact"

    @pytest.mark.parametrize("dtype", [np.dtype(np.float32), helpers.BF16], ids=["fp32", "bf16"])
    def test_seal_verify_tamper_recover_through_the_cli(self, tmp_path: Path, key_file: Path, dtype: np.dtype) -> None:
        m = self.flow_model(dtype)
        src = self.write_native(tmp_path, m, "original")
        src_hash = helpers.sha256(src)
        sealed, bad, fixed = (self.path(tmp_path, s) for s in ("sealed", "tampered", "fixed"))

        rc, out, err = helpers.run_cli(["seal", src, sealed, "--key", key_file])
        assert rc == 0, err
        assert out.startswith("OK: sealed")
        rc, out, err = helpers.run_cli(["verify", sealed, "--key", key_file])
        assert rc == 0 and "intact" in out, (out, err)
        rc, out, err = helpers.run_cli(["inspect", sealed, "--json"])
        assert rc == 0, (out, err)
        if self.keeps_metadata:  # inspect (no key) reads the header from the metadata only, for now
            assert json.loads(out)["sealed"] is True, out

        loaded = self.adapter.read(sealed)
        name = next(iter(m))
        tampered = helpers.flip_bit(loaded.tensors, name, 3, FLOATS[dtype_name(dtype)].mantissa - 1)
        self.make_file(bad, tampered, dict(loaded.metadata))
        rc, out, err = helpers.run_cli(["verify", bad, "--key", key_file, "--json"])
        assert rc == 1, (out, err)
        rep = json.loads(out)
        assert rep["status"] == "tampered" and rep["tampered_tensors"] == [name]
        assert rep["tensors"][name]["tampered_blocks"] == [0]

        rc, out, err = helpers.run_cli(["recover", bad, fixed, "--key", key_file, "--json"])
        assert rc == 0, (out, err)
        assert json.loads(out)["tensors"][name]["restored"]["indices"] == [3]
        helpers.assert_model_equal(self.adapter.read(fixed).tensors, loaded.tensors)
        rc, out, err = helpers.run_cli(["verify", fixed, "--key", key_file])
        assert rc == 0, (out, err)
        assert helpers.sha256(src) == src_hash, "the CLI modified its input"

    def test_bit_flip_in_the_file_bytes_is_located_and_recovered(self, tmp_path: Path, key_file: Path) -> None:
        """A bit flipped on disk (Rowhammer, bad sector) inside tensor data is tampering, not a malformed file."""
        m = self.flow_model(np.dtype(np.float32))
        src = self.write_native(tmp_path, m, "original")
        sealed = self.path(tmp_path, "sealed")
        rc, _, err = helpers.run_cli(["seal", src, sealed, "--key", key_file])
        assert rc == 0, err
        name = next(iter(m))
        data = self.adapter.read(sealed).tensors[name]
        raw = bytearray(sealed.read_bytes())
        pos = raw.find(data.reshape(-1)[1000:1016].tobytes())
        if pos < 0 or raw.find(data.reshape(-1)[1000:1016].tobytes(), pos + 1) >= 0:
            pytest.skip(f"{self.adapter_name} does not store this tensor's bytes raw and uniquely")
        raw[pos + 3] ^= 0x10  # value 1000, an exponent bit
        bad = self.path(tmp_path, "flipped")
        bad.write_bytes(bytes(raw))
        rc, out, err = helpers.run_cli(["verify", bad, "--key", key_file, "--json"])
        assert rc == 1, (out, err)
        assert json.loads(out)["tensors"][name]["tampered_blocks"] == [1000 // helpers.BLOCK]
        fixed = self.path(tmp_path, "fixed")
        rc, _, err = helpers.run_cli(["recover", bad, fixed, "--key", key_file])
        assert rc == 0, err
        helpers.assert_model_equal(self.adapter.read(fixed).tensors, self.adapter.read(sealed).tensors)

    def test_sealing_a_model_too_small_for_the_header_in_its_weights_is_refused(
        self, tmp_path: Path, key_file: Path
    ) -> None:
        """Without metadata the header lives in the weights only; a model without room for it is not written."""
        if self.keeps_metadata:
            pytest.skip("the header travels in the metadata")
        src = self.write_native(tmp_path, self.model(np.dtype(np.float32)), "tiny")
        out = self.path(tmp_path, "sealed")
        before = helpers.listing(tmp_path)
        rc, stdout, stderr = helpers.run_cli(["seal", src, out, "--key", key_file])
        assert rc == 3 and "too small to carry its seal header" in stderr and ".safetensors" in stderr, stderr
        assert not out.exists() and helpers.listing(tmp_path) == before

    # ------------------------------------------------------------------ malformed input

    def malformed_cases(self) -> dict[str, bytes]:
        """Name -> bytes of a broken file, made from a sealed file's bytes (subclasses may add more)."""
        return {}

    @pytest.fixture(scope="class")
    @classmethod  # a class-scoped fixture as an instance method is an error from pytest 9.2 on
    def sealed_raw(cls, tmp_path_factory: pytest.TempPathFactory, key: paramseal.Key) -> bytes:
        """The bytes of a sealed file of this format (sealed once per class; the tests corrupt copies)."""
        d = tmp_path_factory.mktemp("sealed")
        suite = cls()
        src = suite.write_native(d, suite.flow_model(np.dtype(np.float32)), "original")
        out = suite.path(d, "sealed")
        files.seal_file(src, out, key)
        return out.read_bytes()

    @pytest.mark.parametrize("verb", ["verify", "recover", "seal", "inspect"])
    @pytest.mark.parametrize("case", ["empty", "truncated_half", "truncated_by_one_byte", "garbage", "zeros"])
    def test_malformed_file_is_exit_3_naming_the_file_and_nothing_is_written(
        self, tmp_path: Path, sealed_raw: bytes, key_file: Path, case: str, verb: str
    ) -> None:
        raw = sealed_raw
        cases = {
            "empty": b"",
            "truncated_half": raw[: len(raw) // 2],
            "truncated_by_one_byte": raw[:-1],
            "garbage": bytes(np.random.default_rng(0).integers(0, 256, 2048, dtype=np.uint8)),
            "zeros": bytes(4096),
        }
        self._assert_exit_3(tmp_path, key_file, f"bad_{case}", cases[case], verb)

    def test_format_specific_malformed_files_are_exit_3(self, tmp_path: Path, key_file: Path) -> None:
        extra = self.malformed_cases() or {}
        if not extra:
            pytest.skip("no format-specific malformed cases")
        for case, raw in extra.items():
            for verb in ("verify", "recover", "seal", "inspect"):
                self._assert_exit_3(tmp_path, key_file, f"bad_{case}", raw, verb)

    def _assert_exit_3(self, tmp_path: Path, key_file: Path, stem: str, raw: bytes, verb: str) -> None:
        bad = self.path(tmp_path, stem)
        bad.write_bytes(raw)
        out = self.path(tmp_path, "out")
        before = helpers.listing(tmp_path)
        argv = {
            "verify": ["verify", bad, "--key", key_file, "--json"],
            "recover": ["recover", bad, out, "--key", key_file],
            "seal": ["seal", bad, out, "--key", key_file],
            "inspect": ["inspect", bad],
        }[verb]
        rc, stdout, stderr = helpers.run_cli(argv)
        assert rc == 3, (stem, verb, stdout, stderr)
        assert stderr.startswith("error: ") and bad.name in stderr, (stem, verb, stderr)
        assert "Traceback" not in stderr + stdout
        assert not out.exists()
        assert helpers.listing(tmp_path) == before, "input changed or a file was left behind"
        bad.unlink()


def _assert_within_bound(sealed: dict[str, np.ndarray], original: dict[str, np.ndarray]) -> None:
    """Same names, dtypes and shapes; every float value within the standard level's documented bound."""
    for name, o in original.items():
        s = sealed[name]
        assert s.dtype == o.dtype and s.shape == o.shape, name
        dt = dtype_name(o.dtype)
        if dt not in FLOATS:
            helpers.assert_model_equal({name: s}, {name: o})
            continue
        k = helpers.LEVEL_K["standard"][o.dtype]
        a, b = o.astype(np.float64), s.astype(np.float64)
        limit = max_relative_change(dt, k) * np.abs(a) + max_subnormal_change(dt, k)
        assert np.all(np.abs(b - a) <= limit), f"{name}: change beyond the bound"

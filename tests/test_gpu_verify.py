"""paramseal.gpu: in-memory verification on the tensors' device, against the CPU (numpy) engine.

The CPU engine (``paramseal.verify`` on the same weights copied to numpy) is the oracle:
for every dtype, both codes and any bit flipped, the GPU verifier must report exactly the
same failing blocks. On a machine without CUDA the torch engine runs on the CPU, and the
Triton kernel runs there too, in triton's interpreter (numpy on CPU tensors), wherever
triton is installed: conftest.py sets TRITON_INTERPRET=1 before triton is imported.
"""

from __future__ import annotations

from pathlib import Path

import helpers
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import paramseal
from paramseal._weights_header import header_from_weights
from paramseal.levels import BLOCK, bits_for
from paramseal.verify import check

torch = pytest.importorskip("torch")
gpu = pytest.importorskip("paramseal.gpu")
pst = pytest.importorskip("paramseal.torch")
from paramseal import _gpu_triton  # noqa: E402
from paramseal.formats.pytorch import numpy_to_tensor, tensor_to_numpy  # noqa: E402

CUDA = torch.cuda.is_available()
TRITON = CUDA and gpu.triton_available()
#: the kernels were defined under TRITON_INTERPRET=1 (see conftest.py): they run on CPU tensors
INTERPRETED = gpu.triton_available() and type(_gpu_triton._KERNEL).__name__ == "InterpretedFunction"
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
needs_triton = pytest.mark.skipif(not TRITON, reason="needs a CUDA GPU and triton")
needs_interpreter = pytest.mark.skipif(
    not INTERPRETED, reason="needs triton (pip install triton) and no CUDA GPU: its interpreter runs the kernel"
)

ENGINES = [
    pytest.param("cpu", "torch", id="cpu-torch"),
    pytest.param("cuda", "torch", id="cuda-torch", marks=needs_cuda),
    pytest.param("cuda", "triton", id="cuda-triton", marks=needs_triton),
    pytest.param("cpu", "triton", id="cpu-triton-interpreted", marks=needs_interpreter),
]
#: the Triton kernel: compiled on a GPU, or interpreted on the CPU
TRITON_DEVICES = [
    pytest.param("cuda", id="cuda", marks=needs_triton),
    pytest.param("cpu", id="interpreted", marks=needs_interpreter),
]
# (dtype, code, level): fp32 defaults to irs; irs needs fp32 everywhere
CASES = [
    ("F32", "irs", "standard"),
    ("F32", "lanes", "standard"),
    ("F32", "irs", "strong"),
    ("F16", "lanes", "standard"),
    ("F16", "lanes", "strong"),
    ("BF16", "lanes", "standard"),
    ("BF16", "lanes", "strong"),
    ("F64", "lanes", "standard"),
    ("F64", "lanes", "strong"),
]
NP = {"F32": np.float32, "F16": np.float16, "BF16": helpers.BF16, "F64": np.float64}
INTS = {"I64": np.int64, "I32": np.int32, "I16": np.int16, "U16": np.uint16}
EXPONENT = {"F32": (23, 31), "F16": (10, 15), "BF16": (7, 15), "F64": (52, 63)}  # [first, last) exponent bits


def model_of(dtype: str, seed: int = 0) -> dict[str, np.ndarray]:
    """Tensors whose last blocks are partial; 'tiny' is too small to keep its tag in bf16/fp16."""
    rng = np.random.default_rng(seed)
    shapes = {"w": (70, 93), "emb": (128, 64), "b": (93,), "tiny": (5,)}
    return {n: helpers.random_tensor(rng, NP[dtype], s) for n, s in shapes.items()}


def seal_state(
    arrays: dict[str, np.ndarray], key: paramseal.Key, code: str | None = None, level: str = "standard"
) -> tuple[dict[str, torch.Tensor], str]:
    sealed = paramseal.SealConfig(level=level, code=code).seal(arrays, key)
    return {n: numpy_to_tensor(a) for n, a in sealed.tensors.items()}, sealed.header_json


def to_device(state: dict[str, torch.Tensor], device: str) -> dict[str, torch.Tensor]:
    return {n: t.to(device) for n, t in state.items()}


def cpu_report(state: dict[str, torch.Tensor], key: paramseal.Key, header: str) -> paramseal.Report:
    return paramseal.verify({n: tensor_to_numpy(t, n) for n, t in state.items()}, key, header)


def cpu_blocks(state: dict[str, torch.Tensor], key: paramseal.Key, header: str) -> dict[str, tuple[int, ...]]:
    """The failing blocks of ``paramseal.verify`` (its check, without deciding recoverability)."""
    chk = check({n: tensor_to_numpy(t, n) for n, t in state.items()}, key, header)
    return {
        s.name: tuple(int(i) for i in np.flatnonzero(b)) for s, b in zip(chk.specs, chk.bad, strict=True) if b.any()
    }


def flip(t: torch.Tensor, index: int, bit: int) -> None:
    """Flip bit ``bit`` (0 = least significant) of flat value ``index``, in place, on any device."""
    size = t.element_size()
    raw = t.view(torch.uint8) if t.dtype == torch.bool else t
    flat = raw.reshape(-1).view(torch.uint8)
    flat[index * size + bit // 8] ^= 1 << (bit % 8)


def tag_positions(numel: int, k: int, block: int) -> list[tuple[int, int]]:
    """(value index, bit) of every tag bit a block keeps in its low bits."""
    out: list[tuple[int, int]] = []
    for j in range(-(-32 // k) if k else 0):
        for bit in range(min(k, 32 - j * k)):
            if block * BLOCK + j < numel:
                out.append((block * BLOCK + j, bit))
    return out


def assert_same(verifier: gpu.GpuVerifier, state: dict[str, torch.Tensor], key: paramseal.Key, header: str) -> None:
    got = verifier.check()
    want = cpu_blocks(state, key, header)
    assert dict(got.blocks) == want
    assert got.failing == sum(len(v) for v in want.values())


# --------------------------------------------------------------------------- intact models


@pytest.mark.parametrize("device,backend", ENGINES)
@pytest.mark.parametrize("dtype,code,level", CASES)
def test_a_sealed_model_verifies(
    key: paramseal.Key, device: str, backend: str, dtype: str, code: str, level: str
) -> None:
    state, header = seal_state(model_of(dtype), key, code, level)
    v = gpu.GpuVerifier(to_device(state, device), key, header, backend=backend)  # type: ignore[arg-type]
    result = v.check()
    assert result.ok and result.failing == 0 and not result.blocks
    assert v.verify().to_dict() == cpu_report(state, key, header).to_dict()
    assert v.verify().status == "intact"


def test_unsealed_weights_fail_every_block(key: paramseal.Key) -> None:
    arrays = model_of("F32")
    state, header = seal_state(arrays, key)
    fresh = {n: numpy_to_tensor(a) for n, a in arrays.items()}  # the same tensors before sealing
    got = gpu.GpuVerifier(fresh, key, header, backend="torch").check()
    assert got.failing > 0.99 * sum(-(-t.numel() // BLOCK) for t in fresh.values())
    assert dict(got.blocks) == cpu_blocks(fresh, key, header)


# --------------------------------------------------------------------------- single bit flips


@pytest.mark.parametrize("device,backend", ENGINES)
@pytest.mark.parametrize("dtype,code,level", CASES)
def test_single_bit_flips_fail_exactly_the_blocks_the_cpu_engine_fails(
    key: paramseal.Key, device: str, backend: str, dtype: str, code: str, level: str
) -> None:
    state, header = seal_state(model_of(dtype, seed=1), key, code, level)
    live = to_device(state, device)
    v = gpu.GpuVerifier(live, key, header, backend=backend)  # type: ignore[arg-type]
    specs = {s.name: s for s in v._specs}
    rng = np.random.default_rng(7)
    width = np.dtype(NP[dtype]).itemsize * 8
    for trial in range(24):
        name = ["w", "emb", "b", "tiny"][trial % 4]
        spec, t = specs[name], live[name]
        last = spec.nblocks - 1
        kind = trial // 4 % 4
        if kind == 0:  # a tag bit of a block that keeps its tag (the last block too, when it does)
            block = last if trial % 8 == 0 else int(rng.integers(spec.nblocks))
            choices = tag_positions(spec.numel, spec.k, block) or [(block * BLOCK, 0)]
            index, bit = choices[int(rng.integers(len(choices)))]
        elif kind == 1:  # an exponent bit
            index, bit = int(rng.integers(spec.numel)), int(rng.integers(*EXPONENT[dtype]))
        elif kind == 2:  # any bit of the last (zero-padded) block
            index, bit = int(rng.integers(last * BLOCK, spec.numel)), int(rng.integers(width))
        else:  # anywhere
            index, bit = int(rng.integers(spec.numel)), int(rng.integers(width))
        flip(t, index, bit)
        got = v.check()
        assert dict(got.blocks) == {name: (index // BLOCK,)}, (name, index, bit)
        assert got.blocks == cpu_blocks(live, key, header)
        flip(t, index, bit)
    assert v.check().ok
    # several at once, in different tensors: still exactly the CPU engine's set
    for name in ("w", "b", "tiny"):
        flip(live[name], live[name].numel() - 1, 0)
        flip(live[name], 0, width - 2)
    assert_same(v, live, key, header)
    assert v.verify().to_dict() == cpu_report(live, key, header).to_dict()


@pytest.mark.parametrize("device,backend", ENGINES)
@pytest.mark.parametrize("version", ["v2", "v3", "v2-mac2", "v3-mac2", "v3-mac3"])
def test_golden_files_of_every_block_mac_verify_and_locate_a_flip(device: str, backend: str, version: str) -> None:
    """Seals made with the additive-pad MAC (v2, v3), with the per-block multiplier (-mac2) and with the per-block
    hash (-mac3): the GPU engines read the header's MAC, as the CPU engine does."""
    golden = Path(__file__).parent / "golden" / version
    key = paramseal.load_key(golden / "golden.key")
    arrays, meta = helpers.read_st(golden / "sealed.safetensors")
    live = to_device({n: numpy_to_tensor(a) for n, a in arrays.items()}, device)
    v = gpu.GpuVerifier(live, key, meta["paramseal"], backend=backend)  # type: ignore[arg-type]
    assert v.check().ok
    flip(live["encoder.weight"], 1000, 27)
    assert dict(v.check().blocks) == {"encoder.weight": (1000 // BLOCK,)}
    assert_same(v, live, key, meta["paramseal"])


@pytest.mark.parametrize("device,backend", ENGINES)
def test_every_dtype_in_one_model(key: paramseal.Key, device: str, backend: str) -> None:
    """Integers, bool and fp64 too: blocks without tag bits are checked against the header's tags."""
    state, header = seal_state(helpers.small_model(3), key)
    live = to_device(state, device)
    v = gpu.GpuVerifier(live, key, header, backend=backend)  # type: ignore[arg-type]
    assert v.check().ok
    rng = np.random.default_rng(11)
    for name, t in live.items():
        for _ in range(3):
            index, bit = int(rng.integers(t.numel())), int(rng.integers(t.element_size() * 8))
            flip(t, index, bit)
            assert dict(v.check().blocks) == {name: (index // BLOCK,)}, (name, index, bit)
            assert_same(v, live, key, header)
            flip(t, index, bit)
    assert v.check().ok


def test_the_chunked_torch_engine_matches(key: paramseal.Key, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gpu, "CHUNK_WORDS", 3 * 128)  # three fp32 blocks a chunk: many chunks per tensor
    state, header = seal_state(model_of("F32", seed=2), key)
    v = gpu.GpuVerifier(state, key, header, backend="torch")
    assert v.check().ok
    for index in (0, 190, 191, 192, 6000, 6509):  # chunk edges and the partial last block
        flip(state["w"], index, 3)
    assert dict(v.check().blocks) == {"w": (0, 2, 3, 93, 101)}
    assert_same(v, state, key, header)


@pytest.mark.parametrize("device,backend", ENGINES)
def test_strided_and_misaligned_tensors_are_read_in_logical_order(
    key: paramseal.Key, device: str, backend: str
) -> None:
    """A transposed-twice view (not contiguous) and a view at an odd offset verify like their copies."""
    state, header = seal_state(model_of("F32", seed=5), key)
    live = to_device(state, device)
    live["emb"] = live["emb"].t().contiguous().t()
    assert not live["emb"].is_contiguous()
    buf = torch.zeros(live["w"].numel() + 1, device=device)
    buf[1:] = live["w"].reshape(-1)
    live["w"] = buf[1:].view(live["w"].shape)  # 4 bytes off the allocation's alignment
    v = gpu.GpuVerifier(live, key, header, backend=backend)  # type: ignore[arg-type]
    assert v.check().ok
    flip(live["emb"].t(), 128 + 65, 30)  # value 193 of the contiguous transposed view: emb[65, 1]
    flip(live["w"], 4000, 0)
    assert dict(v.check().blocks) == {"emb": ((65 * 64 + 1) // BLOCK,), "w": (4000 // BLOCK,)}
    assert_same(v, live, key, header)


@pytest.mark.parametrize("device,backend", ENGINES)
def test_one_byte_tensors_at_an_odd_offset_are_checked(key: paramseal.Key, device: str, backend: str) -> None:
    """An int8, uint8 or bool view starting at an odd byte of its storage (a slice of a flat buffer) verifies."""
    rng = np.random.default_rng(8)
    arrays = {
        "w": helpers.random_tensor(rng, np.float32, (300,)),
        "i8": rng.integers(-100, 100, 131).astype(np.int8),
        "u8": rng.integers(0, 255, (13, 11)).astype(np.uint8),
        "b": rng.integers(0, 2, 67).astype(np.bool_),
    }
    state, header = seal_state(arrays, key, "lanes")
    live = to_device(state, device)
    for name in ("i8", "u8", "b"):
        t = live[name]
        buf = torch.zeros(t.numel() + 1, dtype=t.dtype, device=device)
        buf[1:] = t.reshape(-1)
        live[name] = buf[1:].view(t.shape)
        assert live[name].is_contiguous() and live[name].storage_offset() == 1
    v = gpu.GpuVerifier(live, key, header, backend=backend)  # type: ignore[arg-type]
    assert v.check().ok
    flip(live["i8"], 70, 2)
    flip(live["u8"], 142, 7)
    flip(live["b"], 3, 0)
    assert dict(v.check().blocks) == cpu_blocks(live, key, header) == {"i8": (1,), "u8": (2,), "b": (0,)}


# --------------------------------------------------------------------------- reports and errors


def test_verify_report_equals_the_cpu_report_when_tampered(key: paramseal.Key) -> None:
    state, header = seal_state(model_of("F32", seed=4), key)
    v = gpu.GpuVerifier(state, key, header)
    state["w"].view(-1)[64:130] = 0.25  # blocks 1 and 2
    rep = v.verify()
    want = cpu_report(state, key, header)
    assert rep.status == "tampered" and rep.tampered_tensors == ["w"]
    assert rep.tensors["w"].tampered_blocks == (1, 2)
    assert rep.to_dict() == want.to_dict()
    assert rep.recoverable == want.recoverable


def test_verify_report_of_swapped_tensors_equals_the_cpu_report(key: paramseal.Key) -> None:
    """Two tensors of one shape swapped: every block fails on the device; the report says swapped, as the CPU's does."""
    rng = np.random.default_rng(6)
    arrays = {n: helpers.random_tensor(rng, np.float32, (40, 50)) for n in ("a", "b")}
    state, header = seal_state({**arrays, "c": helpers.random_tensor(rng, np.float32, (300,))}, key)
    state["a"], state["b"] = state["b"], state["a"]
    v = gpu.GpuVerifier(state, key, header)
    assert dict(v.check().blocks) == {"a": tuple(range(32)), "b": tuple(range(32))}
    rep, want = v.verify(), cpu_report(state, key, header)
    assert rep.tensors["a"].issues == ("swapped: its data was found under 'b'",)
    assert rep.status == "tampered" and rep.recoverable and not rep.tensors["a"].tampered_blocks
    assert rep.to_dict() == want.to_dict()


def test_wrong_key_is_a_key_mismatch(key: paramseal.Key, other_key: paramseal.Key) -> None:
    state, header = seal_state(model_of("BF16"), key, "lanes")
    with pytest.raises(paramseal.KeyMismatchError, match="key does not match"):
        gpu.GpuVerifier(state, other_key, header)


@pytest.mark.parametrize("change", ["missing", "retyped", "reshaped", "extra"])
def test_a_structure_mismatch_names_every_difference(key: paramseal.Key, change: str) -> None:
    state, header = seal_state(model_of("F32"), key)
    if change == "missing":
        del state["b"]
    elif change == "retyped":
        state["b"] = state["b"].double()
    elif change == "reshaped":
        state["emb"] = state["emb"].reshape(64, 128)
    else:
        state["new"] = torch.zeros(3)
    with pytest.raises(paramseal.TamperedError) as e:
        gpu.GpuVerifier(state, key, header)
    assert {"missing": "'b' is missing", "retyped": "dtype F64", "reshaped": "shape [64, 128]", "extra": "'new'"}[
        change
    ] in str(e.value)
    assert e.value.report.status == "tampered"


def test_a_structure_change_after_construction_is_caught(key: paramseal.Key) -> None:
    state, header = seal_state(model_of("F16"), key, "lanes")
    v = gpu.GpuVerifier(state, key, header)
    assert v.check().ok
    state["w"] = state["w"].float()
    with pytest.raises(paramseal.TamperedError, match="dtype F32"):
        v.check()


def test_the_repr_shows_no_key_material(key: paramseal.Key) -> None:
    state, header = seal_state(model_of("F32"), key)
    v = gpu.GpuVerifier(state, key, header)
    text = repr(v) + str(v)
    assert "4 tensors" in text
    assert key.secret.hex() not in text and "keys" not in text and str(int(v._plans[0].consts.keys64[0])) not in text
    assert "keys64" not in repr(v.check())
    # nor the per-tensor plans and groups, which a traceback with locals (pytest -l, an error reporter) prints
    keys = str(int(v._plans[0].consts.keys64[0]))
    pad = str(int(v._plans[0].c[0]))
    x, keys2 = str(int(v._plans[0].x[0])), str(int(v._plans[0].consts.keys2_64[0]))
    assert int(x) and int(keys2)  # the current MAC's second hash: its per-block weight and keys
    for inner in (*v._plans, *v._groups):
        assert keys not in repr(inner) and pad not in repr(inner) and "keys64" not in repr(inner)
        assert x not in repr(inner) and keys2 not in repr(inner)


def test_unknown_backend_is_a_usage_error(key: paramseal.Key) -> None:
    state, header = seal_state(model_of("F32"), key)
    with pytest.raises(paramseal.UsageError, match="unknown backend"):
        gpu.GpuVerifier(state, key, header, backend="cuda")  # type: ignore[arg-type]


def test_backend_triton_without_triton_is_refused_when_built(
    key: paramseal.Key, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It was accepted, and the first check() raised, saying to install triton even where PARAMSEAL_NO_TRITON hid it."""
    state, header = seal_state(model_of("F32"), key)
    monkeypatch.setenv("PARAMSEAL_NO_TRITON", "1")
    with pytest.raises(paramseal.UsageError, match="needs triton .* PARAMSEAL_NO_TRITON unset"):
        gpu.GpuVerifier(state, key, header, backend="triton")
    assert gpu.GpuVerifier(state, key, header).check().ok  # auto: the torch engine


@pytest.mark.parametrize(
    "change,error,words",
    [
        ("key", paramseal.UsageError, "must be a paramseal.Key, not str"),
        ("header", paramseal.UsageError, "header_json must be the seal header text"),
        ("source", paramseal.UsageError, "not list"),
        ("numpy", paramseal.UsageError, "'w' is a ndarray, not a torch.Tensor"),
        ("sparse", paramseal.UnsupportedError, "'w' is a torch.sparse_coo tensor"),
        ("meta", paramseal.UnsupportedError, "'w' is a meta tensor"),
        ("lazy", paramseal.UnsupportedError, r"'w' are uninitialized \(a lazy module's\).*forward once"),
        ("lazy, no header", paramseal.UnsupportedError, r"'w' are uninitialized \(a lazy module's\).*forward once"),
    ],
)
def test_bad_arguments_are_named(key: paramseal.Key, change: str, error: type[Exception], words: str) -> None:
    """Arguments the verifier cannot use raise ParamSeal's own errors, as paramseal.verify does, not a torch error."""
    state, header = seal_state(model_of("F32"), key)
    args: list[object] = [state, key, header]
    if change == "key":
        args[1] = key.secret.hex()
    elif change == "header":
        args[2] = header.encode()
    elif change == "source":
        args[0] = list(state.values())
    elif change == "numpy":
        args[0] = {**state, "w": state["w"].numpy()}
    elif change == "sparse":
        args[0] = {**state, "w": state["w"].to_sparse()}
    elif change.startswith("lazy"):  # an nn.LazyLinear's weight before its first forward
        args[0] = {**state, "w": torch.nn.parameter.UninitializedParameter()}
        if change == "lazy, no header":  # the embedded header is read from the tensors first
            del args[2]
    else:
        args[0] = {**state, "w": state["w"].to("meta")}
    with pytest.raises(error, match=words):
        gpu.GpuVerifier(*args).check()  # type: ignore[arg-type]


def test_a_sparse_tensor_after_construction_is_refused(key: paramseal.Key) -> None:
    state, header = seal_state(model_of("F32"), key)
    v = gpu.GpuVerifier(state, key, header)
    state["w"] = state["w"].to_sparse()
    with pytest.raises(paramseal.UnsupportedError, match="'w' is a torch.sparse_coo tensor"):
        v.check()


# --------------------------------------------------------------------------- live modules


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=needs_cuda)])
def test_a_live_module(key: paramseal.Key, device: str) -> None:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(200, 300), torch.nn.ReLU(), torch.nn.Linear(300, 10))
    header = pst.seal_module(net, key).header_json
    net.to(device)
    v = gpu.GpuVerifier(net, key, header)
    assert v.check().ok
    with torch.no_grad():
        net[2].weight[4, 7] += 1.0  # value 1207: block 18
    assert dict(v.check().blocks) == {"2.weight": (18,)}
    assert v.verify().to_dict() == pst.verify_module(net, key, header).to_dict()
    assert pst.recover_module(net, key, header).status == "recovered"
    assert v.check().ok
    # a parameter replaced by a new object is read at the next check, not a stale reference
    net[0].weight = torch.nn.Parameter(net[0].weight.detach().clone() * 2)
    assert v.check().blocks["0.weight"] == tuple(range(-(-200 * 300 // BLOCK)))


def test_the_header_is_read_from_the_weights_when_not_given(key: paramseal.Key) -> None:
    net = torch.nn.Sequential(torch.nn.Linear(512, 512), torch.nn.Linear(512, 512))
    pst.seal_module(net, key)
    v = gpu.GpuVerifier(net, key)
    assert v.check().ok
    with torch.no_grad():
        net[1].weight[100, :] = 0.5
    assert v.verify().to_dict() == pst.verify_module(net, key).to_dict()


def test_notes_of_a_header_read_from_the_weights_are_the_cpu_engines(key: paramseal.Key) -> None:
    """Sealed metadata (a mapping) or ties (a module), header from the weights: the CPU engine's report, notes too."""
    rng = np.random.default_rng(12)
    arrays = {
        "a": helpers.random_tensor(rng, np.float32, (512, 512)),
        "c": helpers.random_tensor(rng, np.float32, (300,)),
    }
    sealed = paramseal.seal(arrays, key, metadata={"author": "x"})
    state = {n: numpy_to_tensor(a) for n, a in sealed.tensors.items()}
    host = {n: tensor_to_numpy(t, n) for n, t in state.items()}
    rep = gpu.GpuVerifier(state, key).verify()
    assert rep.to_dict() == paramseal.verify(host, key, header_from_weights(host, key)).to_dict()
    assert "the model carries no metadata; the weights were checked, the sealed metadata could not be" in rep.notes

    class Tied(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = torch.nn.Embedding(3000, 64)
            self.head = torch.nn.Linear(64, 3000, bias=False)
            self.head.weight = self.emb.weight

    torch.manual_seed(0)
    net = Tied()
    pst.seal_module(net, key)
    rep = gpu.GpuVerifier(net, key).verify()
    assert rep.to_dict() == pst.verify_module(net, key).to_dict()
    assert len(rep.notes) == 1  # the header's origin only: the ties were checked against their digest


def test_a_tied_modules_state_dict_is_refused_saying_to_pass_the_module(key: paramseal.Key) -> None:
    """It said only "'head.weight' is not in the seal", though the weights were the sealed ones."""
    torch.manual_seed(0)
    net = torch.nn.ModuleDict({"emb": torch.nn.Embedding(300, 64), "head": torch.nn.Linear(64, 300, bias=False)})
    net["head"].weight = net["emb"].weight
    h = pst.seal_module(net, key).header_json
    with pytest.raises(paramseal.TamperedError, match="tied tensors, which a seal holds once: pass the module"):
        gpu.GpuVerifier(net.state_dict(), key, h)
    assert gpu.GpuVerifier(net, key, h).check().ok


@pytest.mark.parametrize("change", ["added", "untied"])
def test_a_modules_structure_mismatch_carries_verify_modules_report(key: paramseal.Key, change: str) -> None:
    """It carried paramseal.verify's on the bare tensors: recoverable where recover_module is not, ties unchecked."""
    torch.manual_seed(0)
    net = torch.nn.ModuleDict({"emb": torch.nn.Embedding(300, 64), "head": torch.nn.Linear(64, 300, bias=False)})
    net["head"].weight = net["emb"].weight
    h = pst.seal_module(net, key).header_json
    if change == "added":
        net["extra"] = torch.nn.Linear(3, 3)
    else:
        net["head"].weight = torch.nn.Parameter(net["emb"].weight.detach().clone())
    with pytest.raises(paramseal.TamperedError) as e:
        gpu.GpuVerifier(net, key, h)
    assert e.value.report.to_dict() == pst.verify_module(net, key, h).to_dict()
    assert e.value.report.recoverable == (pst.recover_module(net, key, h).status == "recovered")


@needs_cuda
def test_a_tensor_moved_to_another_device_is_a_usage_error(key: paramseal.Key) -> None:
    state, header = seal_state(model_of("F32"), key)
    live = to_device(state, "cuda")
    v = gpu.GpuVerifier(live, key, header)
    live["b"] = live["b"].cpu()
    with pytest.raises(paramseal.UsageError, match="build a new GpuVerifier"):
        v.check()


# --------------------------------------------------------------------------- properties


@settings(max_examples=8)
@given(
    dtype=st.sampled_from(["F32", "F16", "BF16"]),
    numel=st.integers(1, 2500),
    flips=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 31)), min_size=1, max_size=4),
)
def test_property_any_flips_fail_the_cpu_engines_blocks(
    key: paramseal.Key, dtype: str, numel: int, flips: list[tuple[float, int]]
) -> None:
    rng = np.random.default_rng(numel)
    arrays = {"x": helpers.random_tensor(rng, NP[dtype], (numel,)), "y": helpers.random_tensor(rng, NP[dtype], (70,))}
    state, header = seal_state(arrays, key)  # the default code: irs where it applies
    device = "cuda" if TRITON else "cpu"
    live = to_device(state, device)
    v = gpu.GpuVerifier(live, key, header)
    width = np.dtype(NP[dtype]).itemsize * 8
    for frac, bit in flips:
        flip(live["x"], int(frac * numel), bit % width)
    assert_same(v, live, key, header)


# --------------------------------------------------------------------------- the Triton kernel


@pytest.mark.parametrize("device", TRITON_DEVICES)
@pytest.mark.parametrize("bpp,warps,grouped", [(16, 4, True), (16, 4, False), (64, 8, True), (8, 2, False)])
def test_the_triton_kernel_matches_the_torch_engine_at_scale(
    key: paramseal.Key, monkeypatch: pytest.MonkeyPatch, device: str, bpp: int, warps: int, grouped: bool
) -> None:
    monkeypatch.setattr(gpu, "BLOCKS_PER_PROGRAM", bpp)
    monkeypatch.setattr(gpu, "NUM_WARPS", warps)
    monkeypatch.setattr(gpu, "GROUPED", grouped)
    rng = np.random.default_rng(5)
    rows = 1000 if device == "cuda" else 61  # the interpreter runs about 100k values a second
    arrays = {
        "big": helpers.random_tensor(rng, np.float32, (rows, 1001)),
        "odd": helpers.random_tensor(rng, helpers.BF16, (777,)),
    }
    state, header = seal_state(arrays, key, "lanes")
    live = to_device(state, device)
    tri = gpu.GpuVerifier(live, key, header, backend="triton")
    ref = gpu.GpuVerifier(live, key, header, backend="torch")
    assert tri.check().ok
    n = live["big"].numel()
    for i in rng.integers(0, n, 300):
        flip(live["big"], int(i), int(rng.integers(32)))
    flip(live["big"], n - 1, 31)
    flip(live["odd"], 776, 0)
    got = tri.check()
    assert got == ref.check()
    assert dict(got.blocks) == cpu_blocks(live, key, header)


@pytest.mark.parametrize("device,backend", ENGINES)
@pytest.mark.parametrize("dtype", ["F64", "F32", "F16", "BF16"])
def test_last_blocks_just_too_small_just_large_enough_to_keep_their_tag(
    key: paramseal.Key, device: str, backend: str, dtype: str
) -> None:
    """A last block of 32/k - 1, 32/k and 32/k + 1 values: its tag in the header, then in its own last value."""
    need = -(-32 // bits_for(dtype, "standard", None))
    rng = np.random.default_rng(13)
    sizes = {f"n{m}": BLOCK + m for m in (need - 1, need, need + 1)}
    state, header = seal_state({n: helpers.random_tensor(rng, NP[dtype], (m,)) for n, m in sizes.items()}, key, "lanes")
    live = to_device(state, device)
    v = gpu.GpuVerifier(live, key, header, backend=backend)  # type: ignore[arg-type]
    assert [p.last_internal for p in v._plans] == [False, True, True]
    assert v.check().ok
    for name, m in sizes.items():
        flip(live[name], m - 1, 0)  # the last value's lowest bit: a tag bit where the block keeps its tag
    assert dict(v.check().blocks) == {name: (1,) for name in sizes}
    assert_same(v, live, key, header)


@pytest.mark.parametrize("device", TRITON_DEVICES)
def test_many_tensors_of_every_size_in_one_launch(
    key: paramseal.Key, monkeypatch: pytest.MonkeyPatch, device: str
) -> None:
    """Sizes around a block (64) and a program's span (16 fp32 blocks), and empty: one grouped launch for all."""

    def one_launch_each(*args: object) -> None:
        raise AssertionError("a tensor was checked by a launch of its own, not the grouped kernel")

    monkeypatch.setattr(gpu, "_launch", one_launch_each)
    sizes = [0, 1, 5, 63, 64, 65, 127, 128, 129, 1023, 1024, 1025, 2047, 2048, 2049, 4096]
    rng = np.random.default_rng(9)
    arrays = {f"t{i:02d}": helpers.random_tensor(rng, np.float32, (n,)) for i, n in enumerate(sizes)}
    state, header = seal_state(arrays, key, "lanes")
    live = {n: t if t.numel() else torch.empty(0) for n, t in to_device(state, device).items()}
    v = gpu.GpuVerifier(live, key, header, backend="triton")
    # Empty tensors join no group: on a GPU the host's torch.empty(0) made a second group (seen on an H200).
    assert [len(g.plans) for g in v._groups] == [len(sizes) - 1] and v.check().ok
    for t in live.values():
        if n := t.numel():
            flip(t, n - 1, 0)  # the last value: of a partial block, or of the last whole one
            flip(t, 0, 31)
            flip(t, int(rng.integers(n)), int(rng.integers(1, 31)))
    got = v.check()
    assert set(got.blocks) == {name for name, t in live.items() if t.numel()}
    assert dict(got.blocks) == cpu_blocks(live, key, header)


@pytest.mark.parametrize("device", TRITON_DEVICES)
def test_a_tensor_the_grouped_kernel_cannot_read_leaves_the_others_in_one_launch(
    key: paramseal.Key, monkeypatch: pytest.MonkeyPatch, device: str
) -> None:
    """A transposed view and a tensor 4 bytes off alignment are launched on their own; the rest stay grouped.

    One such tensor sent every tensor of its group to a launch of its own (docs/gpu.md: "tensors that
    are not contiguous or not 16-byte aligned are launched one by one").
    """
    alone: list[str] = []
    launch = gpu._launch
    monkeypatch.setattr(
        gpu, "_launch", lambda kernel, plan, words: (alone.append(plan.spec.name), launch(kernel, plan, words))
    )
    rng = np.random.default_rng(14)
    state, header = seal_state(
        {f"t{i}": helpers.random_tensor(rng, np.float32, (20, 30)) for i in range(5)}, key, "lanes"
    )
    live = to_device(state, device)
    live["t1"] = live["t1"].t().contiguous().t()
    buf = torch.zeros(live["t3"].numel() + 1, device=device)
    buf[1:] = live["t3"].reshape(-1)
    live["t3"] = buf[1:].view(20, 30)
    v = gpu.GpuVerifier(live, key, header, backend="triton")
    assert v.check().ok
    assert sorted(alone) == ["t1", "t3"]
    for i, t in enumerate(live.values()):
        if i != 1:
            flip(t, 64 * i + 5, 20)
    flip(live["t1"].t(), 9 * 20 + 2, 20)  # t1[2, 9], its value 69: block 1 (a flip through a copy would be lost)
    assert dict(v.check().blocks) == cpu_blocks(live, key, header) == {f"t{i}": (i,) for i in range(5)}


@pytest.mark.parametrize("device,backend", ENGINES)
def test_empty_tensors_from_numpy_are_checked(key: paramseal.Key, device: str, backend: str) -> None:
    """``torch.from_numpy`` of an empty array has stride (0,), which a 16-bit view refuses: it must still be checked."""
    arrays = {"w": helpers.random_tensor(np.random.default_rng(3), np.float32, (300,)), "e": np.zeros(0, np.int32)}
    state, header = seal_state(arrays, key, "lanes")
    assert state["e"].stride() == (0,)  # as numpy_to_tensor gives it
    live = to_device(state, device)
    v = gpu.GpuVerifier(live, key, header, backend=backend)
    assert v.check().ok
    flip(live["w"], 7, 3)
    assert dict(v.check().blocks) == cpu_blocks(live, key, header) == {"w": (0,)}


@pytest.mark.parametrize("device,backend", ENGINES)
@pytest.mark.parametrize(
    "plain,marked,level",
    [("I32", "F32", "standard"), ("F32", "F32", "standard"), ("I16", "F16", "standard"),
     ("U16", "BF16", "strong"), ("I64", "F64", "standard")],
)  # fmt: skip
def test_tensors_without_tag_bits_beside_float_tensors_of_the_same_width(
    key: paramseal.Key, device: str, backend: str, plain: str, marked: str, level: str
) -> None:
    """An integer tensor, or a float one holding Inf (k=0), first; then one keeping its tags (k>0).

    Each pair has the same words per block and the same span of tag words, so the Triton
    kernel checks both in one launch: each must still be hashed with its own tag masks.
    """
    rng = np.random.default_rng(3)
    a = helpers.random_tensor(rng, INTS.get(plain) or NP[plain], (300,))
    if plain in NP:
        a[7] = np.inf  # a float tensor holding Inf carries no watermark bits
    arrays = {"a": a, "b": helpers.random_tensor(rng, NP[marked], (1000,))}
    state, header = seal_state(arrays, key, "lanes", level)
    live = to_device(state, device)
    v = gpu.GpuVerifier(live, key, header, backend=backend)  # type: ignore[arg-type]
    assert [(s.name, s.k > 0) for s in v._specs] == [("a", False), ("b", True)]
    assert v.check().ok
    assert v.verify().status == "intact"
    flip(live["a"], 0, 3)
    flip(live["b"], 700, 0)
    assert dict(v.check().blocks) == {"a": (0,), "b": (10,)}
    assert_same(v, live, key, header)


# --------------------------------------------------------------------------- the seal id pinned


@pytest.mark.parametrize("device,backend", ENGINES)
def test_verify_takes_the_expected_seal_as_the_cpu_engine_does(key: paramseal.Key, device: str, backend: str) -> None:
    """An older sealed version put back verifies under its own seal; pinned to the approved id it is tampered."""
    rng = np.random.default_rng(21)
    arrays = {
        "a": helpers.random_tensor(rng, np.float32, (256, 320)),
        "c": helpers.random_tensor(rng, np.float32, (90,)),
    }
    first = paramseal.seal(arrays, key)
    changed = {**first.tensors, "a": (first.tensors["a"] * np.float32(0.5)).astype(np.float32)}
    second = paramseal.seal(changed, key, reseal=True)  # the approved version
    id1, id2 = first.header.salt.hex(), second.header.salt.hex()
    old = to_device({n: numpy_to_tensor(a) for n, a in first.tensors.items()}, device)
    host = {n: tensor_to_numpy(t, n) for n, t in old.items()}
    v = gpu.GpuVerifier(old, key, first.header_json, backend=backend)  # type: ignore[arg-type]
    assert v.verify(expect_seal=id1.upper()).to_dict() == v.verify().to_dict()  # its own id: intact, any case
    rep = v.verify(expect_seal=id2)
    assert rep.status == "tampered" and not rep.recoverable and rep.exit_code == 2 and rep.seal_id == id1
    assert any(f"carries seal {id1}, not the one expected" in m for m in rep.metadata_issues)
    assert rep.to_dict() == paramseal.verify(host, key, first.header_json, expect_seal=id2).to_dict()
    # the approved header given over the older weights: the weights' own copies name the seal they carry
    rep = gpu.GpuVerifier(old, key, second.header_json, backend=backend).verify(expect_seal=id2)  # type: ignore[arg-type]
    assert rep.seal_id == id1 and not rep.recoverable
    assert rep.to_dict() == paramseal.verify(host, key, second.header_json, expect_seal=id2).to_dict()
    with pytest.raises(paramseal.UsageError, match="32 hex digits"):
        v.verify(expect_seal=id1[:-1])


def test_device_memory_besides_the_weights_is_what_docs_gpu_says(key: paramseal.Key) -> None:
    """docs/gpu.md gave 2.2% / 4.1% (one 4-byte constant a block) after each block got an 8-byte (r, pad) and an
    8-byte x_b: the verifier's own buffers, plus the Triton program table, against the page's figures."""
    import re

    text = (Path(__file__).resolve().parents[1] / "docs" / "gpu.md").read_text(encoding="utf-8")
    m = re.search(r"about\s+([\d.]+)% of an fp32 model and ([\d.]+)% of a bf16\s+one", text)
    assert m, "docs/gpu.md no longer states the verifier's device memory"
    for dt, said in (("float32", m[1]), ("bfloat16", m[2])):
        t = getattr(torch, dt)
        plain = {f"w{i}": (torch.arange(65536 * 4, dtype=torch.float32) % 97 / 1000).to(t) for i in range(4)}
        sealed = paramseal.seal(plain, key)
        state = {n: numpy_to_tensor(a) for n, a in sealed.tensors.items()}
        v = gpu.GpuVerifier(state, key, sealed.header_json, backend="torch")
        assert v.check().ok
        weights = sum(x.numel() * x.element_size() for x in state.values())
        per_device = (v._c_buffers, v._x_buffers, v._flag_buffers)
        bufs = sum(b.numel() * b.element_size() for d in per_device for b in d.values())
        bpp = gpu.tile(BLOCK * state["w0"].element_size() // 2)[0]
        table = 12 * sum(-(-(x.numel() // BLOCK) // bpp) for x in state.values())  # int32 tensor + int64 first block
        assert f"{100 * (bufs + table) / weights:.1f}" == said, (dt, bufs, table, weights)

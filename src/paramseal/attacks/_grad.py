"""Attacks that need a task model and gradients: a progressive bit-flip search and fine-tuning.

The model is any object with ``loss(params, batch)``: ``params`` maps every float tensor
name to an fp32 torch tensor; ``batch=None`` is the attacker's evaluation set and
``batch=i`` the i-th training minibatch. :mod:`paramseal.evaluation.models` provides them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from .._bits import uint_view
from ..errors import MissingDependencyError, UsageError
from ._spec import AttackSpec
from ._values import Draft, Tensors, classifier, is_float, pick

if TYPE_CHECKING:
    import torch

#: Per tensor, the values with the largest gradient that the bit search considers.
TOP_PER_TENSOR = 16
#: Candidates (by first-order loss increase) whose real loss is evaluated before flipping the best.
EXACT_CANDIDATES = 4


class GradModel(Protocol):
    """What bfa and finetune need from a task model."""

    def loss(self, params: Mapping[str, torch.Tensor], batch: int | None) -> torch.Tensor:
        """Task loss with these weights on the evaluation set (``None``) or training minibatch ``batch``."""
        ...


def _torch(kind: str = "bfa or finetune") -> Any:
    try:
        import torch
    except ImportError:  # "the bfa attack needs ...": the error adds "needs", so one attack is named
        raise MissingDependencyError(f"the {kind} attack", "eval") from None
    return torch


def _params(t: Mapping[str, Any], trainable: list[str], kind: str) -> dict[str, Any]:
    if ints := [n for n in trainable if not is_float(t[n])]:  # named with --tensor: the task model takes floats
        raise UsageError(f"{kind} changes float tensors only; --tensor {', '.join(map(repr, ints))} is not float")
    torch = _torch()
    # np.array copies: torch.from_numpy shares memory, and the optimiser must never write into the input
    out = {n: torch.from_numpy(np.array(a, dtype=np.float32, order="C")) for n, a in t.items() if is_float(a)}
    for n in trainable:
        out[n].requires_grad_(True)
    return out


#: torch's words for tensors of the wrong shape or dtype ("mat1 and mat2 shapes cannot be multiplied",
#: "The size of tensor a (3) must match ...", "expected scalar type Float but found Half", ...).
_MISFIT = re.compile(r"shape|size|dimension|dtype|scalar type", re.IGNORECASE)


def _first_loss(model: GradModel, p: Mapping[str, Any], batch: int | None, kind: str, names: list[str]) -> Any:
    """The task loss, first called: a tensor it lacks or cannot use means a model of another task."""
    name = getattr(model, "name", "the task model")
    fix = f"{kind} runs on the weights of the built-in task model it is given (--model {name})"
    try:
        loss = model.loss(p, batch)
    except KeyError as e:  # the task's forward pass names a tensor this model does not hold as a float
        raise UsageError(f"the model has no float tensor {e.args[0]!r}, which {name} needs; {fix}") from None
    except RuntimeError as e:  # torch: tensors of shapes the task's forward pass cannot use
        first = (str(e).splitlines() or [""])[0]
        if isinstance(e, _torch().OutOfMemoryError) or not _MISFIT.search(first):  # not the model's fault
            raise
        raise UsageError(f"the model's tensors do not fit {name} ({first}); {fix}") from None
    # no chosen tensor reaches the loss: no gradient to follow, nothing would change. requires_grad alone
    # passed a task model's own weights (minilm's on the demo MLP), then bfa had no flip to rank: an IndexError
    torch = _torch()
    if not loss.requires_grad or not any(
        g is not None for g in torch.autograd.grad(loss, [p[n] for n in names], allow_unused=True, retain_graph=True)
    ):
        raise UsageError(f"{name}'s task loss uses none of the tensors {', '.join(map(repr, names))}; {fix}")
    return loss


def _real_loss(model: GradModel, p: Mapping[str, Any]) -> float:
    torch = _torch()
    with torch.no_grad():
        v = float(model.loss(p, None))
    return v if math.isfinite(v) else math.inf


def bfa(t: Tensors, spec: AttackSpec, model: GradModel) -> tuple[Tensors, str]:
    """Flip up to ``n`` bits one at a time, each the most damaging found by gradient (Rakin et al. 2019, for floats).

    Each round ranks, for the values with the largest loss gradient in every chosen tensor,
    every single-bit flip by its first-order loss increase (gradient x change in value),
    evaluates the real loss of the best few and keeps the worst for the model. A bit is
    never flipped twice. Returns the tensors and why the search stopped short of ``n``
    flips ('' when it made them all).

    Every flip made raises the task loss. The search stops early, as Rakin et al.'s stops once
    the model is broken, when the loss is no longer finite (one exponent flip of a float32
    weight commonly overflows the outputs: every later candidate would score the same, and a
    flip picked among them would be an arbitrary, harmless one) or when no flip evaluated
    raises it.
    """
    torch = _torch("bfa")
    names = pick(t, spec, lambda _n, a: is_float(a))
    d = Draft(t)
    done: set[tuple[str, int, int]] = set()
    p = _params(d.t, names, "bfa")  # kept in step with d: one value changes per round

    def flipped(nm: str, i: int, bit: int) -> float:
        v = d.t[nm].reshape(-1)[i : i + 1].copy()
        uint_view(v)[0] ^= uint_view(v).dtype.type(1 << bit)
        with np.errstate(all="ignore"):
            return float(v.astype(np.float32)[0])

    n = spec.n or 5
    for r in range(n):
        loss = _first_loss(model, p, None, "bfa", names) if r == 0 else model.loss(p, None)
        now = float(loss.detach())
        if not math.isfinite(now):
            if r == 0:  # nothing to rank flips by: an input broken already
                raise UsageError(
                    f"the task loss of this model is {now} before any flip, so bfa cannot rank flips by the damage "
                    "they do; the model is broken already (check it with verify)"
                )
            return d.t, (
                f"stopped after {r} of {n} flips: flip {r} made the task loss non-finite (the model's outputs "
                "overflow), so no further flip can be ranked by the damage it does"
            )
        grads = torch.autograd.grad(loss, [p[n] for n in names], allow_unused=True)
        cands: list[tuple[float, str, int, int]] = []
        for nm, g in zip(names, grads, strict=True):
            if g is None:  # a tensor the task does not use (e.g. a pooler nobody calls)
                continue
            gf = g.detach().numpy().astype(np.float64).reshape(-1)
            k = min(TOP_PER_TENSOR, gf.size)
            top = np.argpartition(-np.abs(gf), k - 1)[:k]
            u = uint_view(d.t[nm])
            old = d.t[nm].reshape(-1)[top].astype(np.float64)
            for bit in range(u.dtype.itemsize * 8):
                with np.errstate(all="ignore"):
                    new = (u[top] ^ u.dtype.type(1 << bit)).view(d.t[nm].dtype).astype(np.float64)
                    score = np.nan_to_num(gf[top] * (new - old), nan=np.inf)
                cands += [(float(s), nm, int(i), bit) for s, i in zip(score, top, strict=True)]
        cands = sorted((c for c in cands if (c[1], c[2], c[3]) not in done), key=lambda c: -c[0])
        best, best_loss = cands[0], -math.inf
        for c in cands[:EXACT_CANDIDATES]:
            flat = p[c[1]].detach().view(-1)  # try the flip in place, then undo it
            was = float(flat[c[2]])
            flat[c[2]] = flipped(c[1], c[2], c[3])
            lv = _real_loss(model, p)
            flat[c[2]] = was
            if lv > best_loss:
                best, best_loss = c, lv
        if not best_loss > now:  # every flip made does damage: a harmless one would pad the count
            return d.t, (
                f"stopped after {r} of {n} flips: none of the {min(EXACT_CANDIDATES, len(cands))} best-ranked "
                f"flips raises the task loss ({now:.6g})"
            )
        _, nm, i, bit = best
        p[nm].detach().view(-1)[i] = flipped(nm, i, bit)
        u = d.bits(nm)
        u[i] ^= u.dtype.type(1 << bit)
        done.add((nm, i, bit))
    return d.t, ""


def finetune(t: Tensors, spec: AttackSpec, model: GradModel) -> Tensors:
    """``steps`` plain SGD steps at ``lr`` on the chosen tensors.

    Default: the model's ``finetune_tensors`` if it names some, else the classifier weight and bias.
    """
    torch = _torch("finetune")
    preset = getattr(model, "finetune_tensors", None)
    if spec.tensors:
        names = pick(t, spec, lambda _n, a: is_float(a))
    elif preset:
        names = [n for n in preset if n in t]
    else:
        w = classifier(t)
        names = [w] + [b for b in (w.removesuffix("weight") + "bias",) if b in t and b != w]
    if not names:  # an optimiser of no tensors raised ValueError, an internal error
        name = getattr(model, "name", "the task model")
        raise UsageError(
            f"the model has none of the tensors {name} fine-tunes ({', '.join(map(repr, preset or ()))}); finetune "
            f"runs on the weights of the built-in task model it is given (--model {name})"
        )
    p = _params(t, names, "finetune")
    opt = torch.optim.SGD([p[n] for n in names], lr=spec.sgd_lr)
    for step in range(spec.sgd_steps):
        opt.zero_grad()
        (_first_loss(model, p, step, "finetune", names) if step == 0 else model.loss(p, step)).backward()
        opt.step()
    d = Draft(t)
    for nm in names:
        d.t[nm] = p[nm].detach().numpy().astype(t[nm].dtype).reshape(t[nm].shape)
    return d.t

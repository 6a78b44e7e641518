"""What an attack is: its kind and options, checked once, with per-kind defaults."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal, get_args

from ..errors import UsageError

Kind = Literal[
    "bitflip",
    "bfa",
    "random-modify",
    "noise",
    "finetune",
    "prune",
    "backdoor-row",
    "replace-tensor",
    "zero-tensor",
    "lsb-rewrite",
    "swap",
    "quantize",
    "metadata",
    "truncate",
]
KINDS: tuple[Kind, ...] = get_args(Kind)
Field = Literal["any", "sign", "exponent", "mantissa", "watermark"]
FIELDS: tuple[Field, ...] = get_args(Field)

#: The modes each kind accepts; the first is the default.
MODES: dict[str, tuple[str, ...]] = {
    "swap": ("blocks", "rows", "tensors"),
    "quantize": ("int8", "fp16"),
    "metadata": ("edit", "strip", "user"),
}

#: The fraction each kind applies when --fraction is not given (replace-tensor, zero-tensor: one tensor).
FRACTION_DEFAULTS: dict[str, float] = {"random-modify": 0.01, "prune": 0.1, "lsb-rewrite": 1.0, "truncate": 0.5}

#: Kinds that need a task model (gradients on its data).
NEEDS_MODEL: tuple[Kind, ...] = ("bfa", "finetune")


#: Which kinds read each optional setting (anything else given is refused, not ignored).
_APPLIES: dict[str, tuple[str, ...]] = {
    "--n": ("bitflip", "bfa", "backdoor-row", "swap"),
    "--fraction": ("random-modify", "prune", "lsb-rewrite", "replace-tensor", "zero-tensor", "truncate"),
    "--bits": ("bitflip", "lsb-rewrite"),
    "--contiguous": ("random-modify",),
    "--model": NEEDS_MODEL,
    "--tensor": tuple(k for k in KINDS if k not in ("metadata", "truncate")),  # those two work on the file
    "--sigma": ("noise",),
    "--steps": ("finetune",),
    "--lr": ("finetune",),
}
#: The tuning settings' values when not given.
TUNING_DEFAULTS: dict[str, float] = {"sigma": 0.01, "steps": 10, "lr": 0.01}


@dataclass(frozen=True, slots=True)
class AttackSpec:
    """One tampering, fully described; with the same ``seed`` it changes exactly the same bits.

    ``n``: bits (bitflip; bfa: at most, as its search stops early), rows (backdoor-row), pairs (swap).
    ``fraction``: of parameters (random-modify, prune, lsb-rewrite), of all parameters to
    replace by whole tensors (replace-tensor, zero-tensor), of the file kept (truncate).
    ``sigma``: noise std relative to each tensor's std. ``steps``/``lr``: finetune.
    ``bits``: low bits rewritten by lsb-rewrite (default: the seal's k per tensor).
    ``tensors``: restrict to these tensors (default depends on the kind).
    ``contiguous``: random-modify in a few runs of consecutive values instead of scattered.
    ``model``: the built-in task model for bfa and finetune (``paramseal eval --help`` lists them).
    """

    kind: Kind
    seed: int = 0
    n: int | None = None
    fraction: float | None = None
    sigma: float | None = None  # noise; None: TUNING_DEFAULTS (as steps and lr)
    field: Field = "any"
    tensors: tuple[str, ...] = ()
    mode: str | None = None
    steps: int | None = None  # finetune
    lr: float | None = None  # finetune
    bits: int | None = None
    contiguous: bool = False
    model: str | None = None

    def __post_init__(self) -> None:
        """Reject options that do not fit the kind, naming the fix."""
        if self.kind not in KINDS:
            raise UsageError(f"unknown attack kind '{self.kind}'; choose one of {', '.join(KINDS)}")
        if self.field not in FIELDS:
            raise UsageError(f"unknown bit field '{self.field}'; choose one of {', '.join(FIELDS)}")
        if self.seed < 0:  # numpy's seed sequence takes non-negative integers only
            raise UsageError(f"--seed {self.seed} must be 0 or more")
        if self.n is not None and self.n < 1:
            raise UsageError(f"--n {self.n} must be at least 1")
        if self.fraction is not None and not 0.0 < self.fraction <= 1.0:
            raise UsageError(f"--fraction {self.fraction} must be in (0, 1]")
        if self.kind == "truncate" and self.fraction == 1.0:  # keeping every byte is no attack
            raise UsageError("truncate --fraction 1.0 keeps the whole file; give a fraction below 1")
        modes = MODES.get(self.kind)
        if self.mode is not None and (modes is None or self.mode not in modes):
            allowed = f"choose one of {', '.join(modes)}" if modes else "this kind takes no --mode"
            raise UsageError(f"--mode {self.mode} does not apply to {self.kind}: {allowed}")
        if self.field != "any" and self.kind != "bitflip":
            raise UsageError(f"--field applies to bitflip only, not {self.kind}")
        if twice := sorted({n for n in self.tensors if self.tensors.count(n) > 1}):
            # a tensor named twice is drawn from twice: bits flipped twice cancel, fractions count it double
            raise UsageError(f"--tensor {', '.join(map(repr, twice))} given more than once; name each tensor once")
        if self.bits is not None and self.bits < 1:
            raise UsageError(f"--bits {self.bits} must be at least 1")
        if self.bits is not None and self.kind == "bitflip" and self.field != "watermark":
            raise UsageError(f"--bits applies to bitflip with --field watermark only, not --field {self.field}")
        if self.kind in ("replace-tensor", "zero-tensor") and self.tensors and self.fraction is not None:
            # the named tensors are replaced whole: a fraction would be ignored, yet recorded as applied
            raise UsageError(f"{self.kind} takes --tensor or --fraction, not both (--tensor replaces those whole)")
        if self.kind == "backdoor-row" and len(self.tensors) > 1:  # it overwrites rows of one tensor only
            raise UsageError(f"backdoor-row takes one --tensor, not {len(self.tensors)}; run it once per tensor")
        given = {
            "--n": self.n is not None,
            "--fraction": self.fraction is not None,
            "--bits": self.bits is not None,
            "--contiguous": self.contiguous,
            "--model": self.model is not None,
            "--tensor": bool(self.tensors),
            "--sigma": self.sigma is not None,
            "--steps": self.steps is not None,
            "--lr": self.lr is not None,
        }
        wrong = [opt for opt, on in given.items() if on and self.kind not in _APPLIES[opt]]
        if wrong:
            raise UsageError(
                f"{', '.join(wrong)} {'does' if len(wrong) == 1 else 'do'} not apply to {self.kind}; "
                + "; ".join(f"{opt} applies to {', '.join(_APPLIES[opt])}" for opt in wrong)
            )
        # each setting given is judged alone, named with its value (the defaults are valid); NaN fails each
        if self.sigma is not None and not 0 <= self.sigma < math.inf:
            raise UsageError(f"--sigma {self.sigma} must be a finite number, 0 or more")
        if self.steps is not None and self.steps < 1:
            raise UsageError(f"--steps {self.steps} must be at least 1")
        if self.lr is not None and not 0 < self.lr < math.inf:
            raise UsageError(f"--lr {self.lr} must be a finite number above 0")

    @property
    def mode_or_default(self) -> str:
        """The mode in effect ('' for kinds without modes)."""
        modes = MODES.get(self.kind)
        return self.mode or (modes[0] if modes else "")

    @property
    def noise_sigma(self) -> float:
        return TUNING_DEFAULTS["sigma"] if self.sigma is None else self.sigma

    @property
    def sgd_steps(self) -> int:
        return int(TUNING_DEFAULTS["steps"]) if self.steps is None else self.steps

    @property
    def sgd_lr(self) -> float:
        return TUNING_DEFAULTS["lr"] if self.lr is None else self.lr

    @property
    def fraction_or_default(self) -> float:
        """The fraction in effect, for the kinds with a default (see :data:`FRACTION_DEFAULTS`)."""
        return self.fraction if self.fraction is not None else FRACTION_DEFAULTS[self.kind]

    def options(self) -> dict[str, Any]:
        """The options that matter for this kind (for ground-truth records and run ids)."""
        k = self.kind
        d: dict[str, Any] = {}
        if k in ("bitflip", "bfa", "backdoor-row", "swap"):
            d["n"] = self.n or (5 if k == "bfa" else 1)
        if k == "bitflip":
            d["field"] = self.field
        if k in ("random-modify", "prune", "lsb-rewrite", "replace-tensor", "zero-tensor", "truncate"):
            d["fraction"] = self.fraction if self.fraction is not None else FRACTION_DEFAULTS.get(k)  # as applied
        if k == "random-modify":
            d["contiguous"] = self.contiguous
        if k == "noise":
            d["sigma"] = self.noise_sigma
        if k == "finetune":
            d["steps"], d["lr"] = self.sgd_steps, self.sgd_lr
        if k == "lsb-rewrite" or (k == "bitflip" and self.field == "watermark"):
            d["bits"] = self.bits  # None: the seal's k per tensor
        if k in NEEDS_MODEL:
            d["model"] = self.model
        if self.mode_or_default:
            d["mode"] = self.mode_or_default
        if self.tensors:
            d["tensors"] = list(self.tensors)
        return d

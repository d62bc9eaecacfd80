"""Loss functions, selectable by name or as objects.

Each loss is computed by a C kernel, in double precision sums:

=======================  =====================  ===============================
object                   name                   per element (d = output - y)
=======================  =====================  ===============================
MeanSquaredError         "mse"                  d^2
MeanAbsoluteError        "mae"                  |d|
Huber(delta=1)           "huber"                d^2 / 2 if |d| <= delta, else
                                                delta (|d| - delta / 2)
CrossEntropy             "cross_entropy"        softmax cross-entropy of logits
BinaryCrossEntropy       "binary_cross_entropy" sigmoid cross-entropy of logits
Poisson                  "poisson"              exp(z) - y z, z the log-rate
=======================  =====================  ===============================

Cross-entropy takes logits and applies softmax itself (one class label
per row, or a row of class probabilities), binary cross-entropy applies
the sigmoid itself (0/1 or soft targets, one per output, so several
outputs make a multi-label classifier), and Poisson reads the output as
the log of the rate; its ``predict`` returns the rate ``exp(output)``.

Every loss is a mean: over rows for cross-entropy, over all outputs for
the others. ``fit(..., sample_weight=w)`` multiplies row i's loss by
``w[i]`` and still divides by the number of rows (not by the sum of the
weights, as Keras does), so a weight of 2 counts a row twice.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Union

import numpy as np

from . import _core


def _positive(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
        raise ValueError(f"{what} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or value <= 0.0:
        raise ValueError(f"{what} must be finite and > 0, got {value!r}")
    return value


class Loss:
    """Base class of the losses; `name` is the C library's name."""

    name: str = ""
    #: Whether targets are classes (classification) or values.
    is_classification: bool = False

    @property
    def code(self) -> int:
        return _core.LOSSES.index(self.name)

    def options(self, n_outputs: int | None = None) -> dict[str, Any]:
        """The loss's options as the compiled core takes them, for a
        model with `n_outputs` outputs."""
        return {"kind": self.name}

    def _params(self) -> tuple:
        return ()

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self._params() == other._params()

    def __hash__(self) -> int:
        return hash((self.name, self._params()))


class MeanSquaredError(Loss):
    """Mean of (output - target)^2 over all outputs; for regression."""

    name = "mse"


class MeanAbsoluteError(Loss):
    """Mean of |output - target| over all outputs; for regression that is
    robust to outliers (its gradient at 0 is taken as 0)."""

    name = "mae"


class Huber(Loss):
    """Squared error near zero, absolute error beyond ``delta``:
    d^2 / 2 for |d| <= delta, else delta (|d| - delta / 2)."""

    name = "huber"

    def __init__(self, delta: float = 1.0) -> None:
        self.delta = _positive(delta, "delta")

    def options(self, n_outputs: int | None = None) -> dict[str, Any]:
        return {"kind": self.name, "delta": self.delta}

    def _params(self) -> tuple:
        return (self.delta,)

    def __repr__(self) -> str:
        return f"Huber(delta={self.delta!r})"


class CrossEntropy(Loss):
    """Softmax cross-entropy from logits.

    Targets are class indices (one per row) or class probabilities
    (shape (n, classes), each row summing to 1).

    label_smoothing : float in [0, 1)
        The targets become ``(1 - s) p + s / classes``.
    class_weight : sequence or dict, optional
        A weight per class (a dict may leave classes out: they weigh 1);
        the loss of each class's target probability is multiplied by it.
    """

    name = "cross_entropy"
    is_classification = True

    def __init__(
        self,
        label_smoothing: float = 0.0,
        class_weight: Sequence[float] | Mapping[int, float] | None = None,
    ) -> None:
        if isinstance(label_smoothing, bool) or not isinstance(
            label_smoothing, (int, float, np.number)
        ):
            raise ValueError(f"label_smoothing must be a number, got {label_smoothing!r}")
        if not 0.0 <= float(label_smoothing) < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing!r}")
        self.label_smoothing = float(label_smoothing)
        if isinstance(class_weight, Mapping):
            class_weight = {int(k): float(v) for k, v in class_weight.items()}
            values = list(class_weight.values())
            if any(k < 0 for k in class_weight):
                raise ValueError("class_weight has a negative class index")
        elif class_weight is not None:
            class_weight = tuple(float(v) for v in np.asarray(class_weight).reshape(-1))
            values = list(class_weight)
        else:
            values = []
        if any(not math.isfinite(v) or v < 0.0 for v in values):
            raise ValueError(f"class weights must be finite and >= 0, got {class_weight!r}")
        self.class_weight = class_weight

    def class_weights(self, n_classes: int) -> np.ndarray | None:
        """One float32 weight per class, or None without class weights."""
        cw = self.class_weight
        if cw is None:
            return None
        if isinstance(cw, dict):
            if cw and max(cw) >= n_classes:
                raise ValueError(
                    f"class_weight names class {max(cw)}, but the model has {n_classes} classes"
                )
            weights = np.ones(n_classes, dtype=np.float32)
            for k, v in cw.items():
                weights[k] = v
            return weights
        if len(cw) != n_classes:
            raise ValueError(
                f"class_weight has {len(cw)} values, but the model has {n_classes} classes"
            )
        return np.array(cw, dtype=np.float32)

    def options(self, n_outputs: int | None = None) -> dict[str, Any]:
        weights = None if n_outputs is None else self.class_weights(n_outputs)
        return {
            "kind": self.name,
            "label_smoothing": self.label_smoothing,
            "class_weights": weights,
        }

    def _span(self) -> int:
        """The classes the class weights name: a sequence's length, one
        past a dict's largest class, 0 without weights."""
        cw = self.class_weight
        if cw is None:
            return 0
        if isinstance(cw, dict):
            return max(cw, default=-1) + 1
        return len(cw)

    def __eq__(self, other: object) -> bool:
        # {1: 2.0} equals (1.0, 2.0, 1.0): weights are compared as the
        # per-class values they give, absent ones counting as 1.
        if type(other) is not CrossEntropy or self.label_smoothing != other.label_smoothing:
            return False
        n = max(self._span(), other._span())
        sequences = [cw for cw in (self.class_weight, other.class_weight) if isinstance(cw, tuple)]
        if any(len(cw) != n for cw in sequences):
            return False
        mine, theirs = self.class_weights(n), other.class_weights(n)
        mine = np.ones(n, np.float32) if mine is None else mine
        theirs = np.ones(n, np.float32) if theirs is None else theirs
        return bool(np.array_equal(mine, theirs))

    def __hash__(self) -> int:
        return hash((self.name, self.label_smoothing))

    def __repr__(self) -> str:
        args = []
        if self.label_smoothing:
            args.append(f"label_smoothing={self.label_smoothing!r}")
        if self.class_weight is not None:
            args.append(f"class_weight={self.class_weight!r}")
        return f"CrossEntropy({', '.join(args)})"


class BinaryCrossEntropy(Loss):
    """Sigmoid cross-entropy from logits, with targets in [0, 1] per
    output: one output for a binary task, several for multi-label.

    pos_weight : float > 0
        Weight of the positive term: ``pos_weight * t * softplus(-z) +
        (1 - t) * softplus(z)``; above 1 it favours recall.
    """

    name = "binary_cross_entropy"
    is_classification = True

    def __init__(self, pos_weight: float = 1.0) -> None:
        self.pos_weight = _positive(pos_weight, "pos_weight")

    def options(self, n_outputs: int | None = None) -> dict[str, Any]:
        return {"kind": self.name, "pos_weight": self.pos_weight}

    def _params(self) -> tuple:
        return (self.pos_weight,)

    def __repr__(self) -> str:
        if self.pos_weight == 1.0:
            return "BinaryCrossEntropy()"
        return f"BinaryCrossEntropy(pos_weight={self.pos_weight!r})"


class Poisson(Loss):
    """Poisson negative log-likelihood with a log link: the output z is
    the log of the rate, the loss ``exp(z) - y z`` (log(y!) left out), for
    counts y >= 0. ``predict`` returns the rate ``exp(z)``."""

    name = "poisson"


LossLike = Union[str, Loss]

_BY_NAME: dict[str, Any] = {
    "mse": MeanSquaredError,
    "mean_squared_error": MeanSquaredError,
    "mae": MeanAbsoluteError,
    "mean_absolute_error": MeanAbsoluteError,
    "huber": Huber,
    "cross_entropy": CrossEntropy,
    "categorical_crossentropy": CrossEntropy,
    "binary_cross_entropy": BinaryCrossEntropy,
    "binary_crossentropy": BinaryCrossEntropy,
    "poisson": Poisson,
}

#: Every name ``get`` accepts.
NAMES: tuple[str, ...] = tuple(_BY_NAME)


def get(loss: LossLike) -> Loss:
    """The loss object for a name or an object."""
    if isinstance(loss, Loss):
        return loss
    if isinstance(loss, str) and loss in _BY_NAME:
        return _BY_NAME[loss]()
    raise ValueError(
        f"unknown loss {loss!r}; use one of {', '.join(NAMES)} or a bprop.losses.Loss object"
    )


def _float32_value(value: float) -> float:
    """The shortest decimal that rounds to the same float32 as `value`, so
    that options kept as float32 (Huber(0.1)) read back as given."""
    return float(str(np.float32(value)))


def from_options(options: dict[str, Any]) -> Loss:
    """The loss object the compiled core's options describe."""
    kind = options["kind"]
    if kind == "huber":
        return Huber(_float32_value(options.get("delta") or 1.0))
    if kind == "binary_cross_entropy":
        return BinaryCrossEntropy(_float32_value(options.get("pos_weight") or 1.0))
    if kind == "cross_entropy":
        weights = options.get("class_weights")
        return CrossEntropy(
            label_smoothing=_float32_value(options.get("label_smoothing") or 0.0),
            class_weight=None if weights is None else [_float32_value(w) for w in weights],
        )
    return get(kind)

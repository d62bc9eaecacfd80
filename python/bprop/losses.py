"""Loss functions, selectable by name or as objects.

Each loss is computed by a fused C kernel: cross-entropy takes logits and
applies softmax itself, binary cross-entropy applies the sigmoid itself.
"""

from __future__ import annotations

from typing import Union

from . import _core


class Loss:
    """Base class of the losses; `name` is the C library's name."""

    name: str = ""
    #: Whether targets are class labels (classification) or values.
    is_classification: bool = False

    @property
    def code(self) -> int:
        return _core.LOSSES.index(self.name)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other)

    def __hash__(self) -> int:
        return hash(self.name)


class MeanSquaredError(Loss):
    """Mean of (prediction - target)^2 over all outputs; for regression."""

    name = "mse"


class CrossEntropy(Loss):
    """Softmax cross-entropy from logits, with integer class labels."""

    name = "cross_entropy"
    is_classification = True


class BinaryCrossEntropy(Loss):
    """Sigmoid cross-entropy from logits, with 0/1 targets per output."""

    name = "binary_cross_entropy"
    is_classification = True


LossLike = Union[str, Loss]

_BY_NAME = {
    "mse": MeanSquaredError,
    "mean_squared_error": MeanSquaredError,
    "cross_entropy": CrossEntropy,
    "categorical_crossentropy": CrossEntropy,
    "binary_cross_entropy": BinaryCrossEntropy,
    "binary_crossentropy": BinaryCrossEntropy,
}


def get(loss: LossLike) -> Loss:
    """The loss object for a name or an object."""
    if isinstance(loss, Loss):
        return loss
    if isinstance(loss, str) and loss in _BY_NAME:
        return _BY_NAME[loss]()
    raise ValueError(
        f"unknown loss {loss!r}; use 'mse', 'cross_entropy', 'binary_cross_entropy' "
        "or a bprop.losses.Loss object"
    )

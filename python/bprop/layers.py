"""Layer specifications for bprop.Sequential."""

from __future__ import annotations

from . import _core

ACTIVATIONS = _core.ACTIVATIONS


class Dense:
    """A fully connected layer: ``y = activation(x @ W + b)``.

    Parameters
    ----------
    units : int
        Number of outputs, >= 1.
    activation : str
        One of "identity" (also "linear" or None), "relu", "sigmoid",
        "tanh", or "softmax" (output layer only).
    """

    def __init__(self, units: int, activation: str | None = "identity") -> None:
        if isinstance(units, bool) or not isinstance(units, int) or units < 1:
            raise ValueError(f"units must be an integer >= 1, got {units!r}")
        if activation is None or activation == "linear":
            activation = "identity"
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"unknown activation {activation!r}; choose one of {', '.join(ACTIVATIONS)}"
            )
        self.units = units
        self.activation = activation

    @property
    def activation_code(self) -> int:
        return ACTIVATIONS.index(self.activation)

    def __repr__(self) -> str:
        return f"Dense({self.units}, activation={self.activation!r})"

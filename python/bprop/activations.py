"""Activation functions, selectable by name or as objects.

Every activation runs in the C core, both in the fused forward pass of a
dense layer and in its backward pass. By name, an activation takes its
default parameter; as an object it takes any:

>>> bprop.Dense(64, activation="leaky_relu")                      # slope 0.01
>>> bprop.Dense(64, activation=bprop.activations.LeakyReLU(0.2))
>>> bprop.Dense(64, activation="leaky_relu", slope=0.2)           # the same

Objects are also callable on arrays: ``bprop.activations.GELU()(x)``.

Design decisions:
- The derivatives of elu, gelu, gelu_tanh, silu and softplus need the
  activation's input as well as its output; training keeps the
  pre-activations of layers that use them (and only of those), which
  costs one more buffer of the layer's outputs per batch.
- softmax and log_softmax work on whole rows and may only end a network;
  with cross-entropy they are fused with the loss, which then works on
  the logits.
"""

from __future__ import annotations

import math
from typing import Any, Union

import numpy as np

from . import _core


class Activation:
    """Base class of the activations; `name` is the C library's name."""

    name: str = ""
    #: Works on whole rows (softmax, log_softmax): output layers only.
    per_row: bool = False

    @property
    def code(self) -> int:
        """The activation's code in the C library."""
        return _core.ACTIVATIONS.index(self.name)

    @property
    def param(self) -> float:
        """The value the C library takes as the activation's parameter."""
        return 0.0

    @property
    def needs_input(self) -> bool:
        """Whether the derivative needs the input x, not only the output."""
        return _core.activation_needs_input(self.code)

    def __call__(self, x: Any) -> np.ndarray:
        """The activation of an array, as float32: row by row for a 2-D
        array, as one row for a 1-D array."""
        from . import kernels

        if np.ndim(x) == 1:
            return kernels.activation_forward(np.reshape(x, (1, -1)), self)[0]
        return kernels.activation_forward(x, self)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Activation)
            and self.name == other.name
            and self.param == other.param
        )

    def __hash__(self) -> int:
        return hash((self.name, self.param))


class Identity(Activation):
    """``x``: no activation (also "linear", or None)."""

    name = "identity"


class ReLU(Activation):
    """``max(x, 0)``."""

    name = "relu"


def _check_param(value: Any, what: str, default: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise ValueError(f"{what} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or value <= 0.0:
        raise ValueError(f"{what} must be finite and > 0 (default {default:g}), got {value!r}")
    return value


class LeakyReLU(Activation):
    """``x`` for x >= 0, ``slope * x`` below; slope > 0 (default 0.01)."""

    name = "leaky_relu"

    def __init__(self, slope: float = 0.01) -> None:
        self.slope = _check_param(slope, "the slope of leaky_relu", 0.01)

    @property
    def param(self) -> float:
        return self.slope

    def __repr__(self) -> str:
        return f"LeakyReLU(slope={self.slope!r})"


class ELU(Activation):
    """``x`` for x > 0, ``alpha * (exp(x) - 1)`` below; alpha > 0 (default 1)."""

    name = "elu"

    def __init__(self, alpha: float = 1.0) -> None:
        self.alpha = _check_param(alpha, "the alpha of elu", 1.0)

    @property
    def param(self) -> float:
        return self.alpha

    def __repr__(self) -> str:
        return f"ELU(alpha={self.alpha!r})"


class GELU(Activation):
    """``x * Phi(x)``, Phi the standard normal CDF, in its exact erf form
    ("gelu") or, with ``approximate=True``, its tanh approximation
    ``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`` ("gelu_tanh")."""

    def __init__(self, approximate: bool = False) -> None:
        if not isinstance(approximate, (bool, np.bool_)):
            raise ValueError(f"approximate must be True or False, got {approximate!r}")
        self.approximate = bool(approximate)

    @property
    def name(self) -> str:  # type: ignore[override]
        return "gelu_tanh" if self.approximate else "gelu"

    def __repr__(self) -> str:
        return "GELU(approximate=True)" if self.approximate else "GELU()"


class SiLU(Activation):
    """``x * sigmoid(x)`` (also called swish)."""

    name = "silu"


class Sigmoid(Activation):
    """``1 / (1 + exp(-x))``; fused with binary cross-entropy on an output layer."""

    name = "sigmoid"


class Tanh(Activation):
    """``tanh(x)``."""

    name = "tanh"


class Softplus(Activation):
    """``log(1 + exp(x))``, a smooth relu."""

    name = "softplus"


class Softmax(Activation):
    """``exp(x) / sum(exp(x))`` over each row; output layers only."""

    name = "softmax"
    per_row = True


class LogSoftmax(Activation):
    """``x - log(sum(exp(x)))`` over each row, the log of softmax; output
    layers only. With cross-entropy, ``predict_proba`` still returns
    probabilities and the C library's predict the log-probabilities."""

    name = "log_softmax"
    per_row = True


ActivationLike = Union[str, Activation, None]

_BY_NAME: dict[str, Any] = {
    "identity": Identity,
    "linear": Identity,
    "relu": ReLU,
    "leaky_relu": LeakyReLU,
    "elu": ELU,
    "gelu": GELU,
    "gelu_tanh": lambda: GELU(approximate=True),
    "silu": SiLU,
    "swish": SiLU,
    "sigmoid": Sigmoid,
    "tanh": Tanh,
    "softplus": Softplus,
    "softmax": Softmax,
    "log_softmax": LogSoftmax,
}

#: Every name ``get`` accepts.
NAMES: tuple[str, ...] = tuple(_BY_NAME)

#: The keyword parameters each parametrised activation takes by name.
_PARAMS = {"leaky_relu": "slope", "elu": "alpha"}


def get(activation: ActivationLike, **params: Any) -> Activation:
    """The activation object for a name, an object or None (identity).

    Keyword parameters go to the named activation's constructor, e.g.
    ``get("leaky_relu", slope=0.2)``; parameters set to None are ignored.
    """
    given = {key: value for key, value in params.items() if value is not None}
    if isinstance(activation, Activation):
        if given:
            raise ValueError(
                f"{', '.join(given)} cannot be combined with the object {activation!r}; "
                "give the parameter to its constructor"
            )
        return activation
    if activation is None:
        activation = "identity"
    if not isinstance(activation, str) or activation not in _BY_NAME:
        raise ValueError(
            f"unknown activation {activation!r}; choose one of {', '.join(NAMES)} "
            "or a bprop.activations.Activation object"
        )
    takes = _PARAMS.get(activation)
    extra = [key for key in given if key != takes]
    if extra:
        what = f"takes only {takes}=" if takes else "takes no parameter"
        raise ValueError(f"activation {activation!r} {what}, got {', '.join(extra)}=")
    return _BY_NAME[activation](**given)


def from_code(code: int, param: float = 0.0) -> Activation:
    """The activation of a C library code with its (resolved) parameter."""
    name = _core.ACTIVATIONS[code]
    takes = _PARAMS.get(name)
    if takes is not None and param > 0.0:
        # The shortest decimal of the float32 the core keeps: 0.01, not
        # 0.009999999776.
        return get(name, **{takes: float(str(np.float32(param)))})
    return get(name)

"""Layer specifications for bprop.Sequential.

Four kinds of layers, each computed by the C core in training and at
inference:

- ``Dense(units)``: ``activation(x @ W + b)``.
- ``Dropout(rate)``: inverted dropout. In training each input is zeroed
  with probability ``rate`` and the others are scaled by
  ``1 / (1 - rate)``; at inference the layer passes its input through.
  Masks come from the model's seed, the layer and the training step.
- ``BatchNorm()``: each feature normalised with the batch's mean and
  variance in training, and with running averages of them at inference,
  then scaled by gamma and shifted by beta (learned).
- ``LayerNorm()``: each row normalised over its features, then scaled
  and shifted per feature.

The last three keep their input's width. The normalisations take an
activation applied after the shift, so ``Dense(64), BatchNorm(
activation="relu")`` normalises before the nonlinearity.
"""

from __future__ import annotations

from typing import Any, Union

import numpy as np

from . import _core, activations, initializers
from .activations import Activation, ActivationLike
from .initializers import BiasInitLike, Initializer, InitializerLike

#: Activation names in the order of the C library's codes.
ACTIVATIONS = _core.ACTIVATIONS

#: Layer kinds in the order of the C library's codes.
KINDS = ("dense", "dropout", "batch_norm", "layer_norm")


class _Layer:
    """What every layer has: a kind and an activation, as names and as
    the C library's codes."""

    kind = ""
    activation_fn: Activation

    @property
    def activation(self) -> str:
        """The activation's name."""
        return self.activation_fn.name

    @property
    def activation_code(self) -> int:
        return self.activation_fn.code

    @property
    def activation_param(self) -> float:
        """The activation's parameter as the C library takes it (0: none)."""
        return self.activation_fn.param

    @property
    def kind_code(self) -> int:
        return KINDS.index(self.kind)


class Dense(_Layer):
    """A fully connected layer: ``y = activation(x @ W + b)``.

    Parameters
    ----------
    units : int
        Number of outputs, >= 1.
    activation : str, Activation or None
        A name: "identity" (also "linear" or None), "relu", "leaky_relu",
        "elu", "gelu", "gelu_tanh", "silu" (or "swish"), "sigmoid",
        "tanh", "softplus", or, on the output layer only, "softmax" or
        "log_softmax"; or an object from ``bprop.activations``, such as
        ``LeakyReLU(0.2)``.
    use_bias : bool
        Whether the layer adds a bias to each output (default True).
    kernel_init : str or Initializer, optional
        The weights' initialiser (see ``bprop.initializers``); by default
        the model's ``init``.
    bias_init : float, str or Constant
        The biases' initial value: a number, "zeros" (default) or "ones".
    slope, alpha : float, optional
        Shortcuts for the parameter of a named activation:
        ``Dense(64, activation="leaky_relu", slope=0.2)`` is
        ``Dense(64, activation=LeakyReLU(0.2))``; likewise ``alpha`` for
        "elu".

    ``activation`` keeps the name; ``activation_fn`` the object.
    """

    kind = "dense"

    def __init__(
        self,
        units: int,
        activation: ActivationLike = "identity",
        use_bias: bool = True,
        kernel_init: InitializerLike | None = None,
        bias_init: BiasInitLike = 0.0,
        slope: float | None = None,
        alpha: float | None = None,
    ) -> None:
        if isinstance(units, bool) or not isinstance(units, int) or units < 1:
            raise ValueError(f"units must be an integer >= 1, got {units!r}")
        if not isinstance(use_bias, bool):
            raise ValueError(f"use_bias must be True or False, got {use_bias!r}")
        self.units = units
        self.activation_fn: Activation = activations.get(activation, slope=slope, alpha=alpha)
        self.use_bias = use_bias
        self.kernel_init: Initializer | None = (
            None if kernel_init is None else initializers.get(kernel_init)
        )
        self.bias_init = initializers.bias_value(bias_init)
        if self.bias_init != 0.0 and not use_bias:
            raise ValueError("bias_init needs use_bias=True")

    def options(self) -> tuple[float, float, float]:
        """(rate, eps, momentum) as the C library takes them; 0: unused."""
        return (0.0, 0.0, 0.0)

    def config(self) -> dict[str, Any]:
        """The arguments that rebuild this layer, as plain values."""
        return {
            "kind": self.kind,
            "units": self.units,
            "activation": self.activation,
            "param": self.activation_param,
            "use_bias": self.use_bias,
            "kernel_init": None if self.kernel_init is None else self.kernel_init.name,
            "bias_init": self.bias_init,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Dense:
        """The layer ``config()`` describes."""
        return cls(
            config["units"],
            activation=activations.from_code(
                ACTIVATIONS.index(config["activation"]), config.get("param", 0.0)
            ),
            use_bias=config.get("use_bias", True),
            kernel_init=config.get("kernel_init"),
            bias_init=config.get("bias_init", 0.0),
        )

    def __repr__(self) -> str:
        fn = self.activation_fn
        act = repr(self.activation) if fn == activations.get(self.activation) else repr(fn)
        extra = "" if self.use_bias else ", use_bias=False"
        if self.kernel_init is not None:
            extra += f", kernel_init={self.kernel_init.name!r}"
        if self.bias_init != 0.0:
            extra += f", bias_init={self.bias_init!r}"
        return f"Dense({self.units}, activation={act}{extra})"


def _check_fraction(value: Any, name: str, low_open: bool) -> float:
    """A float in [0, 1) (or (0, 1] when `low_open`), else ValueError."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    value = float(value)
    ok = 0.0 < value <= 1.0 if low_open else 0.0 <= value < 1.0
    if not ok:
        interval = "(0, 1]" if low_open else "[0, 1)"
        raise ValueError(f"{name} must be in {interval}, got {value!r}")
    return value


def _check_eps(eps: Any) -> float:
    if isinstance(eps, bool) or not isinstance(eps, (int, float)):
        raise ValueError(f"eps must be a number, got {eps!r}")
    if not (0.0 < float(eps) < float("inf")):
        raise ValueError(f"eps must be finite and > 0, got {eps!r}")
    return float(eps)


class _WidthKeeping(_Layer):
    """What the layers that keep their input's width share."""

    kind = ""
    #: None: as wide as the layer's input.
    units: int | None = None
    use_bias = True
    kernel_init: Initializer | None = None
    bias_init = 0.0
    activation_fn: Activation = activations.Identity()

    def options(self) -> tuple[float, float, float]:
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        raise NotImplementedError

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.config() == self.config()

    def __hash__(self) -> int:
        return hash((type(self), repr(self)))


class Dropout(_WidthKeeping):
    """Inverted dropout: in training, zero each input with probability
    `rate` and scale the others by ``1 / (1 - rate)``; at inference, pass
    the input through.

    Parameters
    ----------
    rate : float
        The fraction of inputs dropped, in [0, 1).

    The masks are drawn in the C core from the model's seed, the layer's
    index and the training step: the same seed gives the same masks on
    every machine and thread count.
    """

    kind = "dropout"
    use_bias = False

    def __init__(self, rate: float = 0.5) -> None:
        self.rate = _check_fraction(rate, "rate", low_open=False)

    def options(self) -> tuple[float, float, float]:
        return (self.rate, 0.0, 0.0)

    def config(self) -> dict[str, Any]:
        return {"kind": self.kind, "rate": self.rate}

    def __repr__(self) -> str:
        return f"Dropout({self.rate!r})"


class _Normalization(_WidthKeeping):
    """What BatchNorm and LayerNorm share: eps, gamma and beta (unless
    ``center=False``), and an activation after them."""

    momentum = 0.0

    def __init__(self, eps: float, activation: ActivationLike, center: bool) -> None:
        self.eps = _check_eps(eps)
        self.activation_fn = activations.get(activation)
        if not isinstance(center, bool):
            raise ValueError(f"center must be True or False, got {center!r}")
        self.use_bias = center

    def options(self) -> tuple[float, float, float]:
        return (0.0, self.eps, self.momentum)

    def config(self) -> dict[str, Any]:
        config: dict[str, Any] = {"kind": self.kind}
        if self.kind == "batch_norm":
            config["momentum"] = self.momentum
        return {
            **config,
            "eps": self.eps,
            "activation": self.activation,
            "param": self.activation_param,
            "center": self.use_bias,
        }

    def __repr__(self) -> str:
        args = f"momentum={self.momentum!r}, " if self.kind == "batch_norm" else ""
        args += f"eps={self.eps!r}"
        args += "" if self.activation == "identity" else f", activation={self.activation!r}"
        args += "" if self.use_bias else ", center=False"
        return f"{type(self).__name__}({args})"


class BatchNorm(_Normalization):
    """Batch normalisation: ``activation(gamma * (x - mean) /
    sqrt(var + eps) + beta)`` per feature.

    Training uses each batch's mean and (biased) variance and moves
    running averages of the mean and the unbiased variance a fraction
    `momentum` towards them; evaluation and prediction use the running
    averages. Training batches need at least 2 rows.

    Parameters
    ----------
    momentum : float
        Step of the running averages, in (0, 1] (default 0.1).
    eps : float
        Added to the variance (default 1e-5).
    activation : str or Activation
        Applied after the shift (default identity).
    center : bool
        Whether the layer learns beta (default True).
    """

    kind = "batch_norm"

    def __init__(
        self,
        momentum: float = 0.1,
        eps: float = 1e-5,
        activation: ActivationLike = "identity",
        center: bool = True,
    ) -> None:
        self.momentum = _check_fraction(momentum, "momentum", low_open=True)
        super().__init__(eps, activation, center)


class LayerNorm(_Normalization):
    """Layer normalisation: each row normalised over its features,
    ``activation(gamma * (x - mean) / sqrt(var + eps) + beta)``, the same
    in training and at inference.

    Parameters
    ----------
    eps : float
        Added to the variance (default 1e-5).
    activation : str or Activation
        Applied after the shift (default identity).
    center : bool
        Whether the layer learns beta (default True).
    """

    kind = "layer_norm"

    def __init__(
        self, eps: float = 1e-5, activation: ActivationLike = "identity", center: bool = True
    ) -> None:
        super().__init__(eps, activation, center)


#: Any layer Sequential takes.
Layer = Union[Dense, Dropout, BatchNorm, LayerNorm]


def from_config(config: dict[str, Any]) -> Layer:
    """The layer a ``config()`` dict describes (dense without "kind")."""
    kind = config.get("kind", "dense")
    if kind == "dense":
        return Dense.from_config(config)
    act = activations.from_code(
        ACTIVATIONS.index(config.get("activation", "identity")), config.get("param", 0.0)
    )
    if kind == "dropout":
        return Dropout(config["rate"])
    if kind == "batch_norm":
        return BatchNorm(config["momentum"], config["eps"], act, config.get("center", True))
    if kind == "layer_norm":
        return LayerNorm(config["eps"], act, config.get("center", True))
    raise ValueError(f"unknown layer kind {kind!r}; choose one of {', '.join(KINDS)}")


def from_spec(
    kind: int, units: int, act: Activation, has_bias: bool, options: tuple[float, float, float]
) -> Layer:
    """The layer the C library describes by these values."""
    # The C library holds float32: take the shortest decimal that gives it.
    rate, eps, momentum = (float(str(np.float32(v))) for v in options)
    if KINDS[kind] == "dense":
        return Dense(units, activation=act, use_bias=has_bias)
    if KINDS[kind] == "dropout":
        return Dropout(rate)
    if KINDS[kind] == "batch_norm":
        return BatchNorm(momentum, eps, act, has_bias)
    return LayerNorm(eps, act, has_bias)


def widths(layers: list[Layer], n_inputs: int) -> list[int]:
    """Each layer's output width for `n_inputs` inputs."""
    result = []
    for layer in layers:
        n_inputs = layer.units if layer.units is not None else n_inputs
        result.append(n_inputs)
    return result

"""Layer specifications for bprop.Sequential."""

from __future__ import annotations

from typing import Any

from . import _core, activations, initializers
from .activations import Activation, ActivationLike
from .initializers import BiasInitLike, Initializer, InitializerLike

#: Activation names in the order of the C library's codes.
ACTIVATIONS = _core.ACTIVATIONS


class Dense:
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

    def config(self) -> dict[str, Any]:
        """The arguments that rebuild this layer, as plain values."""
        return {
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

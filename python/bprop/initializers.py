"""Weight and bias initialisers, selectable by name or as objects.

Weights are drawn in the C core from the counter-based generator keyed by
the model's seed and the layer's index, so the same seed gives the same
weights on every platform and for any thread count. The normal
initialisers draw from an untruncated normal distribution (the polar
Box-Muller method, computed without libm so that every platform draws the
same bits).

>>> bprop.Sequential([...], init="he_normal")                 # every layer
>>> bprop.Dense(64, kernel_init="lecun_normal", bias_init=0.1)  # one layer

With fan_in a layer's inputs and fan_out its units:

=================  ===========================================
name               distribution
=================  ===========================================
he (he_uniform)    uniform, limit sqrt(6 / fan_in)
he_normal          normal, std sqrt(2 / fan_in)
glorot (uniform)   uniform, limit sqrt(6 / (fan_in + fan_out))
glorot_normal      normal, std sqrt(2 / (fan_in + fan_out))
lecun_uniform      uniform, limit sqrt(3 / fan_in)
lecun_normal       normal, std sqrt(1 / fan_in)
auto               he for the relu family, glorot for the others
=================  ===========================================

"kaiming" and "xavier" are accepted for "he" and "glorot".
"""

from __future__ import annotations

import math
from typing import Union

import numpy as np

from . import _core


class Initializer:
    """A weight initialiser; `name` is the C library's name."""

    name: str = "auto"

    @property
    def code(self) -> int:
        """The initialiser's code in the C library."""
        return _core.INITS.index(self.name)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Initializer) and self.name == other.name

    def __hash__(self) -> int:
        return hash(self.name)


class Auto(Initializer):
    """He uniform for relu-like layers, Glorot uniform for the others."""

    name = "auto"


class HeUniform(Initializer):
    """Uniform in [-limit, limit), limit = sqrt(6 / fan_in) (Kaiming)."""

    name = "he"


class HeNormal(Initializer):
    """Normal with std sqrt(2 / fan_in) (Kaiming)."""

    name = "he_normal"


class GlorotUniform(Initializer):
    """Uniform, limit sqrt(6 / (fan_in + fan_out)) (Xavier)."""

    name = "glorot"


class GlorotNormal(Initializer):
    """Normal with std sqrt(2 / (fan_in + fan_out)) (Xavier)."""

    name = "glorot_normal"


class LecunUniform(Initializer):
    """Uniform, limit sqrt(3 / fan_in)."""

    name = "lecun_uniform"


class LecunNormal(Initializer):
    """Normal with std sqrt(1 / fan_in)."""

    name = "lecun_normal"


class Constant:
    """A bias initialiser: every bias of the layer set to `value`."""

    def __init__(self, value: float = 0.0) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
            raise ValueError(f"a constant initialiser takes a number, got {value!r}")
        if not math.isfinite(float(value)):
            raise ValueError(f"a constant initialiser must be finite, got {value!r}")
        self.value = float(value)

    def __repr__(self) -> str:
        return f"Constant({self.value!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Constant) and self.value == other.value

    def __hash__(self) -> int:
        return hash(self.value)


class Zeros(Constant):
    """A bias initialiser: zeros (the default)."""

    def __init__(self) -> None:
        super().__init__(0.0)

    def __repr__(self) -> str:
        return "Zeros()"


InitializerLike = Union[str, Initializer]
BiasInitLike = Union[str, float, Constant]

_BY_NAME: dict[str, type[Initializer]] = {
    "auto": Auto,
    "he": HeUniform,
    "he_uniform": HeUniform,
    "kaiming_uniform": HeUniform,
    "he_normal": HeNormal,
    "kaiming_normal": HeNormal,
    "glorot": GlorotUniform,
    "glorot_uniform": GlorotUniform,
    "xavier_uniform": GlorotUniform,
    "glorot_normal": GlorotNormal,
    "xavier_normal": GlorotNormal,
    "lecun_uniform": LecunUniform,
    "lecun_normal": LecunNormal,
}

#: Every weight initialiser name ``get`` accepts.
NAMES: tuple[str, ...] = tuple(_BY_NAME)


def get(init: InitializerLike) -> Initializer:
    """The weight initialiser for a name or an object."""
    if isinstance(init, Initializer):
        return init
    if isinstance(init, str) and init in _BY_NAME:
        return _BY_NAME[init]()
    raise ValueError(
        f"unknown initialiser {init!r}; choose one of {', '.join(NAMES)} or a "
        "bprop.initializers.Initializer object"
    )


def bias_value(init: BiasInitLike) -> float:
    """The constant a bias initialiser sets: "zeros", "ones", a number or
    a Constant."""
    if isinstance(init, Constant):
        return init.value
    if isinstance(init, str):
        values = {"zeros": 0.0, "ones": 1.0}
        if init not in values:
            raise ValueError(
                f"unknown bias initialiser {init!r}; use 'zeros', 'ones', a number or "
                "bprop.initializers.Constant(value)"
            )
        return values[init]
    return Constant(init).value

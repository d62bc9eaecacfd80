"""Optimizers, selectable by name or as objects."""

from __future__ import annotations

import math
from typing import Union


class Optimizer:
    """Base class of the optimizers."""


class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum.

    With ``g = grad + l2 * w`` (the L2 penalty applies to weights, not
    biases)::

        v = momentum * v + g
        w -= lr * (g + momentum * v if nesterov else v)

    Parameters
    ----------
    lr : float
        Learning rate, > 0.
    momentum : float
        In [0, 1); 0 disables momentum.
    nesterov : bool
        Use Nesterov momentum (needs momentum > 0).
    l2 : float
        L2 penalty (weight decay) coefficient, >= 0.
    """

    def __init__(
        self, lr: float = 0.01, momentum: float = 0.0, nesterov: bool = False, l2: float = 0.0
    ) -> None:
        if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
            raise ValueError(f"lr must be a finite number > 0, got {lr!r}")
        if not (isinstance(momentum, (int, float)) and 0 <= momentum < 1):
            raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
        if nesterov and momentum == 0:
            raise ValueError("nesterov=True needs momentum > 0")
        if not (isinstance(l2, (int, float)) and math.isfinite(l2) and l2 >= 0):
            raise ValueError(f"l2 must be a finite number >= 0, got {l2!r}")
        self.lr = float(lr)
        self.momentum = float(momentum)
        self.nesterov = bool(nesterov)
        self.l2 = float(l2)

    def __repr__(self) -> str:
        return (
            f"SGD(lr={self.lr}, momentum={self.momentum}, nesterov={self.nesterov}, "
            f"l2={self.l2})"
        )


OptimizerLike = Union[str, Optimizer]


def get(optimizer: OptimizerLike) -> Optimizer:
    """The optimizer object for a name or an object."""
    if isinstance(optimizer, Optimizer):
        return optimizer
    if optimizer == "sgd":
        return SGD()
    raise ValueError(f"unknown optimizer {optimizer!r}; use 'sgd' or a bprop.SGD object")

"""Optimizers, selectable by name or as objects.

SGD, Adam, AdamW, RMSprop and Adagrad run in the C core, a whole epoch
per call; each takes a learning-rate schedule (``schedule=``, see
``bprop.schedules``), weight decay and gradient clipping. LBFGS trains on
the whole data set at once through ``scipy.optimize``.

Common options of the C-core optimizers:

weight_decay (``l2`` for SGD)
    An L2 penalty ``wd * w`` added to the gradient of the weights (Adam,
    RMSprop, Adagrad, SGD); AdamW instead decays the weights directly,
    ``w *= 1 - lr * wd``. Biases are exempt unless ``decay_biases=True``.
clip_norm
    Scale each batch's gradient so that its global L2 norm, over every
    parameter, is at most this (None: no clipping). The norm is summed in
    a fixed order, so results stay bitwise identical for any thread count.
clip_value
    Clamp each gradient entry to ``[-clip_value, clip_value]``, after
    ``clip_norm`` (None: no clipping).
schedule
    A ``bprop.schedules`` object or name; None keeps ``lr`` constant.
"""

from __future__ import annotations

import math
from typing import Any, Union

from . import _core
from . import schedules as _schedules


class Optimizer:
    """Base class of the optimizers."""


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_open_unit(value: Any, name: str) -> float:
    if not (_number(value) and 0 <= value < 1):
        raise ValueError(f"{name} must be in [0, 1), got {value!r}")
    return float(value)


def _check_nonneg(value: Any, name: str, positive: bool = False) -> float:
    ok = _number(value) and math.isfinite(value) and (value > 0 if positive else value >= 0)
    if not ok:
        raise ValueError(f"{name} must be a finite number {'>' if positive else '>='} 0, "
                         f"got {value!r}")
    return float(value)


def _check_clip(value: Any, name: str) -> float | None:
    if value is None:
        return None
    return _check_nonneg(value, name, positive=True)


class CoreOptimizer(Optimizer):
    """An optimizer the C core runs batch by batch (bp_optimizer).

    Subclasses set ``kind`` and their own settings; this class holds the
    options they share (see the module's documentation).
    """

    kind = "sgd"

    def __init__(self, lr: float, weight_decay: float = 0.0, clip_norm: float | None = None,
                 clip_value: float | None = None, decay_biases: bool = False,
                 schedule: _schedules.ScheduleLike = None, decay_name: str = "weight_decay"
                 ) -> None:
        if not (_number(lr) and math.isfinite(lr) and lr > 0):
            raise ValueError(f"lr must be a finite number > 0, got {lr!r}")
        self.lr = float(lr)
        self.weight_decay = _check_nonneg(weight_decay, decay_name)
        self.clip_norm = _check_clip(clip_norm, "clip_norm")
        self.clip_value = _check_clip(clip_value, "clip_value")
        self.decay_biases = bool(decay_biases)
        self.schedule = _schedules.get(schedule)

    def _settings(self) -> dict[str, Any]:
        """The fields of bp_optimizer particular to the kind."""
        return {}

    def config(self) -> dict[str, Any]:
        """The optimizer as the C core takes it (bp_optimizer's fields)."""
        return {
            "kind": self.kind, "lr": self.lr, "weight_decay": self.weight_decay,
            "decay_biases": self.decay_biases, "clip_norm": self.clip_norm or 0.0,
            "clip_value": self.clip_value or 0.0, **self._settings(),
        }

    def schedule_config(self) -> dict[str, Any] | None:
        """The schedule as the C core takes it, or None when constant."""
        return None if self.schedule is None else self.schedule.config()

    def learning_rate(self, step: int = 0) -> float:
        """The rate of the update that follows `step` earlier updates
        (a model's count is ``model.optimizer_step``), as the C core
        computes it: in float32, after the schedule."""
        return _core.schedule_lr(self.schedule_config(), self.lr, int(step))

    def _params(self) -> dict[str, Any]:
        """The constructor's kind-specific arguments, for repr."""
        return {"lr": self.lr}

    def __repr__(self) -> str:
        params = self._params()
        decay = "l2" if "l2" in params else "weight_decay"
        if decay not in params:
            params[decay] = self.weight_decay
        for name, default in (("clip_norm", None), ("clip_value", None),
                              ("decay_biases", False), ("schedule", None)):
            if getattr(self, name) != default:
                params[name] = getattr(self, name)
        text = ", ".join(f"{k}={v!r}" for k, v in params.items())
        return f"{type(self).__name__}({text})"


class SGD(CoreOptimizer):
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
        L2 penalty (weight decay) coefficient, >= 0; ``weight_decay`` is
        accepted as another name for it.
    clip_norm, clip_value, decay_biases, schedule
        See ``bprop.optimizers``.
    """

    kind = "sgd"

    def __init__(
        self, lr: float = 0.01, momentum: float = 0.0, nesterov: bool = False, l2: float = 0.0,
        *, weight_decay: float | None = None, clip_norm: float | None = None,
        clip_value: float | None = None, decay_biases: bool = False,
        schedule: _schedules.ScheduleLike = None,
    ) -> None:
        if weight_decay is not None:
            if l2 != 0.0:
                raise ValueError("give l2 or weight_decay, not both: they are the same penalty")
            l2 = weight_decay
        super().__init__(lr, l2, clip_norm, clip_value, decay_biases, schedule, "l2")
        self.momentum = _check_open_unit(momentum, "momentum")
        if nesterov and momentum == 0:
            raise ValueError("nesterov=True needs momentum > 0")
        self.nesterov = bool(nesterov)

    @property
    def l2(self) -> float:
        """The L2 penalty: the same value as ``weight_decay``."""
        return self.weight_decay

    def _settings(self) -> dict[str, Any]:
        return {"momentum": self.momentum, "nesterov": self.nesterov}

    def _params(self) -> dict[str, Any]:
        return {"lr": self.lr, "momentum": self.momentum, "nesterov": self.nesterov,
                "l2": self.l2}


class Adam(CoreOptimizer):
    """Adam (Kingma and Ba), with bias-corrected moments::

        m = beta1 * m + (1 - beta1) * g
        s = beta2 * s + (1 - beta2) * g**2
        w -= lr / (1 - beta1**t) * m / (sqrt(s / (1 - beta2**t)) + eps)

    where t counts updates from 1 and ``g = grad + weight_decay * w``
    (coupled L2 penalty; see AdamW for the decoupled form).

    Parameters
    ----------
    lr : float
        > 0; 0.001 by default.
    beta1, beta2 : float
        Decay rates of the first and second moments, in [0, 1).
    eps : float
        Added to the denominator, > 0.
    weight_decay, clip_norm, clip_value, decay_biases, schedule
        See ``bprop.optimizers``.
    """

    kind = "adam"

    def __init__(
        self, lr: float = 0.001, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
        weight_decay: float = 0.0, *, clip_norm: float | None = None,
        clip_value: float | None = None, decay_biases: bool = False,
        schedule: _schedules.ScheduleLike = None,
    ) -> None:
        super().__init__(lr, weight_decay, clip_norm, clip_value, decay_biases, schedule)
        self.beta1 = _check_open_unit(beta1, "beta1")
        self.beta2 = _check_open_unit(beta2, "beta2")
        self.eps = _check_nonneg(eps, "eps", positive=True)

    def _settings(self) -> dict[str, Any]:
        return {"beta1": self.beta1, "beta2": self.beta2, "eps": self.eps}

    def _params(self) -> dict[str, Any]:
        return {"lr": self.lr, **self._settings()}


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov and Hutter): each
    update first shrinks the weights, ``w *= 1 - lr * weight_decay`` (lr
    after the schedule), then takes Adam's step on the raw gradient.

    Same parameters as Adam; ``weight_decay`` is 0.01 by default.
    """

    kind = "adamw"

    def __init__(
        self, lr: float = 0.001, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
        weight_decay: float = 0.01, *, clip_norm: float | None = None,
        clip_value: float | None = None, decay_biases: bool = False,
        schedule: _schedules.ScheduleLike = None,
    ) -> None:
        super().__init__(lr, beta1, beta2, eps, weight_decay, clip_norm=clip_norm,
                         clip_value=clip_value, decay_biases=decay_biases, schedule=schedule)


class RMSprop(CoreOptimizer):
    """RMSprop: a running average of squared gradients scales each step::

        s = rho * s + (1 - rho) * g**2
        d = g / (sqrt(s) + eps)
        v = momentum * v + d;  w -= lr * v      (w -= lr * d without momentum)

    with ``g = grad + weight_decay * w``.

    Parameters
    ----------
    lr : float
        > 0; 0.001 by default.
    rho : float
        Decay of the squared average, in [0, 1).
    momentum : float
        In [0, 1); 0 disables momentum.
    eps : float
        > 0.
    weight_decay, clip_norm, clip_value, decay_biases, schedule
        See ``bprop.optimizers``.
    """

    kind = "rmsprop"

    def __init__(
        self, lr: float = 0.001, rho: float = 0.9, momentum: float = 0.0, eps: float = 1e-8,
        weight_decay: float = 0.0, *, clip_norm: float | None = None,
        clip_value: float | None = None, decay_biases: bool = False,
        schedule: _schedules.ScheduleLike = None,
    ) -> None:
        super().__init__(lr, weight_decay, clip_norm, clip_value, decay_biases, schedule)
        self.rho = _check_open_unit(rho, "rho")
        self.momentum = _check_open_unit(momentum, "momentum")
        self.eps = _check_nonneg(eps, "eps", positive=True)

    def _settings(self) -> dict[str, Any]:
        return {"rho": self.rho, "momentum": self.momentum, "eps": self.eps}

    def _params(self) -> dict[str, Any]:
        return {"lr": self.lr, **self._settings()}


class Adagrad(CoreOptimizer):
    """Adagrad: steps shrink with the sum of all squared gradients::

        s += g**2
        w -= lr * g / (sqrt(s + initial_accumulator) + eps)

    with ``g = grad + weight_decay * w``.

    Parameters
    ----------
    lr : float
        > 0; 0.01 by default.
    initial_accumulator : float
        Where the sum of squares starts, >= 0.
    eps : float
        > 0.
    weight_decay, clip_norm, clip_value, decay_biases, schedule
        See ``bprop.optimizers``.
    """

    kind = "adagrad"

    def __init__(
        self, lr: float = 0.01, initial_accumulator: float = 0.0, eps: float = 1e-10,
        weight_decay: float = 0.0, *, clip_norm: float | None = None,
        clip_value: float | None = None, decay_biases: bool = False,
        schedule: _schedules.ScheduleLike = None,
    ) -> None:
        super().__init__(lr, weight_decay, clip_norm, clip_value, decay_biases, schedule)
        self.initial_accumulator = _check_nonneg(initial_accumulator, "initial_accumulator")
        self.eps = _check_nonneg(eps, "eps", positive=True)

    def _settings(self) -> dict[str, Any]:
        return {"initial_accumulator": self.initial_accumulator, "eps": self.eps}

    def _params(self) -> dict[str, Any]:
        return {"lr": self.lr, **self._settings()}


class LBFGS(Optimizer):
    """Full-batch L-BFGS through ``scipy.optimize.minimize`` (method
    "L-BFGS-B"), needs scipy (``pip install scipy``).

    Every iteration evaluates the loss and the gradient of the whole
    training set in the C core; ``fit`` records one History entry per
    iteration and ignores ``batch_size`` and ``shuffle``. The parameters
    end at the best point scipy found. Optimizer state is not saved with
    the model.

    Parameters
    ----------
    max_iter : int, optional
        Most iterations per fit; None uses fit's ``epochs``.
    tol : float
        Stop when the largest gradient entry is below this (scipy's gtol).
    ftol : float
        Stop when an iteration improves the loss by less than this
        fraction of it (scipy's ftol).
    history : int
        Correction pairs kept (scipy's maxcor), >= 1.
    max_fun : int
        Most loss evaluations per fit.
    weight_decay : float
        L2 penalty ``weight_decay / 2 * sum(w**2)`` over the weights (not
        biases) added to the loss.
    """

    def __init__(self, max_iter: int | None = None, tol: float = 1e-6, ftol: float = 1e-9,
                 history: int = 10, max_fun: int = 15000, weight_decay: float = 0.0) -> None:
        for name, value in (("max_iter", max_iter), ("history", history),
                            ("max_fun", max_fun)):
            if value is None and name == "max_iter":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        self.max_iter = max_iter
        self.tol = _check_nonneg(tol, "tol")
        self.ftol = _check_nonneg(ftol, "ftol")
        self.history = history
        self.max_fun = max_fun
        self.weight_decay = _check_nonneg(weight_decay, "weight_decay")

    def __repr__(self) -> str:
        return (f"LBFGS(max_iter={self.max_iter!r}, tol={self.tol}, ftol={self.ftol}, "
                f"history={self.history}, max_fun={self.max_fun}, "
                f"weight_decay={self.weight_decay})")


OptimizerLike = Union[str, Optimizer]

_BY_NAME = {
    "sgd": SGD,
    "adam": Adam,
    "adamw": AdamW,
    "rmsprop": RMSprop,
    "adagrad": Adagrad,
    "lbfgs": LBFGS,
}


#: The names ``get`` accepts.
NAMES = tuple(_BY_NAME)


def from_options(name: str, lr: float | None = None, momentum: float = 0.0,
                 nesterov: bool = False, weight_decay: float = 0.0,
                 schedule: _schedules.ScheduleLike = None) -> Optimizer:
    """An optimizer from flat options, as the command line gives them:
    momentum and nesterov apply to SGD only, lr None keeps the kind's
    default, and weight_decay 0 keeps AdamW's (0.01)."""
    if name not in _BY_NAME:
        get(name)  # raises with the names
    if name == "lbfgs":
        if schedule is not None:
            raise ValueError("L-BFGS takes no learning-rate schedule")
        return LBFGS(weight_decay=weight_decay)
    kwargs: dict[str, Any] = {"schedule": schedule}
    if lr is not None:
        kwargs["lr"] = lr
    if name == "sgd":
        return SGD(momentum=momentum, nesterov=nesterov, l2=weight_decay, **kwargs)
    if weight_decay != 0.0 or name != "adamw":
        kwargs["weight_decay"] = weight_decay
    return _BY_NAME[name](**kwargs)


def get(optimizer: OptimizerLike) -> Optimizer:
    """The optimizer object for a name or an object.

    Names give the defaults: "sgd" (lr 0.01), "adam", "adamw",
    "rmsprop" (lr 0.001), "adagrad" (lr 0.01) and "lbfgs".
    """
    if isinstance(optimizer, Optimizer):
        return optimizer
    if isinstance(optimizer, str) and optimizer.lower() in _BY_NAME:
        return _BY_NAME[optimizer.lower()]()
    raise ValueError(
        f"unknown optimizer {optimizer!r}; use one of {', '.join(_BY_NAME)} or an object such "
        "as bprop.Adam(lr=1e-3)"
    )


def from_config(config: dict[str, Any], schedule: dict[str, Any] | None) -> CoreOptimizer:
    """The optimizer a model file holds; floats come back as the shortest
    decimal that rounds to the same float32, so ``lr=0.05`` reads back as
    0.05."""
    f = _schedules._f32
    common = dict(
        clip_norm=f(config["clip_norm"]) or None, clip_value=f(config["clip_value"]) or None,
        decay_biases=config["decay_biases"],
        schedule=None if schedule is None else _schedules.from_config(schedule),
    )
    kind, lr, wd = config["kind"], f(config["lr"]), f(config["weight_decay"])
    if kind == "sgd":
        return SGD(lr, f(config["momentum"]), config["nesterov"], wd, **common)
    if kind in ("adam", "adamw"):
        cls = Adam if kind == "adam" else AdamW
        return cls(lr, f(config["beta1"]), f(config["beta2"]), f(config["eps"]), wd, **common)
    if kind == "rmsprop":
        return RMSprop(lr, f(config["rho"]), f(config["momentum"]), f(config["eps"]), wd,
                       **common)
    return Adagrad(lr, f(config["initial_accumulator"]), f(config["eps"]), wd, **common)

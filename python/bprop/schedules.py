"""Learning-rate schedules, given to an optimizer as ``schedule=``.

>>> opt = bprop.Adam(lr=1e-3, schedule=bprop.schedules.CosineWarmup(warmup=2))
>>> model.fit(X, y, optimizer=opt, epochs=30)

A schedule turns the optimizer's ``lr`` into the rate of each update. The
C core computes it from the network's update counter (which counts every
update since the weights were initialised, and is saved with the model),
so a whole epoch stays one C call and a resumed fit continues the
schedule exactly. Durations are in epochs (``unit="epoch"``: the rate
changes between epochs, as with PyTorch's schedulers stepped once per
epoch) or in updates, that is batches (``unit="step"``).

``ReduceLROnPlateau`` is the exception: it watches a metric and lowers
the rate between epochs.

Every schedule is also available by name: "constant", "step",
"exponential", "inverse", "cosine" and "plateau" (see ``get``).
"""

from __future__ import annotations

import math
from typing import Any, Union

import numpy as np

from . import _core

UNITS = ("epoch", "step")


def _check_unit(unit: str) -> str:
    if unit not in UNITS:
        raise ValueError(f"unit must be 'epoch' or 'step', got {unit!r}")
    return unit


def _check_int(value: Any, name: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def _check_float(value: Any, name: str, low: float, high: float = math.inf,
                 low_open: bool = False, high_open: bool = False) -> float:
    ok = isinstance(value, (int, float, np.floating, np.integer)) and not isinstance(value, bool)
    if ok:
        value = float(value)
        ok = math.isfinite(value) and (value > low if low_open else value >= low)
        ok = ok and (value < high if high_open else value <= high)
    if not ok:
        lo, hi = "(" if low_open else "[", ")" if high_open else "]"
        raise ValueError(f"{name} must be a number in {lo}{low:g}, {high:g}{hi}, got {value!r}")
    return value


class Schedule:
    """Base class of the schedules.

    ``interval`` is the number of updates per tick of the schedule: the
    updates of one epoch with ``unit="epoch"`` (set by ``fit``), 1 with
    ``unit="step"``.
    """

    kind = "constant"

    def __init__(self, unit: str = "epoch") -> None:
        self.unit = _check_unit(unit)
        self.interval = 1

    def _settings(self) -> dict[str, Any]:
        return {}

    def config(self) -> dict[str, Any]:
        """The schedule as the C core takes it (bp_schedule's fields)."""
        return {"kind": self.kind, "interval": self.interval, **self._settings()}

    def _bind(self, steps_per_epoch: int, first_step: int, steps: int) -> None:
        """Called by fit before its epochs: `steps` updates from `first_step`."""
        self.interval = steps_per_epoch if self.unit == "epoch" else 1

    def learning_rate(self, lr: float, step: int) -> float:
        """The rate of the update that follows `step` earlier updates."""
        return _core.schedule_lr(self.config(), float(lr), int(step))

    def rates(self, lr: float, steps: int, first: int = 0) -> np.ndarray:
        """The rates of `steps` updates from update `first` on (float32)."""
        config = self.config()
        return np.array(
            [_core.schedule_lr(config, float(lr), s) for s in range(first, first + steps)],
            dtype=np.float32,
        )

    def _params(self) -> dict[str, Any]:
        return {}

    def __repr__(self) -> str:
        params = {**self._params(), "unit": self.unit}
        text = ", ".join(f"{k}={v!r}" for k, v in params.items())
        return f"{type(self).__name__}({text})"


class Constant(Schedule):
    """The optimizer's ``lr`` for every update."""

    def __init__(self) -> None:
        super().__init__("step")

    def __repr__(self) -> str:
        return "Constant()"


class StepDecay(Schedule):
    """``lr * gamma ** (k // step_size)``, k counting epochs (or updates).

    Parameters
    ----------
    step_size : int
        Epochs (or updates, with ``unit="step"``) between decays, >= 1.
    gamma : float
        Factor in (0, 1].
    """

    kind = "step"

    def __init__(self, step_size: int = 10, gamma: float = 0.1, unit: str = "epoch") -> None:
        super().__init__(unit)
        self.step_size = _check_int(step_size, "step_size", 1)
        self.gamma = _check_float(gamma, "gamma", 0.0, 1.0, low_open=True)

    def _settings(self) -> dict[str, Any]:
        return {"step_size": self.step_size, "gamma": self.gamma}

    def _params(self) -> dict[str, Any]:
        return self._settings()


class ExponentialDecay(Schedule):
    """``lr * gamma ** k``, k counting epochs (or updates).

    Parameters
    ----------
    gamma : float
        Factor per epoch (or update), in (0, 1].
    """

    kind = "exponential"

    def __init__(self, gamma: float = 0.95, unit: str = "epoch") -> None:
        super().__init__(unit)
        self.gamma = _check_float(gamma, "gamma", 0.0, 1.0, low_open=True)

    def _settings(self) -> dict[str, Any]:
        return {"gamma": self.gamma}

    def _params(self) -> dict[str, Any]:
        return self._settings()


class InverseScaling(Schedule):
    """``lr / (1 + gamma * k) ** power``, k counting updates by default.

    With ``gamma=1`` this is scikit-learn's MLP "invscaling" rate,
    ``learning_rate_init / (t + 1) ** power_t``, except that t counts
    updates here where scikit-learn counts samples. (scikit-learn's
    SGDClassifier uses ``eta0 / t ** power_t`` with t from 1, which is the
    same sequence shifted by one update.)

    Parameters
    ----------
    power : float
        Exponent, >= 0.
    gamma : float
        Rate at which the denominator grows, >= 0.
    """

    kind = "inverse"

    def __init__(self, power: float = 0.5, gamma: float = 1.0, unit: str = "step") -> None:
        super().__init__(unit)
        self.power = _check_float(power, "power", 0.0)
        self.gamma = _check_float(gamma, "gamma", 0.0)

    def _settings(self) -> dict[str, Any]:
        return {"power": self.power, "gamma": self.gamma}

    def _params(self) -> dict[str, Any]:
        return self._settings()


class CosineWarmup(Schedule):
    """Linear warm-up, then cosine decay to ``min_lr``.

    For k < warmup the rate is ``lr * (k + 1) / warmup``; then, with
    ``p = (k - warmup) / (period - warmup)``, it is
    ``min_lr + (lr - min_lr) * (1 + cos(pi * p)) / 2``, and ``min_lr``
    from k = period on. k counts epochs (or updates) since the weights
    were initialised.

    Parameters
    ----------
    period : int, optional
        Epochs (or updates) of warm-up and decay together, > warmup. None:
        until the end of the first fit that uses the schedule (the value
        is then filled in).
    warmup : int
        Epochs (or updates) of linear warm-up, >= 0.
    min_lr : float
        The rate at the end, >= 0.
    """

    kind = "cosine"

    def __init__(self, period: int | None = None, warmup: int = 0, min_lr: float = 0.0,
                 unit: str = "epoch") -> None:
        super().__init__(unit)
        self.warmup = _check_int(warmup, "warmup", 0)
        if period is not None:
            period = _check_int(period, "period", self.warmup + 1)
        self.period = period
        self.min_lr = _check_float(min_lr, "min_lr", 0.0)

    def _bind(self, steps_per_epoch: int, first_step: int, steps: int) -> None:
        super()._bind(steps_per_epoch, first_step, steps)
        if self.period is None:
            end = -(-(first_step + steps) // self.interval)
            self.period = max(end, self.warmup + 1)

    def _settings(self) -> dict[str, Any]:
        if self.period is None:
            raise ValueError(
                "CosineWarmup(period=None) takes its period from fit(); give a period to use "
                "it elsewhere"
            )
        return {"period": self.period, "warmup": self.warmup, "min_lr": self.min_lr}

    def _params(self) -> dict[str, Any]:
        return {"period": self.period, "warmup": self.warmup, "min_lr": self.min_lr}


class ReduceLROnPlateau(Schedule):
    """Lower the rate when a metric stops improving, between epochs.

    After each epoch of ``fit`` the monitored value is compared with the
    best so far: it improves when it is lower (higher with ``mode="max"``)
    by more than ``threshold * |best|``. After more than ``patience``
    epochs without improvement the rate is multiplied by ``factor`` (never
    below ``min_lr``), and the next ``cooldown`` epochs are not counted.
    The state (best value, counters, reductions) is saved with the model.

    Parameters
    ----------
    factor : float
        In (0, 1).
    patience : int
        Epochs without improvement tolerated, >= 0.
    threshold : float
        Relative improvement that counts, >= 0.
    cooldown : int
        Epochs ignored after a reduction, >= 0.
    min_lr : float
        The lowest rate, >= 0.
    monitor : str, optional
        A key of the epoch's history ("val_loss", "loss", "val_accuracy",
        ...). None: "val_loss" when there is validation data, else "loss".
    mode : "min" or "max"
        Whether lower or higher values of the monitored metric are better.
    """

    kind = "plateau"

    def __init__(self, factor: float = 0.1, patience: int = 10, threshold: float = 1e-4,
                 cooldown: int = 0, min_lr: float = 0.0, monitor: str | None = None,
                 mode: str = "min") -> None:
        super().__init__("epoch")
        self.factor = _check_float(factor, "factor", 0.0, 1.0, low_open=True, high_open=True)
        self.patience = _check_int(patience, "patience", 0)
        self.threshold = _check_float(threshold, "threshold", 0.0)
        self.cooldown = _check_int(cooldown, "cooldown", 0)
        self.min_lr = _check_float(min_lr, "min_lr", 0.0)
        if monitor is not None and not isinstance(monitor, str):
            raise ValueError(f"monitor must be a history key such as 'val_loss', got {monitor!r}")
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        self.monitor = monitor
        self.mode = mode
        self.reset()

    def reset(self) -> None:
        """Forget the best value, the counters and the reductions."""
        self.state: dict[str, Any] = {
            "reductions": 0, "wait": 0, "cooldown_left": 0, "has_best": False, "best": 0.0,
        }

    @property
    def reductions(self) -> int:
        """How many times the rate was lowered so far."""
        return int(self.state["reductions"])

    def _settings(self) -> dict[str, Any]:
        return {
            "gamma": self.factor, "patience": self.patience, "threshold": self.threshold,
            "cooldown": self.cooldown, "min_lr": self.min_lr, **self.state,
        }

    def _bind(self, steps_per_epoch: int, first_step: int, steps: int) -> None:
        self.interval = 1

    def monitored(self, values: dict[str, float]) -> str:
        """The key of `values` this schedule watches."""
        if self.monitor is not None:
            if self.monitor not in values:
                raise ValueError(
                    f"ReduceLROnPlateau monitors {self.monitor!r}, which this fit does not "
                    f"record; it records {', '.join(sorted(values))}"
                )
            return self.monitor
        return "val_loss" if "val_loss" in values else "loss"

    def observe(self, value: float) -> None:
        """Feed one epoch's value of the monitored metric."""
        metric = -float(value) if self.mode == "max" else float(value)
        updated = _core.schedule_observe(self.config(), metric)
        self.state = {key: updated[key] for key in self.state}

    def _params(self) -> dict[str, Any]:
        return {
            "factor": self.factor, "patience": self.patience, "threshold": self.threshold,
            "cooldown": self.cooldown, "min_lr": self.min_lr, "monitor": self.monitor,
            "mode": self.mode,
        }

    def __repr__(self) -> str:
        text = ", ".join(f"{k}={v!r}" for k, v in self._params().items())
        return f"ReduceLROnPlateau({text})"


ScheduleLike = Union[str, Schedule, None]

_BY_NAME = {
    "constant": Constant,
    "step": StepDecay,
    "exponential": ExponentialDecay,
    "inverse": InverseScaling,
    "invscaling": InverseScaling,
    "cosine": CosineWarmup,
    "plateau": ReduceLROnPlateau,
}


#: The names ``get`` accepts.
NAMES = tuple(_BY_NAME)


def get(schedule: ScheduleLike) -> Schedule | None:
    """The schedule object for a name, an object or None (constant).

    Names give the defaults: "constant", "step" (StepDecay: x0.1 every 10
    epochs), "exponential" (x0.95 per epoch), "inverse" or "invscaling"
    (``lr / sqrt(1 + t)``, t in updates), "cosine" (to zero over the
    fit), "plateau" (x0.1 after 10 epochs without improvement).
    """
    if schedule is None or isinstance(schedule, Schedule):
        return schedule
    if isinstance(schedule, str) and schedule in _BY_NAME:
        return _BY_NAME[schedule]()
    raise ValueError(
        f"unknown schedule {schedule!r}; use one of {', '.join(sorted(_BY_NAME))} or a "
        "bprop.schedules object"
    )


def from_config(config: dict[str, Any]) -> Schedule | None:
    """The schedule a model file holds (see model_file); None if constant."""
    kind = config["kind"]
    unit = "epoch" if config["interval"] > 1 else "step"
    schedule: Schedule
    if kind == "constant":
        return None
    if kind == "step":
        schedule = StepDecay(config["step_size"], _f32(config["gamma"]), unit)
    elif kind == "exponential":
        schedule = ExponentialDecay(_f32(config["gamma"]), unit)
    elif kind == "inverse":
        schedule = InverseScaling(_f32(config["power"]), _f32(config["gamma"]), unit)
    elif kind == "cosine":
        schedule = CosineWarmup(config["period"], config["warmup"], _f32(config["min_lr"]), unit)
    else:
        schedule = ReduceLROnPlateau(
            factor=_f32(config["gamma"]), patience=config["patience"],
            threshold=_f32(config["threshold"]), cooldown=config["cooldown"],
            min_lr=_f32(config["min_lr"]),
        )
        schedule.state = {key: config[key] for key in schedule.state}
    schedule.interval = max(1, int(config["interval"]))
    return schedule


def _f32(value: float) -> float:
    """The shortest decimal that rounds to the same float32 as `value`."""
    return float(str(np.float32(value)))

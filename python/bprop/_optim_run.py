"""One fit's use of a C-core optimizer: its C settings, the schedule,
the state to roll back after a divergence, and what happens between
epochs (reduce-on-plateau, the rate recorded in the history).

Design decisions:
- The schedule is bound once per fit (the updates per epoch, and the
  period of a CosineWarmup left open), then every epoch is one C call
  that computes each update's rate from the network's update counter.
- A rollback restores everything an epoch changes: the fit loop keeps
  the parameters and the velocity, this the second state slab and the
  update counter.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import _core
from .optimizers import CoreOptimizer
from .schedules import ReduceLROnPlateau

DivergenceError = _core.DivergenceError


class OptimizerRun:
    """The optimizer side of the epochs of one fit on `net`."""

    def __init__(self, net: Any, opt: CoreOptimizer, steps_per_epoch: int, epochs: int) -> None:
        self.net, self.opt = net, opt
        self.config = opt.config()
        if opt.schedule is not None:
            opt.schedule._bind(steps_per_epoch, net.optimizer_step, steps_per_epoch * epochs)
        self.plateau = opt.schedule if isinstance(opt.schedule, ReduceLROnPlateau) else None
        n = net.n_params
        self._saved = np.empty(n, net.dtype)
        self._has_second = False
        self._step = 0
        self._scratch = np.empty(n, net.dtype)

    def train_epoch(self, x: np.ndarray, y: np.ndarray | None, labels: np.ndarray | None,
                    batch: int, shuffle: bool, seed: int, epoch: int, **kwargs: Any) -> float:
        """One epoch in the C core; the keyword arguments go to Net.train_epoch_opt."""
        return self.net.train_epoch_opt(x, y, labels, batch, shuffle, seed, epoch, self.config,
                                        self.opt.schedule_config(), **kwargs)

    def save(self) -> None:
        """Keep what an epoch changes besides the parameters and the
        velocity (which the fit loop keeps): the second state slab and
        the update counter."""
        self._has_second = self.net.has_state(1)
        if self._has_second:
            self.net.get_state(1, self._saved)
        self._step = self.net.optimizer_step

    def restore(self) -> None:
        """Put back what save() kept."""
        net = self.net
        if self._has_second:
            net.set_state(1, self._saved)
        elif net.has_state(1):
            net.set_state(1, np.zeros(net.n_params, net.dtype))
        net.optimizer_step = self._step

    def check_finite(self) -> None:
        """DivergenceError when the second state slab holds NaN or infinity."""
        if not self.net.has_state(1):
            return
        self.net.get_state(1, self._scratch)
        if _core.first_nonfinite(self._scratch) >= 0:
            raise DivergenceError("the optimizer's second moments became NaN or infinite")

    def end_epoch(self, values: dict[str, Any]) -> None:
        """Between epochs: record the rate of the epoch's last update as
        "lr" and feed a plateau schedule its metric."""
        values["lr"] = self.opt.learning_rate(max(self.net.optimizer_step - 1, 0))
        if self.plateau is not None:
            self.plateau.observe(values[self.plateau.monitored(values)])

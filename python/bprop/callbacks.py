"""The training history and the callbacks fit() calls as training goes.

Design decisions:
- A whole epoch stays one call into the C core. Callbacks that override
  a batch method make fit() call back into Python after every batch (the
  C core's per-batch hook then takes the GIL); the others cost nothing
  per batch.
- A callback ends training by setting ``model.stop_training = True``:
  after the current epoch from an epoch method, after the current batch
  from a batch method.
- ``on_train_end`` runs however training ends, as the closing half of
  ``on_train_begin``: normally, stopped by a callback, or by an exception
  (a DivergenceError, Ctrl-C, a callback's own). After an exception its
  logs say so under "exception", and fit raises that exception, never
  one that an ``on_train_end`` raised while it was on its way.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from typing import Any, Callable

import numpy as np

_log = logging.getLogger("bprop")


class History:
    """Per-epoch figures of a fit() call.

    ``history.history`` maps a metric name to one value per epoch: "loss"
    and "accuracy" (classification) or "r2" (regression) on the training
    rows, "val_loss" with "val_accuracy" or "val_r2" when there is
    validation data, and "lr", the learning rate. The same lists are
    reachable as ``history["loss"]``.

    The training loss and metric are running figures: each batch counts
    with the weights it was trained from, as in the progress bar.

    ``history.diagnostics`` (after ``fit(..., diagnostics=True)``, or with
    a ``GradientMonitor``) maps
    "grad_norm", "weight_norm", "update_ratio" and "dead_relu" to one list
    per epoch holding one value per layer; see
    ``bprop.diagnostics.LAYER_STATS``. ``history.interrupted`` is True
    when Ctrl-C ended the fit.
    """

    def __init__(self) -> None:
        self.history: dict[str, list[float]] = {}
        self.epoch: list[int] = []
        self.diagnostics: dict[str, list[list[float]]] = {}
        self.interrupted = False

    def record(self, epoch: int, values: dict[str, Any]) -> None:
        """Adds one epoch's logs: numbers to ``history``, the per-layer
        statistics under "layers" to ``diagnostics``."""
        self.epoch.append(epoch)
        for name, value in values.items():
            if name == "layers":
                for stat, per_layer in value.items():
                    self.diagnostics.setdefault(stat, []).append(
                        [float(v) for v in per_layer]
                    )
            else:
                self.history.setdefault(name, []).append(float(value))

    def __getitem__(self, name: str) -> list[float]:
        return self.history[name]

    def __contains__(self, name: object) -> bool:
        return name in self.history

    def __len__(self) -> int:
        return len(self.epoch)

    def __repr__(self) -> str:
        return f"History(epochs={len(self.epoch)}, metrics={sorted(self.history)})"


class Callback:
    """Base class of the objects ``fit(..., callbacks=[...])`` calls.

    Override the methods you need. Each gets the epoch or batch number
    (from 0) and a dict of logs:

    - epoch logs hold what History records for the epoch ("loss",
      "accuracy" or "r2", "lr", "val_loss", ...) and, for a callback whose
      ``needs_layer_stats`` is True, "layers": per-layer statistics
      (bprop.diagnostics.LAYER_STATS) as lists of one value per layer;
    - batch logs hold "batch", "size" (its rows) and, at the end, "loss",
      the batch's loss before its update.

    ``self.model`` is the model in training; ``self.params`` holds
    "epochs", "batches" (per epoch), "batch_size", "samples" and
    "metrics" (the names the epoch logs hold). Setting
    ``self.model.stop_training = True`` ends training after the current
    batch (from a batch method) or epoch.

    ``on_train_end`` is called once for every callback whose
    ``on_train_begin`` returned, however training ends: after the last
    epoch, when a callback stopped it, and when an exception ended it (a
    ``DivergenceError``, ``KeyboardInterrupt`` on Ctrl-C, or an exception
    raised by a callback, this one included). Its logs are those of the
    last epoch recorded in the History (empty if none was), and after an
    exception they also hold that exception under "exception". The model
    then holds the weights fit leaves after that exception (those of the
    last good epoch after a divergence). Every ``on_train_end`` runs even
    when an earlier one raises. fit then raises the exception that ended
    training; an exception raised by an ``on_train_end`` meanwhile is
    logged on the "bprop" logger and added to it as a note. When training
    ended normally, the first exception an ``on_train_end`` raised is
    raised, with any later ones as notes.
    """

    #: True to receive per-layer statistics under "layers" in epoch logs.
    needs_layer_stats = False

    model: Any = None
    params: dict[str, Any] = {}

    def set_model(self, model: Any) -> None:
        self.model = model

    def set_params(self, params: dict[str, Any]) -> None:
        self.params = params

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        """Before the first epoch."""

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        """After the last epoch, with its logs; also when an exception ends
        training, which the logs then hold under "exception"."""

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        """Before an epoch's first batch."""

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        """After an epoch and its validation."""

    def on_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        """Before a batch; overriding it makes fit() call back every batch."""

    def on_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        """After a batch's update; overriding it makes fit() call back every batch."""


def add_note(exc: BaseException, note: str) -> None:
    """``exc.add_note(note)``, also before Python 3.11 (which shows no
    notes, but keeps them in ``__notes__``)."""
    if hasattr(exc, "add_note"):
        exc.add_note(note)
    else:
        exc.__notes__ = [*getattr(exc, "__notes__", []), note]  # type: ignore[attr-defined]


def _overrides(callback: Callback, name: str) -> bool:
    return getattr(type(callback), name) is not getattr(Callback, name)


class CallbackList:
    """The callbacks of one fit() call, called in the order given."""

    def __init__(self, callbacks: Sequence[Callback], model: Any, params: dict[str, Any]) -> None:
        callbacks = list(callbacks)
        for i, callback in enumerate(callbacks):
            if not isinstance(callback, Callback):
                raise ValueError(
                    f"callbacks[{i}] is {callback!r}, not a bprop.callbacks.Callback"
                )
            callback.set_model(model)
            callback.set_params(dict(params))
        self.model = model
        self.callbacks = callbacks
        self.batch_begin = [c for c in callbacks if _overrides(c, "on_batch_begin")]
        self.batch_end = [c for c in callbacks if _overrides(c, "on_batch_end")]

    @property
    def wants_batches(self) -> bool:
        return bool(self.batch_begin or self.batch_end)

    @property
    def needs_layer_stats(self) -> bool:
        return any(c.needs_layer_stats for c in self.callbacks)

    # The callbacks whose on_train_begin returned, owed an on_train_end.
    _begun: list[Callback] = []

    def on_train_begin(self) -> None:
        self._begun = []
        for callback in self.callbacks:
            callback.on_train_begin({})
            self._begun.append(callback)

    def on_train_end(self, logs: dict[str, Any], error: BaseException | None = None) -> None:
        """Calls on_train_end of every callback that began, each once.

        `error` is the exception ending training, or None. With one, this
        never raises: what an on_train_end raises is logged and noted on
        `error`, which the caller raises. Without one, the first exception
        an on_train_end raised is raised once all have run.
        """
        begun, self._begun = self._begun, []
        if error is not None:
            logs = {**logs, "exception": error}
        first: BaseException | None = None
        for callback in begun:
            try:
                callback.on_train_end(logs)
            except BaseException as exc:
                if error is None and first is None:
                    first = exc
                    continue
                ended_by = error if error is not None else first
                note = (
                    f"{type(callback).__name__}.on_train_end raised {exc!r} while "
                    f"training was ending with {type(ended_by).__name__}"
                )
                _log.error(note, exc_info=exc)
                add_note(ended_by, note)
        if first is not None:
            raise first

    def on_epoch_begin(self, epoch: int) -> None:
        for callback in self.callbacks:
            callback.on_epoch_begin(epoch, {})
        for callback in self.batch_begin:
            callback.on_batch_begin(0, {"batch": 0, "size": self._first_size})

    def on_epoch_end(self, epoch: int, logs: dict[str, Any]) -> None:
        for callback in self.callbacks:
            callback.on_epoch_end(epoch, logs)

    _first_size = 0

    def batch_hook(self, n_batches: int, batch_size: int, samples: int) -> Callable:
        """The function the epoch monitor calls after each batch: the batch
        ends, the next begins, and a true result stops the epoch."""
        self._first_size = min(batch_size, samples)
        model = self.model

        def hook(index: int, rows: int, loss: float) -> bool:
            logs = {"batch": index, "size": rows, "loss": loss}
            for callback in self.batch_end:
                callback.on_batch_end(index, logs)
            if not model.stop_training and index + 1 < n_batches:
                size = min(batch_size, samples - (index + 1) * batch_size)
                for callback in self.batch_begin:
                    callback.on_batch_begin(index + 1, {"batch": index + 1, "size": size})
            return bool(model.stop_training)

        return hook


def _direction(monitor: str, mode: str) -> str:
    """"min" or "max": how `monitor` improves under `mode`."""
    if mode not in ("auto", "min", "max"):
        raise ValueError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")
    if mode != "auto":
        return mode
    return "max" if monitor.endswith(("accuracy", "r2")) else "min"


def _logged(logs: dict[str, Any] | None, monitor: str, who: str) -> float:
    logs = logs or {}
    if monitor not in logs:
        recorded = ", ".join(k for k in logs if k != "layers") or "nothing"
        hint = ""
        if monitor.startswith("val_"):
            hint = " (give fit validation data, or monitor 'loss')"
        raise ValueError(f"{who} monitors {monitor!r}, which fit records no value of; it "
                         f"records {recorded}{hint}")
    return float(logs[monitor])


class _Best:
    """The best value of a monitored figure so far."""

    def __init__(self, monitor: str, mode: str, min_delta: float) -> None:
        if not (isinstance(min_delta, (int, float)) and math.isfinite(min_delta)
                and min_delta >= 0):
            raise ValueError(f"min_delta must be a finite number >= 0, got {min_delta!r}")
        self.direction = _direction(monitor, mode)
        self.min_delta = float(min_delta)

    def start(self, baseline: float | None = None) -> float:
        if baseline is not None:
            return float(baseline)
        return math.inf if self.direction == "min" else -math.inf

    def improves(self, value: float, best: float) -> bool:
        if self.direction == "min":
            return value < best - self.min_delta
        return value > best + self.min_delta


class EarlyStopping(Callback):
    """Stops training when a monitored figure stops improving.

    Parameters
    ----------
    monitor : str
        A name the epoch logs hold: "val_loss" (default), "loss",
        "val_accuracy", ...
    patience : int
        Training stops after this many epochs in a row without
        improvement (after the first such epoch when it is 0 or 1).
    min_delta : float
        How much the figure must improve on the best so far to count.
    mode : str
        "min", "max", or "auto": "max" for names ending in "accuracy" or
        "r2", "min" otherwise.
    baseline : float, optional
        A value to beat: the epochs before the figure first improves on it
        count against the patience.
    restore_best_weights : bool
        At the end of training, set the weights of the best epoch back;
        not when an exception ended training, which leaves the weights fit
        keeps after it (those of the last good epoch after a divergence).
    start_from_epoch : int
        Epochs to train before watching, for warm-up.

    Attributes
    ----------
    best, best_epoch : the best value and its epoch (from 0; None if no
        epoch improved on the baseline)
    stopped_epoch : the epoch (from 0) after which it stopped training,
        or None
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        patience: int = 0,
        min_delta: float = 0.0,
        mode: str = "auto",
        baseline: float | None = None,
        restore_best_weights: bool = False,
        start_from_epoch: int = 0,
    ) -> None:
        for name, value in (("patience", patience), ("start_from_epoch", start_from_epoch)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
        if baseline is not None and not math.isfinite(baseline):
            raise ValueError(f"baseline must be a finite number, got {baseline!r}")
        self.monitor = monitor
        self.patience = patience
        self._best = _Best(monitor, mode, min_delta)
        self.baseline = baseline
        self.restore_best_weights = restore_best_weights
        self.start_from_epoch = start_from_epoch
        self.on_train_begin()

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self.best = self._best.start(self.baseline)
        self.best_epoch: int | None = None
        self.best_weights: list[np.ndarray] | None = None
        self.stopped_epoch: int | None = None
        self.wait = 0
        self._last_epoch: int | None = None

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        value = _logged(logs, self.monitor, "EarlyStopping")
        self._last_epoch = epoch
        if epoch < self.start_from_epoch:
            return
        if self._best.improves(value, self.best):
            self.best, self.best_epoch, self.wait = value, epoch, 0
            if self.restore_best_weights:
                self.best_weights = self.model.get_weights()
            return
        self.wait += 1
        if self.wait >= max(1, self.patience):
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        if "exception" in (logs or {}):
            return
        if self.best_weights is not None and self.best_epoch != self._last_epoch:
            self.model.set_weights(self.best_weights)


class StopAtLoss(Callback):
    """Stops training once a monitored figure reaches a target value.

    Parameters
    ----------
    value : float
        The target: reached when the figure is at or below it ("min"), or
        at or above it ("max").
    monitor : str
        "loss" by default; any name the epoch logs hold.
    mode : str
        "min", "max", or "auto": "max" for names ending in "accuracy" or
        "r2", "min" otherwise.

    Attributes
    ----------
    stopped_epoch : the epoch (from 0) that reached the target, or None
    """

    def __init__(self, value: float, monitor: str = "loss", mode: str = "auto") -> None:
        if not (isinstance(value, (int, float)) and math.isfinite(value)):
            raise ValueError(f"value must be a finite number, got {value!r}")
        self.value = float(value)
        self.monitor = monitor
        self.direction = _direction(monitor, mode)
        self.stopped_epoch: int | None = None

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self.stopped_epoch = None

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        value = _logged(logs, self.monitor, "StopAtLoss")
        if (value <= self.value) if self.direction == "min" else (value >= self.value):
            self.stopped_epoch = epoch
            self.model.stop_training = True


class ModelCheckpoint(Callback):
    """Saves the model (``model.save``) after epochs.

    Parameters
    ----------
    path : str or os.PathLike
        Where to save. It may hold format fields: ``{epoch}`` (from 1)
        and any name of the epoch logs, e.g.
        ``"model-{epoch:03d}-{val_loss:.4f}.bpm"``.
    monitor : str
        The figure save_best_only compares ("val_loss" by default).
    save_best_only : bool
        Save only after an epoch that improves the monitored figure, so a
        fixed `path` ends up holding the best model.
    mode : str
        "min", "max", or "auto" as in EarlyStopping.
    min_delta : float
        How much the figure must improve to count.

    Attributes
    ----------
    best, best_epoch : the best value and its epoch (from 0), with
        save_best_only
    saved : the paths written, in order
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        monitor: str = "val_loss",
        save_best_only: bool = False,
        mode: str = "auto",
        min_delta: float = 0.0,
    ) -> None:
        self.path = os.fspath(path)
        self.monitor = monitor
        self.save_best_only = save_best_only
        self._best = _Best(monitor, mode, min_delta)
        self.on_train_begin()

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self.best = self._best.start()
        self.best_epoch: int | None = None
        self.saved: list[str] = []

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs = logs or {}
        if self.save_best_only:
            value = _logged(logs, self.monitor, "ModelCheckpoint")
            if not self._best.improves(value, self.best):
                return
            self.best, self.best_epoch = value, epoch
        fields = {k: v for k, v in logs.items() if k != "layers"}
        try:
            path = self.path.format(epoch=epoch + 1, **fields)
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(
                f"ModelCheckpoint path {self.path!r} cannot be filled in: {exc!r}; it may "
                f"name {{epoch}} and {', '.join('{' + k + '}' for k in fields)}"
            ) from None
        self.model.save(path)
        self.saved.append(path)


class GradientMonitor(Callback):
    """Records per-layer gradient statistics every epoch and warns of
    vanishing or exploding gradients.

    Each epoch adds one list of per-layer values to every entry of
    ``self.history`` ("grad_norm", "weight_norm", "update_ratio",
    "dead_relu"; see bprop.diagnostics.LAYER_STATS). A layer whose
    gradient norm falls below `vanishing` or rises above `exploding`, or
    whose relu units are all dead, is reported through the "bprop"
    logger and in ``self.warnings``.
    """

    needs_layer_stats = True

    def __init__(self, vanishing: float = 1e-7, exploding: float = 1e3) -> None:
        if not 0 <= vanishing < exploding:
            raise ValueError(
                f"need 0 <= vanishing < exploding, got {vanishing!r} and {exploding!r}"
            )
        self.vanishing = float(vanishing)
        self.exploding = float(exploding)
        self.on_train_begin()

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self.history: dict[str, list[list[float]]] = {}
        self.warnings: list[str] = []

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        stats = (logs or {}).get("layers")
        if stats is None:
            return
        for name, values in stats.items():
            self.history.setdefault(name, []).append(list(values))
        for layer, norm in enumerate(stats["grad_norm"]):
            problem = None
            if norm < self.vanishing:
                problem = f"gradient norm {norm:.3g} is below {self.vanishing:g}: it vanishes"
            elif not norm <= self.exploding:
                problem = f"gradient norm {norm:.3g} is above {self.exploding:g}: it explodes"
            elif stats["dead_relu"][layer] == 1.0:
                problem = "every relu unit is dead (0 for every sampled row)"
            if problem is not None:
                message = f"epoch {epoch + 1}, layer {layer + 1}: {problem}"
                self.warnings.append(message)
                _log.warning(message)

"""Distributed training with other optimizers, callbacks and diagnostics,
shared by tests/test_distributed.py and the MPI ranks it starts:
``mpirun -n N python tests/mpi_callbacks.py OUT_DIR``.

Each rank trains every case below with ``fit(..., distributed=True)`` and
writes arrays to OUT_DIR/rank<r>.npz and what it saw and raised to
OUT_DIR/rank<r>.json. Some callbacks run on one rank only, to show that
the ranks still agree on when to stop.
"""

from __future__ import annotations

import json
import os
import sys

import bprop
import numpy as np
from bprop import schedules

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mpi_cases  # noqa: E402


def optimizers() -> dict:
    """name: a fresh optimizer (schedules keep what a fit binds them to)."""
    return {
        "adam": bprop.Adam(lr=0.003, schedule=schedules.CosineWarmup(period=4, warmup=1)),
        "adamw": bprop.AdamW(lr=0.002, weight_decay=0.05, clip_norm=1.0, decay_biases=True),
        "rmsprop": bprop.RMSprop(
            lr=0.001, momentum=0.5, schedule=schedules.StepDecay(step_size=1, gamma=0.5)
        ),
        "adagrad": bprop.Adagrad(lr=0.05, clip_value=0.05),
        # The training loss falls, so in "max" mode every epoch but the
        # first is a plateau: the rate halves from the third epoch on.
        "sgd_plateau": bprop.SGD(
            lr=0.05,
            momentum=0.9,
            schedule=schedules.ReduceLROnPlateau(
                factor=0.5, patience=0, monitor="loss", mode="max"
            ),
        ),
    }


#: Settings every case shares; the validation rows are the last 200.
FIT = dict(loss="cross_entropy", epochs=4, batch_size=32, shuffle=True, seed=5)


#: A fit that EarlyStopping ends after epoch 6, the best being epoch 4.
EARLY = dict(optimizer=bprop.SGD(lr=0.02, momentum=0.9), epochs=40, batch_size=16, seed=5)


def early_stopping() -> bprop.EarlyStopping:
    return bprop.EarlyStopping(monitor="val_loss", patience=2, restore_best_weights=True)


def data() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    x, y = mpi_cases.make_data("classify")
    return x[:400], y[:400], x[400:], y[400:]


def model() -> bprop.Sequential:
    return mpi_cases.make_model("classify")


class Recorder(bprop.Callback):
    """Every event with its number and logs (per-layer figures dropped)."""

    def __init__(self):
        self.events = []

    def _add(self, kind, number, logs):
        self.events.append(
            [
                kind,
                number,
                {k: v for k, v in (logs or {}).items() if k not in ("layers", "exception")},
            ]
        )

    def on_train_begin(self, logs=None):
        self._add("train_begin", None, logs)

    def on_train_end(self, logs=None):
        self._add("train_end", None, logs)
        if "exception" in (logs or {}):
            self.events[-1][2]["exception"] = type(logs["exception"]).__name__

    def on_epoch_begin(self, epoch, logs=None):
        self._add("epoch_begin", epoch, logs)

    def on_epoch_end(self, epoch, logs=None):
        self._add("epoch_end", epoch, logs)

    def on_batch_begin(self, batch, logs=None):
        self._add("batch_begin", batch, logs)

    def on_batch_end(self, batch, logs=None):
        self._add("batch_end", batch, logs)


class StopAt(bprop.Callback):
    """Stops training after epoch `epoch`, or after batch `batch` of the
    first epoch."""

    def __init__(self, epoch=None, batch=None):
        self.epoch, self.batch = epoch, batch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            self.model.stop_training = True

    def on_batch_end(self, batch, logs=None):
        if batch == self.batch:
            self.model.stop_training = True


class Boom(bprop.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 1:
            raise KeyError("no such figure")


def main() -> None:
    from mpi4py import MPI

    out = sys.argv[1]
    rank = MPI.COMM_WORLD.Get_rank()
    x, y, x_val, y_val = data()
    arrays, info = {}, {"size": MPI.COMM_WORLD.Get_size()}

    for name, opt in optimizers().items():
        trained = model()
        history = trained.fit(x, y, optimizer=opt, distributed=True, **FIT)
        arrays[f"{name}/params"] = mpi_cases.flat(trained)
        arrays[f"{name}/loss"] = np.array(history["loss"])
        arrays[f"{name}/lr"] = np.array(history["lr"])
        arrays[f"{name}/accuracy"] = np.array(history["accuracy"])

    # Early stopping on every rank, restoring the best weights.
    stopper = early_stopping()
    trained = model()
    history = trained.fit(
        x, y, validation_data=(x_val, y_val), callbacks=[stopper], distributed=True, **EARLY
    )
    arrays["early/params"] = mpi_cases.flat(trained)
    arrays["early/val_loss"] = np.array(history["val_loss"])
    info["early"] = {
        "stopped_epoch": stopper.stopped_epoch,
        "best_epoch": stopper.best_epoch,
        "epochs": len(history),
    }

    # A callback on rank 1 only stops every rank, after an epoch or a batch.
    trained = model()
    history = trained.fit(
        x,
        y,
        optimizer="adam",
        distributed=True,
        callbacks=[StopAt(epoch=1)] if rank == 1 else [],
        **FIT,
    )
    info["stop_epoch"] = {"epochs": len(history), "done": trained._epochs_done}
    recorder = Recorder()
    trained = model()
    history = trained.fit(
        x,
        y,
        optimizer="adam",
        distributed=True,
        callbacks=[StopAt(batch=4), recorder] if rank == 1 else [],
        **FIT,
    )
    info["stop_batch"] = {"epochs": len(history), "steps": trained._steps_done}

    # Batch callbacks see every batch, with the same logs on every rank.
    recorder = Recorder()
    trained = model()
    trained.fit(
        x[:390],
        y[:390],
        optimizer=bprop.SGD(lr=0.05),
        epochs=2,
        batch_size=32,
        seed=5,
        callbacks=[recorder],
        distributed=True,
    )
    info["events"] = recorder.events

    # A callback that raises on rank 1 only ends training on every rank.
    recorder = Recorder()
    trained = model()
    try:
        trained.fit(
            x,
            y,
            optimizer="adam",
            distributed=True,
            callbacks=[recorder, Boom()] if rank == 1 else [recorder],
            **FIT,
        )
    except (KeyError, RuntimeError) as exc:
        info["raised"] = f"{type(exc).__name__}: {exc}"
    info["raised_events"] = [event[:2] for event in recorder.events]
    info["raised_end"] = recorder.events[-1][2]

    # Per-layer diagnostics and a GradientMonitor.
    monitor = bprop.GradientMonitor()
    trained = model()
    history = trained.fit(
        x,
        y,
        optimizer=bprop.SGD(lr=0.05, momentum=0.9),
        diagnostics=True,
        callbacks=[monitor],
        distributed=True,
        **{**FIT, "epochs": 3},
    )
    for stat, values in history.diagnostics.items():
        arrays[f"diagnostics/{stat}"] = np.array(values)
    info["monitor_matches"] = monitor.history == history.diagnostics

    # Batch norm and dropout: every rank ends with the same parameters and
    # the same running averages (the mean of the ranks').
    trained = bprop.Sequential(
        [
            bprop.Dense(16),
            bprop.BatchNorm(activation="relu"),
            bprop.Dropout(0.2),
            bprop.Dense(10),
        ],
        seed=3,
    )
    trained.fit(x, y, optimizer="adam", distributed=True, **FIT)
    weights = trained.get_weights()
    arrays["layers/params"] = mpi_cases.flat(trained)
    arrays["layers/running"] = np.concatenate(weights[4:6])
    arrays["layers/predictions"] = trained.predict_proba(x_val)
    try:
        trained.fit(x, y, optimizer="adam", distributed=True, **{**FIT, "batch_size": 3})
    except ValueError as exc:
        info["layers_small_batch"] = str(exc)

    np.savez(os.path.join(out, f"rank{rank}.npz"), **arrays)
    with open(os.path.join(out, f"rank{rank}.json"), "w") as handle:
        json.dump(info, handle)


if __name__ == "__main__":
    main()

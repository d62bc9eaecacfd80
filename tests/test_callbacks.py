"""Tests of the training loop's callbacks: batch and epoch events, early
stopping, stopping at a target, checkpoints, the training metric and
learning rate in History, validation splits, and Ctrl-C.

Every run is seeded; where a callback's effect is checked against a
reference, the reference is the same training without the callback,
which the C core reproduces bit for bit.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import threading
import time

import bprop
import numpy as np
import pytest
from bprop import _splits

# ----------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits():
    """Standardised digits: a small training set that overfits, and
    validation rows: (X_train, y_train, X_val, y_val)."""
    X, y = bprop.datasets.load_digits()
    X = (X - X.mean(axis=0)) / (X.std(axis=0) + 1e-9)
    return X[:150], y[:150], X[1000:1300], y[1000:1300]


def overfitting_model():
    return bprop.Sequential([bprop.Dense(32, activation="relu"), bprop.Dense(10)], seed=0)


FIT = dict(loss="cross_entropy", optimizer=bprop.SGD(lr=0.1, momentum=0.9), batch_size=16,
           seed=0)


def same_weights(a, b):
    return len(a) == len(b) and all(np.array_equal(u, v) for u, v in zip(a, b))


def expected_stop(values, patience, min_delta=0.0):
    """The epoch (from 0) after which EarlyStopping(patience, min_delta)
    stops on `values` (lower is better), or None."""
    best, wait = math.inf, 0
    for epoch, value in enumerate(values):
        if value < best - min_delta:
            best, wait = value, 0
        else:
            wait += 1
            if wait >= max(1, patience):
                return epoch
    return None


class Recorder(bprop.Callback):
    """Records every event with its number and logs."""

    def __init__(self):
        self.events = []

    def on_train_begin(self, logs=None):
        self.events.append(("train_begin", None, dict(logs or {})))

    def on_train_end(self, logs=None):
        self.events.append(("train_end", None, dict(logs or {})))

    def on_epoch_begin(self, epoch, logs=None):
        self.events.append(("epoch_begin", epoch, dict(logs or {})))

    def on_epoch_end(self, epoch, logs=None):
        self.events.append(("epoch_end", epoch, dict(logs or {})))

    def on_batch_begin(self, batch, logs=None):
        self.events.append(("batch_begin", batch, dict(logs or {})))

    def on_batch_end(self, batch, logs=None):
        self.events.append(("batch_end", batch, dict(logs or {})))


# ----------------------------------------------------------------------
# Events
# ----------------------------------------------------------------------


def test_batch_callbacks_see_every_batch_in_order(digits):
    X, y, _, _ = digits
    X, y = X[:101], y[:101]
    recorder = Recorder()
    model = overfitting_model()
    model.fit(X, y, loss="cross_entropy", epochs=3, batch_size=16, seed=0,
              callbacks=[recorder])

    per_epoch = math.ceil(101 / 16)
    kinds = [kind for kind, _, _ in recorder.events]
    assert kinds.count("batch_begin") == kinds.count("batch_end") == 3 * per_epoch == 21
    assert kinds[0] == "train_begin" and kinds[-1] == "train_end"

    # Within each epoch: begin/end pairs for batches 0..6, sizes adding to 101.
    epoch_events = []
    for kind, number, logs in recorder.events:
        if kind == "epoch_begin":
            epoch_events.append([])
        elif kind.startswith("batch"):
            epoch_events[-1].append((kind, number, logs))
    assert len(epoch_events) == 3
    for events in epoch_events:
        assert [(k, n) for k, n, _ in events] == [
            (kind, b) for b in range(per_epoch) for kind in ("batch_begin", "batch_end")
        ]
        ends = [logs for kind, _, logs in events if kind == "batch_end"]
        assert sum(logs["size"] for logs in ends) == 101
        assert [logs["size"] for logs in ends] == [16] * 6 + [5]
        assert all(np.isfinite(logs["loss"]) and logs["loss"] > 0 for logs in ends)


def test_epoch_logs_hold_what_history_records(digits):
    X, y, X_val, y_val = digits
    recorder = Recorder()
    history = overfitting_model().fit(X, y, epochs=2, validation_data=(X_val, y_val),
                                      callbacks=[recorder], **FIT)
    ends = [(n, logs) for kind, n, logs in recorder.events if kind == "epoch_end"]
    assert [n for n, _ in ends] == [0, 1]
    for epoch, logs in ends:
        assert sorted(logs) == ["accuracy", "loss", "lr", "val_accuracy", "val_loss"]
        for name, value in logs.items():
            assert history[name][epoch] == pytest.approx(value, rel=1e-12)
    assert recorder.params == {
        "epochs": 2, "batches": math.ceil(150 / 16), "batch_size": 16, "samples": 150,
        "metrics": ["loss", "accuracy", "lr", "val_loss", "val_accuracy"],
    }  # fmt: skip
    assert recorder.model is not None and recorder.events[-1][2]["loss"] == history["loss"][-1]


def test_a_batch_callback_can_stop_training_after_its_batch(digits):
    X, y, _, _ = digits

    class StopAfterThird(bprop.Callback):
        def on_batch_end(self, batch, logs=None):
            if batch == 2:
                self.model.stop_training = True

    model = overfitting_model()
    history = model.fit(X, y, epochs=5, callbacks=[StopAfterThird()], **FIT)
    assert len(history) == 1
    assert model._steps_done == 3 and model._epochs_done == 1

    # Stopping before the fourth batch begins gives the same weights.
    twin = overfitting_model()
    twin.fit(X, y, epochs=1, callbacks=[_StopAt(2)], **FIT)
    assert same_weights(model.get_weights(), twin.get_weights())


class _StopAt(bprop.Callback):
    """Stops training after batch `batch` of the first epoch."""

    def __init__(self, batch):
        self.batch = batch

    def on_batch_begin(self, batch, logs=None):
        if batch == self.batch + 1:
            self.model.stop_training = True


def test_callbacks_must_be_callback_objects(digits):
    X, y, _, _ = digits
    with pytest.raises(ValueError, match=r"callbacks\[0\] is 'x', not a bprop.callbacks.Callback"):
        overfitting_model().fit(X, y, epochs=1, callbacks=["x"], **FIT)


def test_an_exception_in_a_batch_callback_keeps_the_batches_trained(digits):
    X, y, _, _ = digits

    class Boom(bprop.Callback):
        def on_batch_end(self, batch, logs=None):
            if batch == 4:
                raise RuntimeError("boom at batch 4")

    model = overfitting_model()
    with pytest.raises(RuntimeError, match="boom at batch 4"):
        model.fit(X, y, epochs=3, callbacks=[Boom()], **FIT)
    assert model._steps_done == 5
    twin = overfitting_model()
    twin.fit(X, y, epochs=1, callbacks=[_StopAt(4)], **FIT)
    assert same_weights(model.get_weights(), twin.get_weights())


# ----------------------------------------------------------------------
# on_train_end when an exception ends training
# ----------------------------------------------------------------------


class Boom(Exception):
    """An exception no code in bprop raises or catches by name."""


class RaiseAt(bprop.Callback):
    """Raises `exc` from the method `when` at epoch or batch `at`."""

    def __init__(self, when, at, exc):
        self.when, self.at, self.exc = when, at, exc

    def on_train_begin(self, logs=None):
        if self.when == "train_begin":
            raise self.exc

    def on_epoch_end(self, epoch, logs=None):
        if self.when == "epoch_end" and epoch == self.at:
            raise self.exc

    def on_train_end(self, logs=None):
        if self.when == "train_end":
            raise self.exc


def ends(recorder):
    """The logs of each on_train_end the recorder saw."""
    return [logs for kind, _, logs in recorder.events if kind == "train_end"]


def test_on_train_end_runs_after_a_divergence_which_propagates(digits):
    X, y, _, _ = digits
    recorder = Recorder()
    model = overfitting_model()
    model.build(X.shape[1], "cross_entropy")
    before = model.get_weights()
    with pytest.raises(bprop.DivergenceError, match="diverged in epoch 1") as info:
        model.fit(
            X,
            y,
            loss="cross_entropy",
            optimizer=bprop.SGD(lr=1e12),
            epochs=5,
            batch_size=16,
            seed=0,
            callbacks=[recorder],
        )
    [logs] = ends(recorder)
    assert logs == {"exception": info.value}
    assert [kind for kind, _, _ in recorder.events][-1] == "train_end"
    # The weights are still those of the last good epoch: the first's start.
    assert same_weights(model.get_weights(), before)


def test_on_train_end_runs_after_an_epoch_callback_raises(digits):
    X, y, _, _ = digits
    recorder = Recorder()
    model = overfitting_model()
    with pytest.raises(Boom, match="at epoch 2"):
        model.fit(
            X, y, epochs=5, callbacks=[RaiseAt("epoch_end", 2, Boom("at epoch 2")), recorder], **FIT
        )
    [logs] = ends(recorder)
    assert isinstance(logs.pop("exception"), Boom)
    assert logs == {name: values[-1] for name, values in model.history.history.items()}
    # The callback raised before the recorder saw the third epoch end.
    assert [n for kind, n, _ in recorder.events if kind == "epoch_end"] == [0, 1]
    assert len(model.history) == 3 and model._epochs_done == 3
    twin = overfitting_model()
    twin.fit(X, y, epochs=3, **FIT)
    assert same_weights(model.get_weights(), twin.get_weights())


def test_on_train_end_runs_after_a_keyboard_interrupt_from_a_callback(digits):
    X, y, _, _ = digits
    recorder = Recorder()
    model = overfitting_model()
    with pytest.raises(KeyboardInterrupt):
        model.fit(
            X,
            y,
            epochs=5,
            callbacks=[recorder, RaiseAt("epoch_end", 0, KeyboardInterrupt())],
            **FIT,
        )
    [logs] = ends(recorder)
    assert isinstance(logs["exception"], KeyboardInterrupt) and logs["loss"] > 0
    assert model.history.interrupted and len(model.history) == 1


def test_an_on_train_end_that_raises_does_not_replace_the_exception(digits, caplog):
    X, y, _, _ = digits
    first, last = Recorder(), Recorder()
    failing = RaiseAt("train_end", None, ValueError("cannot close"))
    model = overfitting_model()
    with caplog.at_level("ERROR", logger="bprop"):
        with pytest.raises(Boom, match="at epoch 0") as info:
            model.fit(X, y, epochs=3, callbacks=[
                first, RaiseAt("epoch_end", 0, Boom("at epoch 0")), failing, last,
            ], **FIT)  # fmt: skip
    # Every callback ended, the failing one did not stop the next.
    assert len(ends(first)) == len(ends(last)) == 1
    note = "RaiseAt.on_train_end raised ValueError('cannot close') while training was ending"
    assert any(note in text for text in getattr(info.value, "__notes__", []))
    assert any(note in record.getMessage() for record in caplog.records)


def test_an_on_train_end_that_raises_after_normal_training_raises_once_all_ran(digits):
    X, y, _, _ = digits
    last = Recorder()
    model = overfitting_model()
    with pytest.raises(ValueError, match="first close") as info:
        model.fit(X, y, epochs=2, callbacks=[
            RaiseAt("train_end", None, ValueError("first close")),
            RaiseAt("train_end", None, RuntimeError("second close")), last,
        ], **FIT)  # fmt: skip
    assert [list(logs) for logs in ends(last)] == [["loss", "accuracy", "lr"]]
    assert any(
        "RuntimeError('second close')" in text for text in getattr(info.value, "__notes__", [])
    )


def test_only_callbacks_that_began_get_on_train_end(digits):
    X, y, _, _ = digits
    began, later = Recorder(), Recorder()
    with pytest.raises(Boom, match="cannot start"):
        overfitting_model().fit(X, y, epochs=2, callbacks=[
            began, RaiseAt("train_begin", None, Boom("cannot start")), later,
        ], **FIT)  # fmt: skip
    assert [kind for kind, _, _ in began.events] == ["train_begin", "train_end"]
    assert later.events == []


def test_early_stopping_keeps_the_weights_after_an_exception(digits):
    X, y, _, _ = digits

    # Training loss falls, so in "max" mode the first epoch stays the best.
    def stopper():
        return bprop.EarlyStopping(
            monitor="loss", mode="max", patience=100, restore_best_weights=True
        )

    model = overfitting_model()
    with pytest.raises(Boom):
        model.fit(X, y, epochs=6, callbacks=[stopper(), RaiseAt("epoch_end", 3, Boom())], **FIT)
    twin = overfitting_model()
    twin.fit(X, y, epochs=4, **FIT)
    assert same_weights(model.get_weights(), twin.get_weights())

    # Ending normally, the best (first) epoch's weights come back.
    restored = overfitting_model()
    restored.fit(X, y, epochs=4, callbacks=[stopper()], **FIT)
    first = overfitting_model()
    first.fit(X, y, epochs=1, **FIT)
    assert same_weights(restored.get_weights(), first.get_weights())
    assert not same_weights(first.get_weights(), twin.get_weights())


# ----------------------------------------------------------------------
# Early stopping, targets and checkpoints
# ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def reference(digits):
    """val_loss of 30 epochs without callbacks, and the weights after each."""
    X, y, X_val, y_val = digits
    model = overfitting_model()
    weights, val_loss = [], []
    for _ in range(30):
        history = model.fit(X, y, epochs=1, validation_data=(X_val, y_val), **FIT)
        val_loss += history["val_loss"]
        weights.append(model.get_weights())
    return np.array(val_loss), weights


def test_early_stopping_stops_at_the_right_epoch_and_restores_the_best_weights(
    digits, reference
):
    X, y, X_val, y_val = digits
    val_loss, weights = reference
    stop = expected_stop(val_loss, patience=3)
    assert stop is not None and stop < 29, "the reference must overfit within 30 epochs"

    early = bprop.EarlyStopping(patience=3, restore_best_weights=True)
    model = overfitting_model()
    history = model.fit(X, y, epochs=30, validation_data=(X_val, y_val), callbacks=[early],
                        **FIT)
    assert len(history) == stop + 1
    assert early.stopped_epoch == stop
    assert early.best_epoch == int(np.argmin(val_loss[: stop + 1]))
    assert early.best == pytest.approx(val_loss[early.best_epoch], rel=1e-12)
    np.testing.assert_array_equal(history["val_loss"], val_loss[: stop + 1])
    assert same_weights(model.get_weights(), weights[early.best_epoch])


def test_early_stopping_with_min_delta_and_without_restoring(digits, reference):
    X, y, X_val, y_val = digits
    val_loss, weights = reference
    stop = expected_stop(val_loss, patience=2, min_delta=0.05)
    early = bprop.EarlyStopping(patience=2, min_delta=0.05)
    model = overfitting_model()
    history = model.fit(X, y, epochs=30, validation_data=(X_val, y_val), callbacks=[early],
                        **FIT)
    assert len(history) == stop + 1
    assert same_weights(model.get_weights(), weights[stop])


def test_early_stopping_with_an_unreachable_baseline_stops_after_patience(digits):
    X, y, X_val, y_val = digits
    early = bprop.EarlyStopping(monitor="val_accuracy", baseline=1.01, patience=2)
    history = overfitting_model().fit(X, y, epochs=20, validation_data=(X_val, y_val),
                                      callbacks=[early], **FIT)
    assert len(history) == 2 and early.stopped_epoch == 1 and early.best_epoch is None


def test_early_stopping_names_a_figure_fit_does_not_record(digits):
    X, y, _, _ = digits
    with pytest.raises(ValueError, match="EarlyStopping monitors 'val_loss'.*give fit validation"):
        overfitting_model().fit(X, y, epochs=2, callbacks=[bprop.EarlyStopping()], **FIT)
    with pytest.raises(ValueError, match="patience must be an integer >= 0"):
        bprop.EarlyStopping(patience=-1)
    with pytest.raises(ValueError, match="mode must be 'auto', 'min' or 'max'"):
        bprop.EarlyStopping(mode="lowest")


def test_stop_at_loss_stops_at_the_first_epoch_reaching_the_target(digits):
    X, y, _, _ = digits
    full = overfitting_model().fit(X, y, epochs=15, **FIT)
    target = full["loss"][6]
    first = next(i for i, v in enumerate(full["loss"]) if v <= target)
    stop = bprop.StopAtLoss(target)
    history = overfitting_model().fit(X, y, epochs=15, callbacks=[stop], **FIT)
    assert len(history) == first + 1 and stop.stopped_epoch == first
    assert history["loss"][-1] <= target

    # Metrics that grow stop once they reach the value.
    accurate = bprop.StopAtLoss(0.5, monitor="accuracy")
    history = overfitting_model().fit(X, y, epochs=15, callbacks=[accurate], **FIT)
    assert history["accuracy"][-1] >= 0.5 and all(a < 0.5 for a in history["accuracy"][:-1])


def test_checkpoint_of_the_best_epoch_loads_and_equals_the_best_model(
    digits, reference, tmp_path
):
    X, y, X_val, y_val = digits
    val_loss, weights = reference
    path = tmp_path / "best.bpm"
    checkpoint = bprop.ModelCheckpoint(path, save_best_only=True)
    early = bprop.EarlyStopping(patience=3, restore_best_weights=True)
    model = overfitting_model()
    model.fit(X, y, epochs=30, validation_data=(X_val, y_val),
              callbacks=[checkpoint, early], **FIT)

    best = int(np.argmin(val_loss[: early.stopped_epoch + 1]))
    assert checkpoint.best_epoch == early.best_epoch == best
    assert checkpoint.saved[-1] == str(path)
    assert len(checkpoint.saved) == len(set(np.minimum.accumulate(val_loss[:best + 1])))
    loaded = bprop.load(path)
    assert same_weights(loaded.get_weights(), weights[best])
    assert same_weights(loaded.get_weights(), model.get_weights())
    assert loaded.evaluate(X_val, y_val)["loss"] == pytest.approx(val_loss[best], rel=1e-6)


def test_checkpoint_paths_take_the_epoch_and_the_logs(digits, reference, tmp_path):
    X, y, X_val, y_val = digits
    val_loss, weights = reference
    checkpoint = bprop.ModelCheckpoint(tmp_path / "m-{epoch:02d}-{val_loss:.3f}.bpm")
    overfitting_model().fit(X, y, epochs=3, validation_data=(X_val, y_val),
                            callbacks=[checkpoint], **FIT)
    names = [os.path.basename(p) for p in checkpoint.saved]
    assert names == [f"m-{e + 1:02d}-{val_loss[e]:.3f}.bpm" for e in range(3)]
    for epoch, path in enumerate(checkpoint.saved):
        assert same_weights(bprop.load(path).get_weights(), weights[epoch])

    bad = bprop.ModelCheckpoint(tmp_path / "m-{accuracy_top5}.bpm")
    with pytest.raises(ValueError, match="cannot be filled in.*accuracy_top5"):
        overfitting_model().fit(X, y, epochs=1, callbacks=[bad], **FIT)


# ----------------------------------------------------------------------
# What History records
# ----------------------------------------------------------------------


@pytest.mark.parametrize("loss", ["cross_entropy", "binary_cross_entropy", "mse"])
def test_the_training_metric_is_that_of_the_weights_each_batch_saw(loss):
    """With one batch per epoch, the running metric of an epoch is the
    metric of the weights it started from."""
    rng = np.random.default_rng(3)
    X = rng.normal(size=(90, 4))
    if loss == "cross_entropy":
        y, last = rng.integers(0, 3, 90), bprop.Dense(3)
    elif loss == "binary_cross_entropy":
        y, last = (rng.random((90, 2)) > 0.5).astype(float), bprop.Dense(2)
    else:
        y, last = X @ rng.normal(size=(4, 2)), bprop.Dense(2)
    model = bprop.Sequential([bprop.Dense(6, activation="tanh"), last], seed=1)
    model.fit(X, y, loss=loss, epochs=1, batch_size=None, seed=0)
    metric = "r2" if loss == "mse" else "accuracy"
    for _ in range(3):
        before = model.evaluate(X, y)[metric]
        history = model.fit(X, y, epochs=1, batch_size=None, optimizer=bprop.SGD(lr=0.3))
        assert history[metric][0] == pytest.approx(before, rel=1e-5, abs=1e-6)
        assert history["lr"] == [pytest.approx(0.3, rel=1e-6)]


def test_training_accuracy_rises_on_data_it_can_learn(digits):
    X, y, _, _ = digits
    history = overfitting_model().fit(X, y, epochs=10, **FIT)
    assert history["accuracy"][-1] == 1.0 and history["accuracy"][0] < 0.9


# ----------------------------------------------------------------------
# Validation splits
# ----------------------------------------------------------------------


def test_stratified_split_keeps_class_proportions_and_is_disjoint():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2, 3], [500, 300, 150, 50])[rng.permutation(1000)]
    train, val = _splits.split(1000, 0.2, seed=7, classes=labels)
    assert len(val) == 200 and len(train) == 800
    assert len(np.intersect1d(train, val)) == 0
    np.testing.assert_array_equal(np.union1d(train, val), np.arange(1000))
    assert np.bincount(labels[val]).tolist() == [100, 60, 30, 10]
    assert np.bincount(labels[train]).tolist() == [400, 240, 120, 40]

    # Uneven shares: each class within one row of its proportion.
    labels = rng.integers(0, 7, 333)
    train, val = _splits.split(333, 0.3, seed=1, classes=labels)
    counts, held = np.bincount(labels, minlength=7), np.bincount(labels[val], minlength=7)
    assert len(val) == round(333 * 0.3)
    assert np.all(np.abs(held - counts * 0.3) < 1.0)
    # The same seed gives the same split; another seed another one.
    assert np.array_equal(_splits.split(333, 0.3, 1, labels)[1], val)
    assert not np.array_equal(_splits.split(333, 0.3, 2, labels)[1], val)


def test_a_class_with_one_row_stays_in_training():
    labels = np.array([0] * 9 + [1])
    train, val = _splits.split(10, 0.5, seed=0, classes=labels)
    assert 9 in train and len(val) == 5 and np.all(labels[val] == 0)


def test_fit_holds_out_the_stratified_rows_reproducibly_from_the_model_seed(digits):
    X, y, _, _ = digits
    first = overfitting_model()
    history = first.fit(X, y, loss="cross_entropy", epochs=2, validation_split=0.2,
                        stratify=True)
    again = overfitting_model().fit(X, y, loss="cross_entropy", epochs=2,
                                    validation_split=0.2, stratify=True)
    assert history.history == again.history

    # The rows validated on are those of the split drawn from the model's seed.
    train, val = _splits.split(len(X), 0.2, first.seed, y.astype(np.int32))
    assert first.evaluate(X[val], y[val])["loss"] == pytest.approx(history["val_loss"][-1],
                                                                  rel=1e-6)
    counts, held = np.bincount(y, minlength=10), np.bincount(y[val], minlength=10)
    assert np.all(np.abs(held - 0.2 * counts) < 1.0)


def test_stratify_needs_classes_and_a_split(digits):
    X, y, _, _ = digits
    with pytest.raises(ValueError, match="stratify=True needs classes; the loss 'mse'"):
        bprop.Sequential([bprop.Dense(1)]).fit(X, y.astype(float), loss="mse",
                                               validation_split=0.2, stratify=True)
    with pytest.raises(ValueError, match="stratify=True needs a validation_split"):
        overfitting_model().fit(X, y, stratify=True, **FIT)


# ----------------------------------------------------------------------
# Ctrl-C
# ----------------------------------------------------------------------


@pytest.fixture
def sigint_after():
    """Sends SIGINT to this process after `delay` seconds, with Python's
    own handler installed; returns the time it was sent."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    sent = []
    timers = []

    def arm(delay):
        def fire():
            sent.append(time.perf_counter())
            os.kill(os.getpid(), signal.SIGINT)

        timer = threading.Timer(delay, fire)
        timers.append(timer)
        timer.start()
        return sent

    yield arm
    for timer in timers:
        timer.cancel()
    signal.signal(signal.SIGINT, previous)


@pytest.mark.parametrize("batch_events", [False, True], ids=["c-epochs", "batch-callbacks"])
def test_sigint_stops_after_the_current_batch_with_consistent_weights(
    sigint_after, batch_events
):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(4000, 20))
    y = rng.integers(0, 5, 4000)

    def model():
        return bprop.Sequential([bprop.Dense(64, activation="relu"), bprop.Dense(5)], seed=0)

    settings = dict(loss="cross_entropy", optimizer=bprop.SGD(lr=0.01, momentum=0.9),
                    batch_size=32, seed=0)
    callbacks = [Recorder()] if batch_events else []
    interrupted = model()
    sent = sigint_after(0.3)
    with pytest.raises(KeyboardInterrupt):
        interrupted.fit(X, y, epochs=100_000, callbacks=callbacks, **settings)
    stopped = time.perf_counter()
    assert sent and stopped - sent[0] < 1.0

    history = interrupted.history
    weights = interrupted.get_weights()
    assert history.interrupted and all(np.isfinite(w).all() for w in weights)
    per_epoch = math.ceil(4000 / 32)
    full, partial = divmod(interrupted._steps_done, per_epoch)
    assert interrupted._epochs_done == full + (partial > 0)
    # A signal that lands between an epoch's end and its record leaves that
    # epoch trained but not in the history.
    assert full - 1 <= len(history) <= full

    # The weights are those of a run of exactly the batches trained.
    twin = model()
    if full:
        twin.fit(X, y, epochs=full, **settings)
    if partial:
        twin.fit(X, y, epochs=1, callbacks=[_StopAt(partial - 1)], **settings)
    assert same_weights(weights, twin.get_weights())


def test_the_cli_prints_interrupted_and_exits_130():
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    process = subprocess.Popen(
        [sys.executable, "-m", "bprop.cli", "train", "--epochs", "1000000", "--quiet"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    try:
        first = process.stdout.readline()
        assert "digits: 1797 rows" in first
        time.sleep(0.3)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 130
    assert "bprop: interrupted" in err

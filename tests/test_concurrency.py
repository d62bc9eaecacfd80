"""Threads and processes: predictions shared by threads, training while
other threads predict, and training in a forked child.

Every check compares with results computed serially, bit for bit: the
kernels give identical bits for any thread count, so any difference
means a torn read or a race.
"""

from __future__ import annotations

import multiprocessing
import sys
import threading
import time
from queue import Empty

import bprop
import numpy as np
import pytest
from bprop import datasets

EPOCHS = 12
TRAIN = dict(loss="cross_entropy", optimizer=bprop.SGD(lr=0.02, momentum=0.9), batch_size=8, seed=3)


@pytest.fixture(scope="module")
def digits():
    X, y = datasets.load_digits()
    std = X.std(axis=0)
    X = (X - X.mean(axis=0)) / np.where(std > 0, std, 1.0)
    return X.astype(np.float32), y


def _model(seed=1):
    return bprop.Sequential([bprop.Dense(32, activation="relu"), bprop.Dense(10)], seed=seed)


def _run_threads(count, work):
    """Runs work(i) on `count` threads started together; returns the
    exceptions they raised."""
    barrier = threading.Barrier(count)
    errors: list[BaseException] = []

    def run(i):
        try:
            barrier.wait()
            work(i)
        except BaseException as exc:  # reported by the caller
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads), "a thread is stuck"
    return errors


def test_predict_from_eight_threads_equals_serial_predict_every_time(digits):
    X, y = digits
    model = _model()
    model.fit(X, y, epochs=2, **TRAIN)
    expected_proba = model.predict_proba(X)
    expected = model.predict(X)
    expected_loss = model.evaluate(X, y)
    mismatches = []

    def work(i):
        for _ in range(15):
            # A different slice per round, so calls of every size overlap.
            rows = slice(i * 37, None)
            if not np.array_equal(model.predict_proba(X[rows]), expected_proba[rows]):
                mismatches.append(("predict_proba", i))
            if not np.array_equal(model.predict(X), expected):
                mismatches.append(("predict", i))
            if model.evaluate(X, y) != expected_loss:
                mismatches.append(("evaluate", i))

    assert _run_threads(8, work) == []
    assert mismatches == []


def _reference_states(X, y, queries):
    """predict_proba(queries) after 0, 1, ..., EPOCHS epochs of serial
    training, and the final weights."""
    twin = _model()
    twin.build(X.shape[1], TRAIN["loss"])
    states = [twin.predict_proba(queries)]
    for _ in range(EPOCHS):
        twin.fit(X, y, epochs=1, **TRAIN)
        states.append(twin.predict_proba(queries))
    return states, twin.get_weights()


def test_predict_while_another_thread_trains_sees_whole_epochs(digits):
    X, y = digits
    queries = X[:200]
    states, final = _reference_states(X, y, queries)
    model = _model()
    model.build(X.shape[1], TRAIN["loss"])
    done = threading.Event()
    seen: list[np.ndarray] = []

    class AwaitPrediction(bprop.Callback):
        """Holds fit after its first epoch until a prediction was made, so
        that one surely lands mid-training however fast the epochs are."""

        def on_epoch_end(self, epoch, logs=None):
            if epoch == 0:
                count, deadline = len(seen), time.monotonic() + 10.0
                while len(seen) == count and time.monotonic() < deadline:
                    time.sleep(0.001)

    def work(i):
        if i == 0:
            try:
                model.fit(X, y, epochs=EPOCHS, callbacks=[AwaitPrediction()], **TRAIN)
            finally:
                done.set()
            return
        while not done.is_set():
            seen.append(model.predict_proba(queries))
            model.get_weights()

    assert _run_threads(3, work) == []

    # Every prediction saw the weights at the end of some epoch, never a
    # mix of two steps, and training was not disturbed.
    matched = []
    for proba in seen:
        hits = [k for k, state in enumerate(states) if np.array_equal(proba, state)]
        assert hits, "a prediction during fit matches no epoch's weights"
        matched.append(hits[0])
    assert any(0 < k < EPOCHS for k in matched), f"no prediction during fit: {matched}"
    for a, b in zip(model.get_weights(), final):
        np.testing.assert_array_equal(a, b)


def test_two_threads_fitting_one_model_take_turns(digits):
    X, y = digits
    twin = _model()
    twin.fit(X, y, epochs=4, **TRAIN)
    model = _model()
    model.build(X.shape[1], TRAIN["loss"])
    assert _run_threads(2, lambda i: model.fit(X, y, epochs=2, **TRAIN)) == []
    for a, b in zip(model.get_weights(), twin.get_weights()):
        np.testing.assert_array_equal(a, b)


# ----------------------------------------------------------------------
# fork()
# ----------------------------------------------------------------------


def _train_in_child(X, y, queue, threads):
    try:
        if threads is not None:
            bprop.set_num_threads(threads)
        model = _model()
        model.fit(X, y, epochs=2, **TRAIN)
        # A product big enough to ask for every thread.
        a = np.ones((600, 600), np.float32)
        product = bprop.kernels.sgemm(a, a)
        queue.put(
            (
                model.get_weights(),
                model.predict_proba(X),
                float(product[0, 0]),
                bprop.get_num_threads(),
            )
        )
    except BaseException as exc:  # sent to the parent
        queue.put(repr(exc))


@pytest.mark.skipif(sys.platform == "win32", reason="fork() is POSIX only")
@pytest.mark.parametrize("child_threads", [None, 2], ids=["inherited", "set_to_2"])
def test_a_forked_child_trains_and_predicts(digits, child_threads):
    X, y = digits
    previous = bprop.get_num_threads()
    try:
        # The parent's OpenMP pool exists and holds two threads at the fork.
        bprop.set_num_threads(2)
        model = _model()
        model.fit(X, y, epochs=2, **TRAIN)
        a = np.ones((600, 600), np.float32)
        assert bprop.kernels.sgemm(a, a)[0, 0] == 600.0

        context = multiprocessing.get_context("fork")
        queue = context.Queue()
        child = context.Process(target=_train_in_child, args=(X, y, queue, child_threads))
        child.start()
        try:
            # Read before joining: the child exits once its result is sent.
            result = queue.get(timeout=60)
        except Empty:
            result = None
        child.join(timeout=10)
        if result is None or child.is_alive():
            child.kill()
            child.join()
            pytest.fail("the forked child hung (OpenMP deadlock)")
        assert child.exitcode == 0
        assert not isinstance(result, str), result
        weights, proba, corner, child_count = result
        for got, want in zip(weights, model.get_weights()):
            np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(proba, model.predict_proba(X))
        assert corner == 600.0
        assert child_count == 1
        # The parent keeps its threads.
        assert bprop.get_num_threads() == 2
    finally:
        bprop.set_num_threads(previous)

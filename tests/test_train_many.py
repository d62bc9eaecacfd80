"""bprop.train_many: many small models trained side by side, one thread
each, each ending bitwise where training it alone would end."""

from __future__ import annotations

import bprop
import numpy as np
import pytest
from bprop import _core


@pytest.fixture(scope="module")
def digits():
    X, y = bprop.datasets.load_digits()
    X = (X - X.mean(axis=0)) / (X.std(axis=0) + 1e-9)
    return X.astype(np.float32), y


def make_model(seed: int, hidden: int = 24) -> bprop.Sequential:
    return bprop.Sequential(
        [bprop.Dense(hidden, activation="relu"), bprop.Dense(10)], seed=seed
    )


def weights(model: bprop.Sequential) -> np.ndarray:
    return np.concatenate([w.ravel() for w in model.get_weights()])


class ThreadRecordingModel(bprop.Sequential):
    """Remembers the kernel thread count its fit ran with."""

    def fit(self, *args, **kwargs):
        self.threads_seen = _core.get_num_threads()
        return super().fit(*args, **kwargs)


def test_every_model_equals_the_same_model_trained_alone(digits):
    X, y = digits
    folds = np.array_split(np.random.default_rng(0).permutation(len(X)), 4)
    jobs = []
    for k, test in enumerate(folds):
        train = np.setdiff1d(np.arange(len(X)), test)
        jobs.append(bprop.FitJob(make_model(k), X[train], y[train], seed=k,
                                 validation_data=(X[test], y[test]),
                                 optimizer=bprop.SGD(lr=0.02 * (k + 1), momentum=0.9)))
    results = bprop.train_many(jobs, epochs=3, loss="cross_entropy", batch_size=32)

    assert [r.model for r in results] == [job.model for job in jobs]
    previous = bprop.get_num_threads()
    bprop.set_num_threads(1)
    try:
        for k, (result, test) in enumerate(zip(results, folds)):
            train = np.setdiff1d(np.arange(len(X)), test)
            alone = make_model(k)
            history = alone.fit(X[train], y[train], seed=k, epochs=3, loss="cross_entropy",
                                batch_size=32, validation_data=(X[test], y[test]),
                                optimizer=bprop.SGD(lr=0.02 * (k + 1), momentum=0.9))
            assert np.array_equal(weights(result.model), weights(alone)), k
            assert result.history.history == history.history
            assert result.error is None and result.seconds > 0
            assert result.history["val_accuracy"][-1] > 0.85
    finally:
        bprop.set_num_threads(previous)


def test_workers_use_one_thread_and_leave_the_caller_alone(digits):
    X, y = digits
    before = bprop.get_num_threads()
    models = [ThreadRecordingModel([bprop.Dense(10)], seed=s) for s in range(3)]
    results = bprop.train_many(models, X, y, epochs=1, n_jobs=2, loss="cross_entropy")
    assert [m.threads_seen for m in models] == [1, 1, 1]
    assert all(len(r.history["loss"]) == 1 for r in results)
    assert bprop.get_num_threads() == before

    models = [ThreadRecordingModel([bprop.Dense(10)], seed=s) for s in range(2)]
    bprop.train_many(models, X, y, epochs=1, threads_per_model=2, loss="cross_entropy")
    expected = 2 if bprop.cpu_info()["openmp"] else 1
    assert [m.threads_seen for m in models] == [expected, expected]


def test_shared_arguments_fill_in_what_a_job_leaves_out(digits):
    X, y = digits
    jobs = [bprop.FitJob(make_model(0), X, y, epochs=2), make_model(1)]
    results = bprop.train_many(jobs, X[:100], y[:100], epochs=1, loss="cross_entropy")
    assert [len(r.history["loss"]) for r in results] == [2, 1]
    assert bprop.train_many([]) == []


def test_failures_are_raised_or_kept(digits):
    X, y = digits
    bad = bprop.FitJob(make_model(1), X, y[:-1], epochs=1)
    with pytest.raises(ValueError, match="different numbers of rows: 1797 and 1796"):
        bprop.train_many([bprop.FitJob(make_model(0), X, y, epochs=1), bad],
                         loss="cross_entropy")

    good = make_model(2)
    results = bprop.train_many(
        [bprop.FitJob(make_model(1), X, y[:-1], epochs=1), bprop.FitJob(good, X, y, epochs=1)],
        on_error="keep", loss="cross_entropy",
    )
    assert isinstance(results[0].error, ValueError) and results[0].history is None
    assert results[1].error is None and len(results[1].history["loss"]) == 1


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda m, X, y: bprop.train_many([m, m], X, y), "jobs 0 and 1 train the same model"),
        (lambda m, X, y: bprop.train_many([m]), "job 0 is a bare model: give X and y"),
        (lambda m, X, y: bprop.train_many([m], X, y, n_jobs=0), "n_jobs must be >= 1"),
        (lambda m, X, y: bprop.train_many([m], X, y, on_error="skip"), "on_error must be"),
        (lambda m, X, y: bprop.train_many([m], X, y, verbose=False, distributed=True),
         "does not support distributed=True"),
        (lambda m, X, y: bprop.train_many([m, "model"], X, y), "job 1 is 'model'"),
        (lambda m, X, y: bprop.train_many(m, X, y), "a sequence of FitJob or Sequential"),
        (lambda m, X, y: bprop.FitJob(m, X, y, verbose=True), "does not support verbose=True"),
        (lambda m, X, y: bprop.FitJob("m", X, y), "model must be a bprop.Sequential"),
    ],
)
def test_bad_arguments_raise(digits, call, message):
    X, y = digits
    with pytest.raises(ValueError, match=message):
        call(make_model(0), X, y)


def test_benchmark_row_compares_with_one_after_another():
    from bprop import bench_parallel

    rows = bench_parallel.bench_train_many(("tiny",), quick=True)
    [row] = rows
    assert row.group == "train_many" and row.unit == "models/s"
    assert row.figures["bprop"] > 0 and row.figures["baseline"] > 0
    assert row.ratio("baseline") == pytest.approx(row.figures["bprop"] / row.figures["baseline"])
    assert "2 threads each" in row.note

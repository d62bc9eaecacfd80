"""Parity of bprop.MLPClassifier / MLPRegressor with scikit-learn's MLP.

Part of ``bprop bench`` (group "sklearn"). On each bundled data set
(digits, breast cancer, diabetes), standardised with the statistics of
a fixed 80/20 split's training rows, both estimators get the same
hyper-parameters and solver and are fitted once per random_state; each
row reports the total fit time of each side and, in its note, the mean
test accuracy (R^2 for diabetes) of each and their difference in points.
Skipped, with a note, when scikit-learn is not installed.
"""

from __future__ import annotations

import time
import warnings
from functools import partial
from typing import Any, Callable

import numpy as np

from . import datasets
from .bench import Row
from .sklearn import MLPClassifier, MLPRegressor

# NOTE: batch_size 64 rather than "auto" (200): on a 2-core machine both
# sides then spend most of an epoch in arithmetic, not per-batch overhead.
_SHARED = {"hidden_layer_sizes": (100,), "solver": "adam", "batch_size": 64, "max_iter": 200}

#: name: (loader, is classification, hyper-parameters given to both sides)
CASES: dict[str, tuple[Callable[[], Any], bool, dict[str, Any]]] = {
    "digits": (datasets.load_digits, True, _SHARED),
    "breast_cancer": (datasets.load_breast_cancer, True, _SHARED),
    "diabetes": (datasets.load_diabetes, False, {**_SHARED, "alpha": 1.0}),
}


def _split(name: str) -> tuple[np.ndarray, ...]:
    """Standardised train and test arrays of a fixed 80/20 split."""
    X, y = CASES[name][0]()
    X = np.asarray(X, dtype=np.float64)
    order = np.random.default_rng(0).permutation(len(X))
    cut = int(0.8 * len(X))
    train, test = order[:cut], order[cut:]
    mean, std = X[train].mean(axis=0), X[train].std(axis=0) + 1e-9
    X = (X - mean) / std
    if not CASES[name][1]:
        y = np.asarray(y, dtype=np.float64)
        y = (y - y[train].mean()) / y[train].std()
    return X[train], y[train], X[test], y[test]


def _run(make: Callable[[int], Any], data: tuple[np.ndarray, ...], seeds: range
         ) -> tuple[float, float]:
    """(total fit seconds, mean test score) over the seeds."""
    x_train, y_train, x_test, y_test = data
    seconds, scores = 0.0, []
    for seed in seeds:
        est = make(seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            start = time.perf_counter()
            est.fit(x_train, y_train)
            seconds += time.perf_counter() - start
        scores.append(est.score(x_test, y_test))
    return seconds, float(np.mean(scores))


def _make(cls: Any, params: dict[str, Any], seed: int) -> Any:
    return cls(random_state=seed, **params)


def parity(quick: bool = False) -> list[dict[str, Any]]:
    """Per data set: the score and fit time of bprop and of scikit-learn."""
    from sklearn import neural_network

    seeds = range(2 if quick else 5)
    results = []
    for name, (_, classify, params) in CASES.items():
        data = _split(name)
        ours = MLPClassifier if classify else MLPRegressor
        theirs = neural_network.MLPClassifier if classify else neural_network.MLPRegressor
        _run(partial(_make, ours, params), data, range(1))  # warm up
        t_bprop, s_bprop = _run(partial(_make, ours, params), data, seeds)
        t_sk, s_sk = _run(partial(_make, theirs, params), data, seeds)
        results.append({
            "data": name, "metric": "accuracy" if classify else "r2",
            "bprop_score": s_bprop, "sklearn_score": s_sk,
            "bprop_fit_s": t_bprop, "sklearn_fit_s": t_sk, "speedup": t_sk / t_bprop,
        })
    return results


def bench_sklearn(quick: bool = False) -> list[Row]:
    """The parity results as bench rows: fit seconds, lower is better."""
    try:
        results = parity(quick)
    except ImportError:
        return [Row("sklearn", "parity", "fit s", note="scikit-learn is not installed: "
                    "pip install scikit-learn")]
    rows = []
    for r in results:
        diff = 100 * (r["bprop_score"] - r["sklearn_score"])
        note = (f"test {r['metric']} bprop {r['bprop_score']:.4f}, sklearn "
                f"{r['sklearn_score']:.4f} ({diff:+.2f} points)")
        rows.append(Row("sklearn", r["data"], "fit s",
                        {"bprop": r["bprop_fit_s"], "sklearn": r["sklearn_fit_s"]},
                        lower_is_better=True, note=note))
    return rows

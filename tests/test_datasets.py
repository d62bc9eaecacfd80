"""Tests for the data sets bundled in bprop.datasets."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import bprop.datasets
import numpy as np
import pytest
from bprop.datasets import (
    DATASETS,
    load,
    load_breast_cancer,
    load_diabetes,
    load_digits,
)

LOADERS = {
    "digits": load_digits,
    "breast_cancer": load_breast_cancer,
    "diabetes": load_diabetes,
}
SHAPES = {"digits": (1797, 64), "breast_cancer": (569, 30), "diabetes": (442, 10)}
Y_DTYPES = {"digits": np.int64, "breast_cancer": np.int64, "diabetes": np.float64}

DIGITS_CLASS_COUNTS = [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]

BREAST_CANCER_FEATURE_NAMES = [
    f"{prefix}{name}"
    for prefix in ("mean ", "", "worst ")
    for name in (
        "radius",
        "texture",
        "perimeter",
        "area",
        "smoothness",
        "compactness",
        "concavity",
        "concave points",
        "symmetry",
        "fractal dimension",
    )
]
# The standard-error block is named "<property> error" rather than with a prefix.
BREAST_CANCER_FEATURE_NAMES[10:20] = [f"{n} error" for n in BREAST_CANCER_FEATURE_NAMES[10:20]]


def test_dataset_names() -> None:
    assert DATASETS == ("digits", "breast_cancer", "diabetes")


@pytest.mark.parametrize("name", DATASETS)
def test_shapes_and_dtypes(name: str) -> None:
    X, y = LOADERS[name]()
    assert X.shape == SHAPES[name]
    assert y.shape == (SHAPES[name][0],)
    assert X.dtype == np.float64
    assert y.dtype == Y_DTYPES[name]
    assert X.flags.c_contiguous
    assert np.isfinite(X).all()
    assert np.isfinite(y).all()


@pytest.mark.parametrize("name", DATASETS)
def test_load_by_name_matches_loader(name: str) -> None:
    X1, y1 = load(name)
    X2, y2 = LOADERS[name]()
    np.testing.assert_array_equal(X1, X2)
    np.testing.assert_array_equal(y1, y2)
    assert y1.dtype == y2.dtype


@pytest.mark.parametrize("name", DATASETS)
def test_each_call_returns_fresh_arrays(name: str) -> None:
    X, y = load(name)
    X[:] = -1.0
    y[:] = -1
    X2, y2 = load(name)
    assert (X2 != -1.0).any()
    assert (y2 != -1).any()


def test_load_unknown_name_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="nope") as excinfo:
        load("nope")
    message = str(excinfo.value)
    for name in DATASETS:
        assert name in message


def test_digits_values() -> None:
    X, y = load_digits()
    assert X.min() == 0.0
    assert X.max() == 16.0
    np.testing.assert_array_equal(X, np.round(X))
    np.testing.assert_array_equal(np.unique(y), np.arange(10))
    np.testing.assert_array_equal(np.bincount(y), DIGITS_CLASS_COUNTS)
    np.testing.assert_array_equal(X[0, :16], [0, 0, 5, 13, 9, 1, 0, 0, 0, 0, 13, 15, 10, 15, 5, 0])
    assert y[0] == 0
    np.testing.assert_array_equal(X[-1, :8], [0, 0, 10, 14, 8, 1, 0, 0])
    assert y[-1] == 8
    assert X.sum() == 561718.0


def test_breast_cancer_values() -> None:
    X, y = load_breast_cancer()
    np.testing.assert_array_equal(np.bincount(y), [212, 357])
    assert X.min() == 0.0
    assert X.max() == 4254.0
    # Exact equality: the stored float64 values must be the parsed decimals.
    np.testing.assert_array_equal(X[0, :5], [17.99, 10.38, 122.8, 1001.0, 0.1184])
    assert y[0] == 0
    np.testing.assert_array_equal(X[-1, :5], [7.76, 24.54, 47.92, 181.0, 0.05263])
    assert y[-1] == 1


def test_diabetes_values_are_raw() -> None:
    X, y = load_diabetes()
    np.testing.assert_array_equal(X[0], [59, 2, 32.1, 101, 157, 93.2, 38, 4, 4.8598, 87])
    assert y[0] == 151.0
    np.testing.assert_array_equal(X[-1], [36, 1, 19.6, 71, 250, 133.2, 97, 3, 4.5951, 92])
    assert y[-1] == 57.0
    np.testing.assert_array_equal(np.unique(X[:, 1]), [1.0, 2.0])  # sex, unscaled
    np.testing.assert_array_equal(X.min(axis=0), [19, 1, 18, 62, 97, 41.6, 22, 2, 3.2581, 58])
    np.testing.assert_array_equal(
        X.max(axis=0), [79, 2, 42.2, 133, 301, 242.4, 99, 9.09, 6.107, 124]
    )
    assert y.min() == 25.0
    assert y.max() == 346.0
    np.testing.assert_array_equal(y, np.round(y))
    assert y.sum() == 67243.0


def test_return_names() -> None:
    X, y, feature_names, target_names = load_digits(return_names=True)
    assert X.shape == (1797, 64)
    assert feature_names[:3] == ["pixel_0_0", "pixel_0_1", "pixel_0_2"]
    assert feature_names[-1] == "pixel_7_7"
    assert len(feature_names) == 64
    assert target_names == [str(d) for d in range(10)]

    X, y, feature_names, target_names = load_breast_cancer(return_names=True)
    assert feature_names == BREAST_CANCER_FEATURE_NAMES
    assert target_names == ["malignant", "benign"]

    X, y, feature_names, target_names = load_diabetes(return_names=True)
    assert feature_names == ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]
    assert target_names is None

    for name in DATASETS:
        result = load(name, return_names=True)
        assert len(result) == 4
        assert all(isinstance(s, str) for s in result[2])
        assert len(result[2]) == SHAPES[name][1]


def test_data_files_are_package_resources() -> None:
    from importlib.resources import files

    data = files("bprop.datasets") / "data"
    for name in DATASETS:
        assert (data / f"{name}.npz").is_file()
    assert (files("bprop.datasets") / "README.md").is_file()


def _run_python(code: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter that finds the same ``bprop`` package."""
    package_parent = Path(bprop.datasets.__file__).resolve().parents[2]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(package_parent), env.get("PYTHONPATH", "")) if p
    )
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )


def test_works_without_scikit_learn() -> None:
    # Run in a fresh interpreter where importing sklearn is made impossible, and check that
    # it was never imported.
    code = textwrap.dedent(
        """
        import sys
        sys.modules["sklearn"] = None  # any "import sklearn" now raises ImportError
        from bprop.datasets import DATASETS, load
        for name in DATASETS:
            X, y, feature_names, target_names = load(name, return_names=True)
        assert sys.modules["sklearn"] is None
        assert not any(m.startswith("sklearn.") for m in sys.modules)
        print("ok")
        """
    )
    result = _run_python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_import_does_not_import_scikit_learn() -> None:
    code = "import sys, bprop.datasets as d; d.load_digits(); print('sklearn' in sys.modules)"
    result = _run_python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


@pytest.mark.parametrize("name", DATASETS)
def test_round_trip_against_scikit_learn(name: str) -> None:
    # Only where scikit-learn happens to be installed (a development check).
    datasets = pytest.importorskip("sklearn.datasets")
    if name == "diabetes":
        bunch = datasets.load_diabetes(scaled=False)
    else:
        bunch = getattr(datasets, f"load_{name}")()
    X, y, feature_names, target_names = load(name, return_names=True)
    assert np.array_equal(X, np.asarray(bunch.data, dtype=np.float64))
    assert np.array_equal(y, bunch.target)
    assert feature_names == [str(s) for s in bunch.feature_names]
    if name == "diabetes":
        assert target_names is None
    else:
        assert target_names == [str(s) for s in bunch.target_names]

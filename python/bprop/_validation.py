"""Input checks and conversions shared by the model, the kernels and the CLI.

Every public entry point converts its arrays here, once: any numeric
array-like becomes a C-contiguous float32 array (float64 for float64
models, through ``dtype=``), copied only when needed, and bad input raises
ValueError naming the argument and the problem.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import _core


def _numeric(value: Any, name: str) -> np.ndarray:
    try:
        array = np.asarray(value)
    except ValueError as exc:  # ragged nested sequences
        raise ValueError(f"{name} must be a rectangular array of numbers: {exc}") from None
    if array.dtype == object:
        try:
            array = array.astype(np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{name} must hold numbers only: {exc}") from None
    if array.dtype.kind not in "biuf":
        raise ValueError(f"{name} must be numeric, got an array of dtype {array.dtype}")
    return array


def _float32(array: np.ndarray, dtype: Any = np.float32) -> np.ndarray:
    """`array` as C-contiguous `dtype` (float32 unless given). Values too
    large for float32 become infinite without a warning; check_finite then
    names them."""
    dtype = np.dtype(dtype)
    if array.dtype.kind == "f" and array.dtype.itemsize > dtype.itemsize:
        with np.errstate(over="ignore"):
            return np.ascontiguousarray(array, dtype=dtype)
    return np.ascontiguousarray(array, dtype=dtype)


def as_dtype(value: Any) -> np.dtype:
    """A model's dtype: float32 or float64, given by name or as a NumPy dtype."""
    try:
        dtype = np.dtype(value) if value is not None else None
    except TypeError:
        dtype = None
    if dtype is None or dtype.name not in ("float32", "float64"):
        raise ValueError(f"dtype must be 'float32' or 'float64', got {value!r}")
    return dtype


def check_finite(array: np.ndarray, name: str) -> None:
    """Raise ValueError if `array` holds NaN or infinity."""
    if array.dtype.kind != "f":
        return
    if array.dtype in (np.float32, np.float64) and array.flags.c_contiguous:
        # The compiled scan costs a fraction of np.isfinite on small inputs.
        at = _core.first_nonfinite(array.reshape(-1))
        bad = None if at < 0 else np.unravel_index(at, array.shape)
    elif not np.isfinite(array).all():
        bad = np.argwhere(~np.isfinite(array))[0]
    else:
        bad = None
    if bad is not None:
        where = ", ".join(str(int(i)) for i in bad)
        raise ValueError(
            f"{name} contains NaN or infinity (first at index [{where}]); "
            f"remove or impute those values, or check that they fit in {array.dtype}"
        )


def as_matrix(
    value: Any,
    name: str = "X",
    allow_empty: bool = False,
    finite: bool = True,
    dtype: Any = np.float32,
) -> np.ndarray:
    """A C-contiguous 2-D array of `dtype` (float32 unless given), of
    finite values if `finite`."""
    if (
        type(value) is np.ndarray
        and value.dtype == dtype
        and value.ndim == 2
        and value.flags.c_contiguous
        and value.size
    ):
        # Already what the C core takes (the common case for predictions):
        # only the scan for NaN and infinity is left.
        if finite and _core.first_nonfinite(value.reshape(-1)) >= 0:
            check_finite(value, name)
        return value
    array = _numeric(value, name)
    if array.ndim != 2:
        hint = " (use reshape(-1, 1) for a single feature)" if array.ndim == 1 else ""
        raise ValueError(f"{name} must be 2-D, got shape {array.shape}{hint}")
    if not allow_empty and (array.shape[0] == 0 or array.shape[1] == 0):
        raise ValueError(f"{name} is empty: shape {array.shape}")
    result = _float32(array, dtype)
    if finite:
        check_finite(result, name)
    return result


def as_vector(value: Any, name: str, dtype: Any = np.float32) -> np.ndarray:
    """A C-contiguous 1-D array of `dtype` (float32 unless given) of finite
    values."""
    array = _numeric(value, name)
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {array.shape}")
    result = _float32(array, dtype)
    check_finite(result, name)
    return result


def as_labels(value: Any, n_classes: int, name: str = "y") -> np.ndarray:
    """Class indices as C-contiguous int32, each in [0, n_classes)."""
    array = _numeric(value, name)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 1:
        raise ValueError(
            f"{name} must hold one class index per row, got shape {array.shape}"
        )
    if array.size == 0:
        raise ValueError(f"{name} is empty")
    check_finite(array, name)
    if array.dtype.kind == "f" and not np.array_equal(array, np.round(array)):
        raise ValueError(f"{name} must hold whole class indices, got fractional values")
    low, high = array.min(), array.max()
    if low < 0 or high >= n_classes:
        bad = low if low < 0 else high
        raise ValueError(
            f"{name} has label {bad:g} outside [0, {n_classes - 1}]: the output layer "
            f"has {n_classes} units, one per class"
        )
    return np.ascontiguousarray(array, dtype=np.int32)


def as_probabilities(
    value: Any, n_classes: int, name: str = "y", dtype: Any = np.float32
) -> np.ndarray:
    """Class probabilities as a C-contiguous (n, n_classes) array of
    `dtype` (float32 unless given): values >= 0, each row summing to 1
    (within 1e-3)."""
    array = as_targets(value, n_classes, name, dtype)
    if array.min() < 0:
        raise ValueError(
            f"{name} holds class probabilities, which must be >= 0; got {array.min():g}"
        )
    sums = array.sum(axis=1, dtype=np.float64)
    bad = np.flatnonzero(np.abs(sums - 1.0) > 1e-3)
    if bad.size:
        raise ValueError(
            f"{name} holds class probabilities, whose rows must sum to 1; row {bad[0]} "
            f"sums to {sums[bad[0]]:g}"
        )
    return array


def as_targets(
    value: Any, n_outputs: int, name: str = "y", dtype: Any = np.float32
) -> np.ndarray:
    """Targets as a C-contiguous (n, n_outputs) array of `dtype` (float32
    unless given).

    A 1-D target is accepted for a single output and never broadcast
    against a 2-D prediction.
    """
    array = _numeric(value, name)
    if array.ndim == 0:
        raise ValueError(f"{name} must hold one target per row, got a single value")
    flat = array.ndim == 1
    if flat:
        array = array.reshape(-1, 1)
    if array.ndim != 2 or array.shape[1] != n_outputs:
        hint = ""
        if flat and n_outputs > 1 and np.array_equal(array, np.round(array)):
            hint = (
                "; for class labels, train with loss='cross_entropy', which takes one "
                "label per row"
            )
        raise ValueError(
            f"{name} has shape {array.shape[:1] if flat else array.shape} but the model has "
            f"{n_outputs} output(s); expected ({len(array)}, {n_outputs})"
            + (" or (n,)" if n_outputs == 1 else "")
            + hint
        )
    if array.shape[0] == 0:
        raise ValueError(f"{name} is empty")
    result = _float32(array, dtype)
    check_finite(result, name)
    return result


def check_same_length(x: np.ndarray, y: np.ndarray, x_name: str = "X", y_name: str = "y") -> None:
    if len(x) != len(y):
        raise ValueError(
            f"{x_name} and {y_name} have different numbers of rows: {len(x)} and {len(y)}"
        )


def check_positive_int(value: Any, name: str, allow_zero: bool = False) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    low = 0 if allow_zero else 1
    if value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
    return int(value)

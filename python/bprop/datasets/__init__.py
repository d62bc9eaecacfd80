"""Small real data sets bundled with bprop.

Three classic data sets are shipped inside the package as compressed ``.npz`` files under
``bprop/datasets/data/`` so that examples, tests and benchmarks work offline and without
scikit-learn. The values were copied once from scikit-learn's bundled copies and round-trip
exactly; see ``README.md`` in this directory for their origin, citation and licence.

- ``digits``: 1,797 samples x 64 integer features in 0..16, 10 classes (0..9).
- ``breast_cancer``: 569 samples x 30 float features, 2 classes (0=malignant, 1=benign).
- ``diabetes``: 442 samples x 10 raw (unscaled) features, float regression target.

Examples
--------
>>> from bprop.datasets import load_digits
>>> X, y = load_digits()
>>> X.shape, X.dtype, y.dtype
((1797, 64), dtype('float64'), dtype('int64'))
"""

from __future__ import annotations

import io
from typing import Literal, Union, overload

import numpy as np

__all__ = ["DATASETS", "load", "load_breast_cancer", "load_diabetes", "load_digits"]

#: Names accepted by :func:`load`.
DATASETS: tuple[str, ...] = ("digits", "breast_cancer", "diabetes")

_Xy = tuple[np.ndarray, np.ndarray]
_XyNames = tuple[np.ndarray, np.ndarray, list[str], Union[list[str], None]]


def _read(name: str) -> dict[str, np.ndarray]:
    """Read ``data/<name>.npz`` from the installed package into memory."""
    from importlib.resources import files

    resource = files(__name__) / "data" / f"{name}.npz"
    # Reading the bytes first works for plain directories and zipped installs alike.
    with np.load(io.BytesIO(resource.read_bytes()), allow_pickle=False) as npz:
        return {key: npz[key] for key in npz.files}


def _load(name: str, y_dtype: type[np.generic], return_names: bool) -> _Xy | _XyNames:
    arrays = _read(name)
    X = np.ascontiguousarray(arrays["X"], dtype=np.float64)
    y = np.ascontiguousarray(arrays["y"], dtype=y_dtype)
    if not return_names:
        return X, y
    feature_names = [str(s) for s in arrays["feature_names"]]
    target_names = [str(s) for s in arrays["target_names"]] if "target_names" in arrays else None
    return X, y, feature_names, target_names


@overload
def load_digits(*, return_names: Literal[False] = ...) -> _Xy: ...
@overload
def load_digits(*, return_names: Literal[True]) -> _XyNames: ...
def load_digits(*, return_names: bool = False) -> _Xy | _XyNames:
    """Load the UCI optical recognition of handwritten digits data set.

    1,797 images of 8x8 pixels; each pixel is an integer count in 0..16 (the number of "on"
    pixels in a 4x4 block of the original 32x32 bitmap).

    Parameters
    ----------
    return_names : bool, default False
        Also return the feature names and the target names.

    Returns
    -------
    X : numpy.ndarray of shape (1797, 64), float64
        Pixel values 0..16, row-major over the 8x8 image.
    y : numpy.ndarray of shape (1797,), int64
        Digit class 0..9.
    feature_names : list of str
        ``"pixel_<row>_<col>"``; only if ``return_names`` is True.
    target_names : list of str
        ``["0", ..., "9"]``; only if ``return_names`` is True.
    """
    return _load("digits", np.int64, return_names)


@overload
def load_breast_cancer(*, return_names: Literal[False] = ...) -> _Xy: ...
@overload
def load_breast_cancer(*, return_names: Literal[True]) -> _XyNames: ...
def load_breast_cancer(*, return_names: bool = False) -> _Xy | _XyNames:
    """Load the Wisconsin diagnostic breast cancer data set.

    569 samples of 30 real-valued features (mean, standard error and "worst" value of ten
    cell-nucleus measurements) with a binary diagnosis.

    Parameters
    ----------
    return_names : bool, default False
        Also return the feature names and the target names.

    Returns
    -------
    X : numpy.ndarray of shape (569, 30), float64
        Features, unscaled.
    y : numpy.ndarray of shape (569,), int64
        0 = malignant (212 samples), 1 = benign (357 samples).
    feature_names : list of str
        E.g. ``"mean radius"``; only if ``return_names`` is True.
    target_names : list of str
        ``["malignant", "benign"]``; only if ``return_names`` is True.
    """
    return _load("breast_cancer", np.int64, return_names)


@overload
def load_diabetes(*, return_names: Literal[False] = ...) -> _Xy: ...
@overload
def load_diabetes(*, return_names: Literal[True]) -> _XyNames: ...
def load_diabetes(*, return_names: bool = False) -> _Xy | _XyNames:
    """Load the diabetes progression regression data set (Efron et al., 2004).

    442 patients, 10 baseline variables, and a quantitative measure of disease progression
    one year after baseline. The features are the **raw, unscaled** measurements (as
    ``sklearn.datasets.load_diabetes(scaled=False)`` returns them), not the mean-centred,
    norm-scaled version that scikit-learn returns by default; standardise them before
    training.

    Parameters
    ----------
    return_names : bool, default False
        Also return the feature names and the target names.

    Returns
    -------
    X : numpy.ndarray of shape (442, 10), float64
        age (years), sex (1 or 2), bmi (body mass index), bp (mean blood pressure) and six
        blood serum measurements s1..s6.
    y : numpy.ndarray of shape (442,), float64
        Disease progression, integer-valued in 25..346.
    feature_names : list of str
        ``["age", "sex", "bmi", "bp", "s1", ..., "s6"]``; only if ``return_names`` is True.
    target_names : None
        Regression target, so always None; only if ``return_names`` is True.
    """
    return _load("diabetes", np.float64, return_names)


_LOADERS = {
    "digits": load_digits,
    "breast_cancer": load_breast_cancer,
    "diabetes": load_diabetes,
}


@overload
def load(name: str, *, return_names: Literal[False] = ...) -> _Xy: ...
@overload
def load(name: str, *, return_names: Literal[True]) -> _XyNames: ...
def load(name: str, *, return_names: bool = False) -> _Xy | _XyNames:
    """Load a bundled data set by name.

    Parameters
    ----------
    name : {"digits", "breast_cancer", "diabetes"}
        Which data set; see :data:`DATASETS`.
    return_names : bool, default False
        Also return the feature names and the target names (None for ``"diabetes"``).

    Returns
    -------
    tuple
        ``(X, y)``, or ``(X, y, feature_names, target_names)`` if ``return_names`` is True;
        see the individual loaders.

    Raises
    ------
    ValueError
        If ``name`` is not one of :data:`DATASETS`.
    """
    try:
        loader = _LOADERS[name]
    except (KeyError, TypeError):
        valid = ", ".join(repr(n) for n in DATASETS)
        raise ValueError(f"unknown data set {name!r}; valid names are {valid}") from None
    return loader(return_names=return_names)

"""bprop: fast neural network training by backpropagation.

The training core and its kernels are a C library with SIMD and OpenMP;
this package builds models, runs training loops and converts data.

>>> import bprop
>>> X, y = bprop.datasets.load_digits()
>>> model = bprop.Sequential([bprop.Dense(64, activation="relu"), bprop.Dense(10)])
>>> history = model.fit(X, y, loss="cross_entropy", epochs=30, seed=0)
"""

from __future__ import annotations

from pathlib import Path

from . import (
    _core,
    activations,
    callbacks,
    datasets,
    diagnostics,
    distributed,
    initializers,
    kernels,
    losses,
    metrics,
    optimizers,
    schedules,
)
from .callbacks import (
    Callback,
    EarlyStopping,
    GradientMonitor,
    History,
    ModelCheckpoint,
    StopAtLoss,
)
from .diagnostics import gradcheck
from .layers import BatchNorm, Dense, Dropout, LayerNorm
from .losses import (
    BinaryCrossEntropy,
    CrossEntropy,
    Huber,
    MeanAbsoluteError,
    MeanSquaredError,
    Poisson,
)
from .model import DivergenceError, Sequential
from .model_file import ModelFormatError, from_bytes, load
from .optimizers import LBFGS, SGD, Adagrad, Adam, AdamW, RMSprop
from .parallel import FitJob, FitResult, train_many

__version__: str = _core.version()

__all__ = [
    "Adagrad",
    "Adam",
    "AdamW",
    "LBFGS",
    "RMSprop",
    "BinaryCrossEntropy",
    "Huber",
    "MeanAbsoluteError",
    "Poisson",
    "activations",
    "initializers",
    "Callback",
    "EarlyStopping",
    "GradientMonitor",
    "ModelCheckpoint",
    "StopAtLoss",
    "CrossEntropy",
    "BatchNorm",
    "Dense",
    "Dropout",
    "LayerNorm",
    "FitJob",
    "FitResult",
    "DivergenceError",
    "History",
    "MeanSquaredError",
    "MLPClassifier",
    "MLPRegressor",
    "ModelFormatError",
    "SGD",
    "Sequential",
    "__version__",
    "callbacks",
    "cpu_info",
    "datasets",
    "distributed",
    "diagnostics",
    "from_bytes",
    "get_cmake_dir",
    "get_include",
    "get_library_dir",
    "get_num_threads",
    "get_pkgconfig_dir",
    "gradcheck",
    "kernels",
    "load",
    "losses",
    "metrics",
    "optimizers",
    "schedules",
    "set_num_threads",
    "train_many",
]


def __getattr__(name: str) -> object:
    # NOTE: the scikit-learn estimators load on first use, so that
    # ``import bprop`` does not import scikit-learn.
    if name in ("MLPClassifier", "MLPRegressor"):
        from . import sklearn

        return getattr(sklearn, name)
    raise AttributeError(f"module 'bprop' has no attribute {name!r}")


def cpu_info() -> dict[str, object]:
    """What the compiled core runs on.

    ``simd`` is the level in use (``BPROP_SIMD`` may force a lower one),
    ``best`` the highest this CPU supports, ``threads`` the thread count
    and ``openmp`` whether the library was built with OpenMP.
    """
    return {
        "simd": _core.simd_level(),
        "best": _core.simd_best(),
        "threads": _core.get_num_threads(),
        "openmp": _core.has_openmp(),
    }


def get_num_threads() -> int:
    """Threads the kernels use."""
    return _core.get_num_threads()


def set_num_threads(n: int) -> None:
    """Use `n` threads in the kernels (1 without OpenMP). Results do not
    depend on the thread count."""
    if isinstance(n, bool) or not isinstance(n, int):
        raise ValueError(f"n must be an integer, got {n!r}")
    _core.set_num_threads(n)


def get_include() -> str:
    """The folder holding ``bprop.h``, for compiling C programs against bprop."""
    return str(Path(__file__).parent / "include")


def get_library_dir() -> str:
    """The folder holding the shared C library ``libbprop``."""
    return str(Path(__file__).parent / "lib")


def get_cmake_dir() -> str:
    """The folder holding ``bpropConfig.cmake``: pass it to CMake as
    ``-DCMAKE_PREFIX_PATH`` (or ``-Dbprop_DIR``) and use ``find_package(bprop)``
    with the target ``bprop::bprop``."""
    return str(Path(__file__).parent / "lib" / "cmake" / "bprop")


def get_pkgconfig_dir() -> str:
    """The folder holding ``bprop.pc``: add it to ``PKG_CONFIG_PATH`` and use
    ``pkg-config --cflags --libs bprop``."""
    return str(Path(__file__).parent / "lib" / "pkgconfig")

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

from . import _core, datasets, kernels, losses, metrics, optimizers
from .callbacks import History
from .layers import Dense
from .losses import BinaryCrossEntropy, CrossEntropy, MeanSquaredError
from .model import DivergenceError, Sequential
from .optimizers import SGD

__version__: str = _core.version()

__all__ = [
    "BinaryCrossEntropy",
    "CrossEntropy",
    "Dense",
    "DivergenceError",
    "History",
    "MeanSquaredError",
    "SGD",
    "Sequential",
    "__version__",
    "cpu_info",
    "datasets",
    "get_include",
    "get_library_dir",
    "get_num_threads",
    "kernels",
    "losses",
    "metrics",
    "optimizers",
    "set_num_threads",
]


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

"""The compiled kernels on NumPy arrays.

Every function takes array-likes, checks their shapes, converts them once
to C-contiguous float32 and calls the C library with the GIL released.
Functions that produce arrays accept ``out=``: a C-contiguous float32
array of the right shape that is written in place and returned. An
input that shares memory with ``out`` is copied first. NaN and infinity
are not rejected: they propagate as in NumPy.

Shapes follow the C library: a dense layer's weights ``w`` are
``(n_in, n_out)``, so ``dense_forward(x, w, b) == act(x @ w + b)``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from . import _core
from ._validation import as_labels, as_matrix, as_vector

ACTIVATIONS = _core.ACTIVATIONS

__all__ = [
    "ACTIVATIONS",
    "DenseGradients",
    "activation_backward",
    "activation_forward",
    "binary_cross_entropy",
    "cross_entropy",
    "dense_backward",
    "dense_forward",
    "identity",
    "mse",
    "relu",
    "sgd_update",
    "sgemm",
    "sigmoid",
    "softmax",
    "tanh",
]


def _activation_code(activation: str) -> int:
    if activation not in ACTIVATIONS:
        raise ValueError(
            f"unknown activation {activation!r}; choose one of {', '.join(ACTIVATIONS)}"
        )
    return ACTIVATIONS.index(activation)


def _output(out: np.ndarray | None, shape: tuple[int, ...], name: str = "out") -> np.ndarray:
    """`out` checked for shape, dtype and layout, or a new array."""
    if out is None:
        return np.empty(shape, dtype=np.float32)
    if not isinstance(out, np.ndarray):
        raise ValueError(f"{name} must be a NumPy array, got {type(out).__name__}")
    if out.shape != shape:
        raise ValueError(f"{name} has shape {out.shape}; expected {shape}")
    if out.dtype != np.float32:
        raise ValueError(f"{name} has dtype {out.dtype}; expected float32")
    if not out.flags.c_contiguous or not out.flags.writeable:
        raise ValueError(f"{name} must be a writeable C-contiguous array")
    return out


def _matrix(value: Any, name: str) -> np.ndarray:
    # NOTE: kernels follow IEEE arithmetic as NumPy does (NaN and infinity
    # propagate) instead of scanning every input, which would cost as much
    # as the kernel on small shapes.
    return as_matrix(value, name, allow_empty=True, finite=False)


def _apart_from(value: np.ndarray, out: np.ndarray) -> np.ndarray:
    """`value`, copied if it overlaps `out`.

    The GEMM reads its inputs block by block while it writes `out`, so an
    input sharing memory with `out` would be read after being overwritten.
    """
    return value.copy() if np.may_share_memory(value, out) else value


def sgemm(
    a: Any,
    b: Any,
    trans_a: bool = False,
    trans_b: bool = False,
    out: np.ndarray | None = None,
    alpha: float = 1.0,
    beta: float = 0.0,
) -> np.ndarray:
    """``alpha * op(a) @ op(b) + beta * out`` in float32.

    ``op(x)`` is ``x.T`` when the matching ``trans_*`` flag is set; the
    transpose is read in place, never copied. With ``beta != 0``, ``out``
    must be given and is read.
    """
    a = _matrix(a, "a")
    b = _matrix(b, "b")
    m, k = (a.shape[1], a.shape[0]) if trans_a else a.shape
    kb, n = (b.shape[1], b.shape[0]) if trans_b else b.shape
    if k != kb:
        raise ValueError(
            f"inner dimensions differ: op(a) is {m}x{k} but op(b) is {kb}x{n}"
        )
    if beta != 0.0 and out is None:
        raise ValueError("beta != 0 reads out, so out must be given")
    c = _output(out, (m, n))
    a, b = _apart_from(a, c), _apart_from(b, c)
    _core.sgemm(c, a, b, bool(trans_a), bool(trans_b), float(alpha), float(beta))
    return c


def activation_forward(x: Any, activation: str, out: np.ndarray | None = None) -> np.ndarray:
    """``activation(x)`` row by row (softmax normalises each row)."""
    code = _activation_code(activation)
    x = _matrix(x, "x")
    y = _output(out, x.shape)
    _core.activation_forward(y, x, code)
    return y


def activation_backward(
    dy: Any, y: Any, activation: str, out: np.ndarray | None = None
) -> np.ndarray:
    """The gradient before the activation, from its output ``y`` and the
    gradient ``dy`` after it."""
    code = _activation_code(activation)
    dy = _matrix(dy, "dy")
    y = _matrix(y, "y")
    if dy.shape != y.shape:
        raise ValueError(f"dy has shape {dy.shape} but y has shape {y.shape}")
    dx = _output(out, y.shape)
    _core.activation_backward(dx, dy, y, code)
    return dx


def identity(x: Any, out: np.ndarray | None = None) -> np.ndarray:
    return activation_forward(x, "identity", out)


def relu(x: Any, out: np.ndarray | None = None) -> np.ndarray:
    return activation_forward(x, "relu", out)


def sigmoid(x: Any, out: np.ndarray | None = None) -> np.ndarray:
    return activation_forward(x, "sigmoid", out)


def tanh(x: Any, out: np.ndarray | None = None) -> np.ndarray:
    return activation_forward(x, "tanh", out)


def softmax(x: Any, out: np.ndarray | None = None) -> np.ndarray:
    return activation_forward(x, "softmax", out)


def _dense_shapes(x: np.ndarray, w: np.ndarray) -> tuple[int, int, int]:
    if x.shape[1] != w.shape[0]:
        raise ValueError(
            f"x has {x.shape[1]} columns but w has {w.shape[0]} rows; "
            "w must be (n_in, n_out)"
        )
    return x.shape[0], w.shape[0], w.shape[1]


def _bias(b: Any, n_out: int) -> np.ndarray | None:
    if b is None:
        return None
    b = as_vector(b, "b")
    if b.shape[0] != n_out:
        raise ValueError(f"b has {b.shape[0]} values but w has {n_out} columns")
    return b


def dense_forward(
    x: Any,
    w: Any,
    b: Any = None,
    activation: str = "identity",
    out: np.ndarray | None = None,
) -> np.ndarray:
    """``activation(x @ w + b)``, fused in one pass; ``b`` may be None."""
    code = _activation_code(activation)
    x = _matrix(x, "x")
    w = _matrix(w, "w")
    batch, _, n_out = _dense_shapes(x, w)
    b = _bias(b, n_out)
    y = _output(out, (batch, n_out))
    x, w = _apart_from(x, y), _apart_from(w, y)
    if b is not None:
        b = _apart_from(b, y)
    _core.dense_forward(y, x, w, b, code)
    return y


class DenseGradients(NamedTuple):
    """The gradients of a dense layer's backward pass."""

    dx: np.ndarray  # (batch, n_in): passed to the previous layer
    dw: np.ndarray  # (n_in, n_out): summed over the batch
    db: np.ndarray  # (n_out,): summed over the batch
    dz: np.ndarray  # (batch, n_out): the gradient before the activation


def dense_backward(
    dy: Any, x: Any, w: Any, y: Any, activation: str = "identity"
) -> DenseGradients:
    """Backward pass of ``y = activation(x @ w + b)`` given ``dy = dL/dy``."""
    code = _activation_code(activation)
    dy = _matrix(dy, "dy")
    x = _matrix(x, "x")
    w = _matrix(w, "w")
    y = _matrix(y, "y")
    batch, n_in, n_out = _dense_shapes(x, w)
    for name, array in (("dy", dy), ("y", y)):
        if array.shape != (batch, n_out):
            raise ValueError(f"{name} has shape {array.shape}; expected {(batch, n_out)}")
    grads = DenseGradients(
        dx=np.empty((batch, n_in), np.float32),
        dw=np.empty((n_in, n_out), np.float32),
        db=np.empty(n_out, np.float32),
        dz=np.empty((batch, n_out), np.float32),
    )
    _core.dense_backward(grads.dx, grads.dw, grads.db, grads.dz, dy, x, w, y, code)
    return grads


def _targets_like(target: Any, pred: np.ndarray, name: str) -> np.ndarray:
    # A 1-D target is one value per row, for a single output only.
    target = _matrix(np.reshape(target, (-1, 1)) if np.ndim(target) == 1 else target, name)
    if target.shape != pred.shape:
        raise ValueError(f"{name} has shape {target.shape} but the prediction is {pred.shape}")
    return target


def _loss_grad(grad: bool, shape: tuple[int, ...]) -> np.ndarray | None:
    return np.empty(shape, np.float32) if grad else None


def mse(pred: Any, target: Any, grad: bool = False) -> float | tuple[float, np.ndarray]:
    """Mean squared error over all elements; with ``grad=True`` also
    d(loss)/d(pred). ``target`` has the shape of ``pred``, or ``(n,)`` when
    ``pred`` has one column."""
    pred = _matrix(pred, "pred")
    target = _targets_like(target, pred, "target")
    g = _loss_grad(grad, pred.shape)
    loss = _core.loss_mse(g, pred, target)
    return (loss, g) if grad else loss


def cross_entropy(
    logits: Any, labels: Any, grad: bool = False
) -> float | tuple[float, np.ndarray]:
    """Softmax cross-entropy from logits and integer labels, averaged over
    rows; with ``grad=True`` also d(loss)/d(logits)."""
    logits = _matrix(logits, "logits")
    labels = as_labels(labels, logits.shape[1], "labels")
    if labels.shape[0] != logits.shape[0]:
        raise ValueError(
            f"labels has {labels.shape[0]} rows but logits has {logits.shape[0]}"
        )
    g = _loss_grad(grad, logits.shape)
    loss = _core.loss_cross_entropy(g, logits, labels)
    return (loss, g) if grad else loss


def binary_cross_entropy(
    logits: Any, target: Any, grad: bool = False
) -> float | tuple[float, np.ndarray]:
    """Sigmoid cross-entropy from logits and targets in [0, 1], averaged over
    all elements; with ``grad=True`` also d(loss)/d(logits)."""
    logits = _matrix(logits, "logits")
    target = _targets_like(target, logits, "target")
    if target.size and (target.min() < 0.0 or target.max() > 1.0):
        raise ValueError("target must hold values in [0, 1]")
    g = _loss_grad(grad, logits.shape)
    loss = _core.loss_binary_cross_entropy(g, logits, target)
    return (loss, g) if grad else loss


def sgd_update(
    w: np.ndarray,
    grad: Any,
    lr: float,
    velocity: np.ndarray | None = None,
    momentum: float = 0.0,
    nesterov: bool = False,
    l2: float = 0.0,
) -> np.ndarray:
    """One SGD step on ``w`` in place (and ``velocity`` with momentum).

    ``w`` and ``velocity`` must be 1-D C-contiguous float32 arrays, since
    they are updated in place. Returns ``w``.
    """
    w = _output(w, np.shape(w), "w")
    if w.ndim != 1:
        raise ValueError(f"w must be 1-D, got shape {w.shape}")
    grad = as_vector(grad, "grad")
    if grad.shape != w.shape:
        raise ValueError(f"grad has shape {grad.shape} but w has {w.shape}")
    if momentum != 0.0 and velocity is None:
        raise ValueError("momentum needs a velocity array (zeros at the first step)")
    if velocity is not None:
        velocity = _output(velocity, w.shape, "velocity")
    _core.sgd_update(w, velocity, grad, float(lr), float(momentum), bool(nesterov), float(l2))
    return w

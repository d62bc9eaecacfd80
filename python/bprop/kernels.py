"""The compiled kernels on NumPy arrays.

Every function takes array-likes, checks their shapes, converts them once
to C-contiguous float32 and calls the C library with the GIL released.
Functions that produce arrays accept ``out=``: a C-contiguous float32
array of the right shape that is written in place and returned. An
input that shares memory with ``out`` is copied first. NaN and infinity
are not rejected: they propagate as in NumPy.

Shapes follow the C library: a dense layer's weights ``w`` are
``(n_in, n_out)``, so ``dense_forward(x, w, b) == act(x @ w + b)``.

An activation is a name (with its default parameter) or an object from
``bprop.activations``; a loss's options are keyword arguments, and every
loss takes ``sample_weight``, one weight per row.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from . import _core, activations, losses
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
    "elu",
    "gelu",
    "huber",
    "identity",
    "leaky_relu",
    "log_softmax",
    "loss",
    "mae",
    "mse",
    "optimizer_update",
    "poisson",
    "relu",
    "sgd_update",
    "sgemm",
    "sigmoid",
    "silu",
    "softmax",
    "softplus",
    "tanh",
]


def _activation(activation: activations.ActivationLike) -> tuple[int, float, bool]:
    """(code, parameter, whether its derivative needs x) of an activation."""
    fn = activations.get(activation)
    return fn.code, fn.param, fn.needs_input


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


def activation_forward(
    x: Any, activation: activations.ActivationLike, out: np.ndarray | None = None
) -> np.ndarray:
    """``activation(x)`` row by row (softmax and log_softmax normalise
    each row)."""
    code, param, _ = _activation(activation)
    x = _matrix(x, "x")
    y = _output(out, x.shape)
    _core.activation_forward(y, x, code, param)
    return y


def activation_backward(
    dy: Any,
    y: Any,
    activation: activations.ActivationLike,
    out: np.ndarray | None = None,
    x: Any = None,
) -> np.ndarray:
    """The gradient before the activation, from its output ``y`` and the
    gradient ``dy`` after it; elu, gelu, gelu_tanh, silu and softplus
    also need their input ``x``."""
    code, param, needs_input = _activation(activation)
    dy = _matrix(dy, "dy")
    y = _matrix(y, "y")
    if dy.shape != y.shape:
        raise ValueError(f"dy has shape {dy.shape} but y has shape {y.shape}")
    if x is not None:
        x = _matrix(x, "x")
        if x.shape != y.shape:
            raise ValueError(f"x has shape {x.shape} but y has shape {y.shape}")
    elif needs_input:
        raise ValueError(
            f"the derivative of {activations.get(activation).name} needs its input: pass x="
        )
    dx = _output(out, y.shape)
    _core.activation_backward(dx, dy, y, code, param, x)
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


def log_softmax(x: Any, out: np.ndarray | None = None) -> np.ndarray:
    return activation_forward(x, "log_softmax", out)


def leaky_relu(x: Any, slope: float = 0.01, out: np.ndarray | None = None) -> np.ndarray:
    return activation_forward(x, activations.LeakyReLU(slope), out)


def elu(x: Any, alpha: float = 1.0, out: np.ndarray | None = None) -> np.ndarray:
    return activation_forward(x, activations.ELU(alpha), out)


def gelu(x: Any, approximate: bool = False, out: np.ndarray | None = None) -> np.ndarray:
    """The exact (erf) GELU, or its tanh approximation."""
    return activation_forward(x, activations.GELU(approximate), out)


def silu(x: Any, out: np.ndarray | None = None) -> np.ndarray:
    return activation_forward(x, "silu", out)


def softplus(x: Any, out: np.ndarray | None = None) -> np.ndarray:
    return activation_forward(x, "softplus", out)


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
    activation: activations.ActivationLike = "identity",
    out: np.ndarray | None = None,
    pre: np.ndarray | None = None,
) -> np.ndarray:
    """``activation(x @ w + b)``, fused in one pass; ``b`` may be None.

    With ``pre`` (a float32 array shaped like the output), ``x @ w + b`` is
    also written there, as dense_backward needs for elu, gelu, gelu_tanh,
    silu and softplus.
    """
    code, param, _ = _activation(activation)
    x = _matrix(x, "x")
    w = _matrix(w, "w")
    batch, _, n_out = _dense_shapes(x, w)
    b = _bias(b, n_out)
    y = _output(out, (batch, n_out))
    if pre is not None:
        pre = _output(pre, (batch, n_out), "pre")
        if np.may_share_memory(pre, y):
            raise ValueError("pre and out must not share memory")
    x, w = _apart_from(x, y), _apart_from(w, y)
    if pre is not None:
        x, w = _apart_from(x, pre), _apart_from(w, pre)
    if b is not None:
        b = _apart_from(b, y)
    _core.dense_forward(y, x, w, b, code, param, pre)
    return y


class DenseGradients(NamedTuple):
    """The gradients of a dense layer's backward pass."""

    dx: np.ndarray  # (batch, n_in): passed to the previous layer
    dw: np.ndarray  # (n_in, n_out): summed over the batch
    db: np.ndarray  # (n_out,): summed over the batch
    dz: np.ndarray  # (batch, n_out): the gradient before the activation


def dense_backward(
    dy: Any,
    x: Any,
    w: Any,
    y: Any,
    activation: activations.ActivationLike = "identity",
    pre: Any = None,
) -> DenseGradients:
    """Backward pass of ``y = activation(x @ w + b)`` given ``dy = dL/dy``;
    elu, gelu, gelu_tanh, silu and softplus also need ``pre = x @ w + b``
    (see dense_forward)."""
    code, param, needs_input = _activation(activation)
    dy = _matrix(dy, "dy")
    x = _matrix(x, "x")
    w = _matrix(w, "w")
    y = _matrix(y, "y")
    batch, n_in, n_out = _dense_shapes(x, w)
    checked = [("dy", dy), ("y", y)]
    if pre is not None:
        pre = _matrix(pre, "pre")
        checked.append(("pre", pre))
    elif needs_input:
        raise ValueError(
            f"the backward pass of {activations.get(activation).name} needs the "
            "pre-activation: pass pre= (dense_forward writes it)"
        )
    for name, array in checked:
        if array.shape != (batch, n_out):
            raise ValueError(f"{name} has shape {array.shape}; expected {(batch, n_out)}")
    grads = DenseGradients(
        dx=np.empty((batch, n_in), np.float32),
        dw=np.empty((n_in, n_out), np.float32),
        db=np.empty(n_out, np.float32),
        dz=np.empty((batch, n_out), np.float32),
    )
    _core.dense_backward(grads.dx, grads.dw, grads.db, grads.dz, dy, x, w, y, code, param,
                         pre)
    return grads


def _targets_like(target: Any, pred: np.ndarray, name: str) -> np.ndarray:
    # A 1-D target is one value per row, for a single output only.
    target = _matrix(np.reshape(target, (-1, 1)) if np.ndim(target) == 1 else target, name)
    if target.shape != pred.shape:
        raise ValueError(f"{name} has shape {target.shape} but the prediction is {pred.shape}")
    return target


def _loss_grad(grad: bool, shape: tuple[int, ...]) -> np.ndarray | None:
    return np.empty(shape, np.float32) if grad else None


def _sample_weight(sample_weight: Any, rows: int) -> np.ndarray | None:
    """Per-row weights as float32, finite and >= 0, or None."""
    if sample_weight is None:
        return None
    weights = as_vector(sample_weight, "sample_weight")
    if weights.shape[0] != rows:
        raise ValueError(f"sample_weight has {weights.shape[0]} values for {rows} rows")
    if weights.size and weights.min() < 0.0:
        raise ValueError("sample_weight must hold values >= 0")
    return weights


def loss(
    pred: Any,
    target: Any,
    loss: losses.LossLike = "mse",
    grad: bool = False,
    sample_weight: Any = None,
) -> float | tuple[float, np.ndarray]:
    """Any loss, by name or as a ``bprop.losses`` object with its options,
    averaged as the network averages it (see ``bprop.losses``); with
    ``grad=True`` also d(loss)/d(pred).

    For cross-entropy, ``target`` holds a class label per row (1-D) or
    class probabilities shaped like ``pred``; for the other losses it has
    the shape of ``pred``, or ``(n,)`` when ``pred`` has one column.
    ``sample_weight`` holds one weight >= 0 per row.
    """
    obj = losses.get(loss)
    pred = _matrix(pred, "pred")
    labels = None
    if isinstance(obj, losses.CrossEntropy) and np.ndim(target) == 1:
        labels = as_labels(target, pred.shape[1], "labels")
        if labels.shape[0] != pred.shape[0]:
            raise ValueError(f"labels has {labels.shape[0]} rows but pred has {pred.shape[0]}")
        target = None
    else:
        target = _targets_like(target, pred, "target")
        if isinstance(obj, losses.BinaryCrossEntropy) and target.size and (
            target.min() < 0.0 or target.max() > 1.0
        ):
            raise ValueError("target must hold values in [0, 1]")
        if isinstance(obj, losses.Poisson) and target.size and target.min() < 0.0:
            raise ValueError("target must hold counts >= 0 for the poisson loss")
    weights = _sample_weight(sample_weight, pred.shape[0])
    g = _loss_grad(grad, pred.shape)
    value = _core.loss_compute(g, pred, target, labels, weights, obj.options(pred.shape[1]))
    return (value, g) if grad else value


def mse(
    pred: Any, target: Any, grad: bool = False, sample_weight: Any = None
) -> float | tuple[float, np.ndarray]:
    """Mean squared error over all elements; with ``grad=True`` also
    d(loss)/d(pred). ``target`` has the shape of ``pred``, or ``(n,)`` when
    ``pred`` has one column."""
    if sample_weight is not None:
        return loss(pred, target, "mse", grad, sample_weight)
    pred = _matrix(pred, "pred")
    target = _targets_like(target, pred, "target")
    g = _loss_grad(grad, pred.shape)
    value = _core.loss_mse(g, pred, target)
    return (value, g) if grad else value


def mae(
    pred: Any, target: Any, grad: bool = False, sample_weight: Any = None
) -> float | tuple[float, np.ndarray]:
    """Mean absolute error over all elements (gradient 0 where pred ==
    target); with ``grad=True`` also d(loss)/d(pred)."""
    return loss(pred, target, "mae", grad, sample_weight)


def huber(
    pred: Any, target: Any, delta: float = 1.0, grad: bool = False, sample_weight: Any = None
) -> float | tuple[float, np.ndarray]:
    """Huber loss over all elements: d^2 / 2 within ``delta``, delta
    (|d| - delta / 2) beyond; with ``grad=True`` also d(loss)/d(pred)."""
    return loss(pred, target, losses.Huber(delta), grad, sample_weight)


def poisson(
    log_rate: Any, target: Any, grad: bool = False, sample_weight: Any = None
) -> float | tuple[float, np.ndarray]:
    """Poisson loss exp(z) - t z of log-rates z and counts t >= 0, over all
    elements; with ``grad=True`` also d(loss)/d(z) = exp(z) - t."""
    return loss(log_rate, target, "poisson", grad, sample_weight)


def cross_entropy(
    logits: Any,
    labels: Any,
    grad: bool = False,
    label_smoothing: float = 0.0,
    class_weight: Any = None,
    sample_weight: Any = None,
) -> float | tuple[float, np.ndarray]:
    """Softmax cross-entropy from logits, averaged over rows; with
    ``grad=True`` also d(loss)/d(logits). ``labels`` holds a class index
    per row, or class probabilities shaped like ``logits``."""
    if label_smoothing or class_weight is not None or sample_weight is not None or (
        np.ndim(labels) == 2 and np.shape(labels)[1] > 1
    ):
        obj = losses.CrossEntropy(label_smoothing, class_weight)
        return loss(logits, labels, obj, grad, sample_weight)
    logits = _matrix(logits, "logits")
    labels = as_labels(labels, logits.shape[1], "labels")
    if labels.shape[0] != logits.shape[0]:
        raise ValueError(
            f"labels has {labels.shape[0]} rows but logits has {logits.shape[0]}"
        )
    g = _loss_grad(grad, logits.shape)
    value = _core.loss_cross_entropy(g, logits, labels)
    return (value, g) if grad else value


def binary_cross_entropy(
    logits: Any,
    target: Any,
    grad: bool = False,
    pos_weight: float = 1.0,
    sample_weight: Any = None,
) -> float | tuple[float, np.ndarray]:
    """Sigmoid cross-entropy from logits and targets in [0, 1], averaged over
    all elements; with ``grad=True`` also d(loss)/d(logits)."""
    if pos_weight != 1.0 or sample_weight is not None:
        obj = losses.BinaryCrossEntropy(pos_weight)
        return loss(logits, target, obj, grad, sample_weight)
    logits = _matrix(logits, "logits")
    target = _targets_like(target, logits, "target")
    if target.size and (target.min() < 0.0 or target.max() > 1.0):
        raise ValueError("target must hold values in [0, 1]")
    g = _loss_grad(grad, logits.shape)
    value = _core.loss_binary_cross_entropy(g, logits, target)
    return (value, g) if grad else value


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


def optimizer_update(
    optimizer: Any,
    w: np.ndarray,
    grad: Any,
    m: np.ndarray | None = None,
    s: np.ndarray | None = None,
    step: int = 1,
    weight_decay: float | None = None,
) -> np.ndarray:
    """One update of ``w`` in place by any C-core optimizer
    (``bprop.SGD``, ``Adam``, ``AdamW``, ``RMSprop``, ``Adagrad``, or a
    name), as bp_optimizer_update computes it.

    ``m`` holds momentum or first moments (SGD and RMSprop with momentum,
    Adam, AdamW) and ``s`` second moments or sums of squares (all but
    SGD), both 1-D float32 arrays updated in place, zeros before the
    first step. `step` numbers the update from 1; the rate is the
    optimizer's schedule's for ``step - 1`` earlier updates, and
    clip_value applies (clip_norm needs a whole network). Returns ``w``.
    """
    from . import optimizers

    opt = optimizers.get(optimizer)
    if not isinstance(opt, optimizers.CoreOptimizer):
        raise ValueError(f"{opt!r} has no update kernel; use SGD, Adam, AdamW, RMSprop or Adagrad")
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 1:
        raise ValueError(f"step must be an integer >= 1, got {step!r}")
    w = _output(w, np.shape(w), "w")
    if w.ndim != 1:
        raise ValueError(f"w must be 1-D, got shape {w.shape}")
    grad = as_vector(grad, "grad")
    if grad.shape != w.shape:
        raise ValueError(f"grad has shape {grad.shape} but w has {w.shape}")
    config = opt.config()
    needs_m = opt.kind in ("adam", "adamw") or config.get("momentum", 0.0) > 0
    for name, array, needed in (("m", m, needs_m), ("s", s, opt.kind != "sgd")):
        if needed and array is None:
            raise ValueError(f"{opt.kind} needs the state array {name} (zeros at the first step)")
    m = None if m is None else _output(m, w.shape, "m")
    s = None if s is None else _output(s, w.shape, "s")
    decay = opt.weight_decay if weight_decay is None else float(weight_decay)
    _core.optimizer_update(w, m, s, grad, config, opt.learning_rate(int(step) - 1), decay,
                           int(step))
    return w

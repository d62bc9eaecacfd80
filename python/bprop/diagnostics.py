"""Looking inside training: model summaries, per-layer gradient
statistics, gradient checks against finite differences, and where a
divergence began.

Design decisions:
- Everything here reads the network the C core trains, never a Python
  re-implementation of it: layer outputs come from the forward pass of
  ``bp_net_gradient`` (``Net.layer_output``), losses from
  ``bp_net_evaluate``, so every activation and loss the core knows is
  covered. The model's own network is never disturbed: work happens on
  a clone.
- Gradient statistics are added up without the GIL by the epoch's
  per-batch hook (``_core.EpochMonitor``); the rest is one forward pass
  per epoch on a fixed sample of training rows.
- ``gradcheck`` perturbs float32 parameters and divides by the step that
  float32 actually took, computed in float64, so rounding the perturbed
  weight costs nothing. The losses themselves are float32 forward
  passes, whose rounding is what bounds the accuracy: Richardson
  extrapolation lets the steps be large (0.1), which keeps that rounding
  small next to the differences.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from . import _core
from .layers import KINDS
from .layers import widths as layer_widths

DivergenceError = _core.DivergenceError

#: What fit(..., diagnostics=True) records for each layer and epoch.
LAYER_STATS = {
    "grad_norm": "root mean square over the epoch's batches of the L2 norm of the layer's "
    "weight gradient",
    "weight_norm": "L2 norm of the layer's weights at the end of the epoch",
    "update_ratio": "mean over the epoch's batches of the norm of the weight update divided "
    "by the norm of the weights before it",
    "dead_relu": "fraction of the layer's relu units that output 0 for every row of a sample "
    "of training rows (NaN for a layer that is not relu)",
}

# Training rows the per-epoch forward pass of the statistics looks at.
_SAMPLE_ROWS = 1024

# Activations with a kink at 0, where finite differences must not cross.
_KINKED = ("relu", "leaky_relu", "elu")

# Losses with a kink: the side of it each output is on, from the outputs,
# the targets and the loss object.
_LOSS_KINKS: dict[str, Callable[[np.ndarray, np.ndarray, Any], np.ndarray]] = {
    "mae": lambda out, target, loss: out > target,
    "huber": lambda out, target, loss: np.abs(out - target) <= loss.delta,
}

# Rows per forward pass when searching a data set for non-finite outputs.
_CHUNK_ROWS = 1024


def _target_args(targets: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
    return (None, targets) if targets.dtype == np.int32 else (targets, None)


def layer_name(model: Any, layer: int) -> str:
    """'layer 2 of 3 (Dense(64, activation='relu'))' for index 1."""
    return f"layer {layer + 1} of {len(model.layers)} ({model.layers[layer]!r})"


def layer_outputs(net: Any, x: np.ndarray, targets: np.ndarray) -> list[np.ndarray]:
    """Every layer's output for the rows `x` (logits for the last layer
    under a fused loss), from the training forward pass of `net`, which
    this overwrites the gradients of. Non-finite values are returned, not
    raised."""
    y_arg, label_arg = _target_args(targets)
    try:
        net.gradient(x, y_arg, label_arg)
    except DivergenceError:
        pass
    outputs = []
    for i, (units, *_rest) in enumerate(net.layers()):
        out = np.empty((len(x), units), dtype=net.dtype)
        net.layer_output(i, out)
        outputs.append(out)
    return outputs


def first_bad_layer(net: Any, x: np.ndarray, targets: np.ndarray) -> int | None:
    """The first layer (from 0) whose output is NaN or infinite for some
    row of `x`, looked for chunk by chunk on a clone of `net`; None when
    every output is finite."""
    twin = net.clone()
    for start in range(0, len(x), _CHUNK_ROWS):
        rows = slice(start, start + _CHUNK_ROWS)
        for i, out in enumerate(layer_outputs(twin, x[rows], targets[rows])):
            if not np.isfinite(out).all():
                return i
    return None


def first_bad_parameters(net: Any) -> tuple[int, bool] | None:
    """(layer, gradient bad) for the first layer (from 0) whose weights,
    biases or momentum hold NaN or infinity, with whether its gradient
    does too; None when every layer's are finite."""
    slabs = {}
    for name in ("params", "velocity", "grads"):
        slabs[name] = np.empty(net.n_params, dtype=net.dtype)
        getattr(net, f"get_{name}")(slabs[name])
    for layer, (w_off, n_w, b_off, n_b) in enumerate(net.spans()):
        spans = [slice(w_off, w_off + n_w), slice(b_off, b_off + n_b)]
        finite = {
            name: all(np.isfinite(slab[span]).all() for span in spans)
            for name, slab in slabs.items()
        }
        if not (finite["params"] and finite["velocity"]):
            return layer, not finite["grads"]
    return None


# ----------------------------------------------------------------------
# Per-layer statistics during fit
# ----------------------------------------------------------------------


class LayerProbe:
    """Computes LAYER_STATS at the end of each epoch of one fit() call.

    The gradient and update figures come from the epoch's monitor; the
    weight norms from the parameters; the dead relu fractions from a
    forward pass on a clone over a fixed sample of up to 1024 training
    rows, drawn once from `seed`.
    """

    def __init__(self, model: Any, x: np.ndarray, targets: np.ndarray, seed: int) -> None:
        self.model = model
        net = model._net
        self.net = net.clone()
        self.params = np.empty(net.n_params, dtype=net.dtype)
        if len(x) > _SAMPLE_ROWS:
            rows = np.sort(np.random.default_rng(seed).choice(len(x), _SAMPLE_ROWS, False))
            x, targets = x[rows], targets[rows]
        self.x = np.ascontiguousarray(x)
        self.targets = np.ascontiguousarray(targets)
        self.layout = net.layers()
        self.relu = [
            _core.ACTIVATIONS[code] == "relu" for _units, code, *_offsets in self.layout
        ]

    def epoch_stats(self, monitor: Any) -> dict[str, list[float]]:
        model = self.model
        with model._params_lock.read():
            model._net.get_params(self.params)
        self.net.set_params(self.params)

        weight_norm = []
        for w_off, n_w, _b_off, _n_b in self.net.spans():
            weights = self.params[w_off : w_off + n_w].astype(np.float64)
            weight_norm.append(float(np.sqrt(weights @ weights)) if n_w else float("nan"))

        dead = [float("nan")] * len(self.layout)
        if any(self.relu):
            outputs = layer_outputs(self.net, self.x, self.targets)
            for i, out in enumerate(outputs):
                if self.relu[i]:
                    dead[i] = float(np.mean(np.all(out <= 0, axis=0)))

        per_batch = monitor.layer_stats() or [(float("nan"), float("nan"))] * len(self.layout)
        return {
            "grad_norm": [grad for grad, _ratio in per_batch],
            "weight_norm": weight_norm,
            "update_ratio": [ratio for _grad, ratio in per_batch],
            "dead_relu": dead,
        }


# ----------------------------------------------------------------------
# Model summary
# ----------------------------------------------------------------------


def summary(model: Any, print_fn: Callable[[str], Any] | None = print) -> str:
    """A table of the layers with their output shapes and parameter
    counts; passed to `print_fn` (None: not printed) and returned."""
    # Unbuilt, the inputs (and so the first layer's weights) are unknown.
    rows = [("layer", "output shape", "params")]
    total = 0
    spans = model._net.spans() if model.built else [None] * len(model.layers)
    outs = layer_widths(model.layers, model._net.n_inputs) if model.built else None
    for i, (layer, span) in enumerate(zip(model.layers, spans)):
        count = "?"
        if span is not None:
            # A layer without biases keeps zeros in their place in the slab.
            count = span[1] + (span[3] if layer.use_bias else 0)
            total += count
        units = layer.units if outs is None else outs[i]
        rows.append((f"{i + 1}: {layer!r}", f"(None, {units})", str(count)))
    widths = [max(len(row[c]) for row in rows) for c in range(3)]

    def line(row: tuple[str, str, str]) -> str:
        return f"{row[0]:<{widths[0]}}  {row[1]:<{widths[1]}}  {row[2]:>{widths[2]}}"

    rule = "-" * len(line(rows[0]))
    inputs = f"(None, {model._net.n_inputs})" if model.built else "unknown until built"
    loss = model.loss.name if model.loss is not None else "chosen at fit"
    text = [f"Sequential: inputs {inputs}, loss {loss}", rule, line(rows[0]), rule]
    text += [line(row) for row in rows[1:]]
    text += [rule, f"total parameters: {total if model.built else '?'}"]
    if model.dtype != np.float32:
        text.append(f"dtype: {model.dtype}")
    result = "\n".join(text)
    if print_fn is not None:
        print_fn(result)
    return result


# ----------------------------------------------------------------------
# Gradient check
# ----------------------------------------------------------------------


def backprop_gradient(net: Any, x: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """The gradient of the mean loss over `x` that backpropagation in the
    C core computes, as float64, laid out like the parameter slab."""
    y_arg, label_arg = _target_args(targets)
    net.gradient(x, y_arg, label_arg)
    grads = np.empty(net.n_params, dtype=net.dtype)
    net.get_grads(grads)
    return grads.astype(np.float64)


def gradcheck(
    model: Any,
    X: Any,
    y: Any,
    eps: float | None = None,
    max_rows: int = 128,
    max_params: int = 128,
    seed: int = 0,
    details: bool = False,
) -> dict[int, Any]:
    """Compares backpropagation's gradients with central finite differences.

    For each layer, up to `max_params` of its weights and biases (all of
    them in small layers; otherwise a sample drawn from `seed`) are moved
    by steps of h, h/2 and h/4 with h = eps * max(1, |w|), and the mean
    loss over up to `max_rows` rows of (X, y) is evaluated by the C core
    in the model's dtype; eps defaults to 0.2 for float32 models and 1e-3
    for float64 ones, whose gradients then agree to about 1e-9.
    Richardson extrapolation of the three central differences cancels
    their error terms up to O(h^6), so the steps can be large and float32
    rounding small next to the differences; h and h/2 are both
    tried and the estimate that is more self-consistent kept. Rows where
    a step moves a relu unit across its kink are left out of both sides
    of that parameter's comparison (its backpropagated gradient is then
    taken over the other rows), and so are rows whose outputs cross the
    kink of "mae" or "huber"; when the estimates disagree (a kink this
    cannot see) the step is cut further, and after eight tries the
    parameter is skipped. The model is not changed; an unbuilt model is built for X.

    Returns
    -------
    dict
        Layer index (from 0) -> the largest relative error among its
        checked parameters, ``|g_bp - g_fd| / max(|g_bp|, |g_fd|, floor)``
        with ``floor`` a tenth of the layer's largest gradient, so that
        gradients tiny next to their layer's are judged on that scale.
        Correct models give about 1e-4 and below; 1e-3 or more means a
        wrong gradient, except in float32 models with normalisation
        layers, whose correct gradients reach a few 1e-3 (their outputs
        depend on every row of the batch, which makes the differences
        noisier); check such a model in float64 to be sure.
        With ``details=True`` each value is a dict with
        "error", "checked" and "skipped".
    """
    if eps is None:
        eps = 1e-3 if model.dtype == np.float64 else 0.2
    if not (isinstance(eps, (int, float)) and 0 < eps < 1):
        raise ValueError(f"eps must be a number in (0, 1), got {eps!r}")
    if not model.built:
        model.build(model._check_x(X).shape[1])
    x = model._check_x(X)
    targets = model._check_y(y, model.loss)
    if len(x) != len(targets):
        raise ValueError(f"X has {len(x)} rows but y has {len(targets)}")
    if len(x) > max_rows:
        rows = np.sort(np.random.default_rng(seed).choice(len(x), max_rows, replace=False))
        x, targets = x[rows], targets[rows]
    check = _GradientCheck(model._net.clone(), model.loss, np.ascontiguousarray(x),
                           np.ascontiguousarray(targets), eps)

    rng = np.random.default_rng(seed)
    results: dict[int, Any] = {}
    for layer, (w_off, n_w, b_off, n_b) in enumerate(check.net.spans()):
        if not model.layers[layer].use_bias:
            n_b = 0
        indices = np.concatenate([np.arange(w_off, w_off + n_w), np.arange(b_off, b_off + n_b)])
        if len(indices) == 0:
            # Dropout has no parameters to check.
            continue
        if len(indices) > max_params:
            indices = np.sort(rng.choice(indices, max_params, replace=False))
        scale = 0.1 * float(np.abs(check.analytic[indices]).max())
        found = [pair for pair in (check.compare(i, scale) for i in indices) if pair]
        error = 0.0
        if found:
            exact, numeric = np.array(found).T
            floor = max(0.1 * max(np.abs(numeric).max(), np.abs(exact).max()),
                        np.finfo(np.float64).tiny)
            error = float(np.max(np.abs(exact - numeric) / np.maximum(
                np.maximum(np.abs(exact), np.abs(numeric)), floor)))
        results[layer] = (
            {"error": error, "checked": len(found), "skipped": len(indices) - len(found)}
            if details else error
        )
    return results


class _GradientCheck:
    """The finite differences of gradcheck on one batch of rows."""

    def __init__(
        self, net: Any, loss: Any, x: np.ndarray, targets: np.ndarray, eps: float
    ) -> None:
        self.net, self.x, self.targets, self.eps = net, x, targets, eps
        self.loss_kink = _LOSS_KINKS.get(loss.name)
        self.loss = loss
        self.params = np.empty(net.n_params, dtype=net.dtype)
        net.get_params(self.params)
        self.analytic = backprop_gradient(net, x, targets)
        net.set_params(self.params)
        self.trial = self.params.copy()
        self.layout = net.layers()
        self.batch_norm = any(kind == KINDS.index("batch_norm") for kind, *_ in net.layer_kinds())
        self.kinked = [
            i for i, (_u, code, *_o) in enumerate(self.layout)
            if _core.ACTIVATIONS[code] in _KINKED
        ]
        if self.loss_kink is not None:
            self.kinked.append(len(self.layout) - 1)
        self.sides = self._evaluate(x, targets)[1]

    def _evaluate(self, x: np.ndarray, targets: np.ndarray) -> tuple[float, np.ndarray]:
        """The loss at the trial parameters, and for each row which side
        of their kink its relu units (and outputs, under a loss with a
        kink) are on: one row of bits per row."""
        y_arg, label_arg = _target_args(targets)
        self.net.set_params(self.trial)
        loss = self.net.gradient(x, y_arg, label_arg)
        sides = [np.zeros((len(x), 0), dtype=bool)]
        for i in self.kinked:
            out = np.empty((len(x), self.layout[i][0]), dtype=self.net.dtype)
            self.net.layer_output(i, out)
            if i == len(self.layout) - 1 and self.loss_kink is not None:
                sides.append(self.loss_kink(out, targets, self.loss))
            if _core.ACTIVATIONS[self.layout[i][1]] in _KINKED:
                sides.append(out > 0)
        return loss, np.concatenate(sides, axis=1)

    def _differences(
        self, index: int, step: float, rows: np.ndarray | None
    ) -> tuple[list[float], np.ndarray]:
        """Central differences at step, step/2 and step/4 over `rows` (None:
        all), and which of those rows crossed a kink in any of them."""
        x, targets = self.x, self.targets
        base = self.sides
        if rows is not None:
            x, targets, base = x[rows], targets[rows], base[rows]
        w = self.params[index]
        crossed = np.zeros(len(x), dtype=bool)
        values = []
        for k in (1, 2, 4):
            up, down = self.params.dtype.type(w + step / k), self.params.dtype.type(w - step / k)
            self.trial[index] = up
            above, sides_up = self._evaluate(x, targets)
            self.trial[index] = down
            below, sides_down = self._evaluate(x, targets)
            crossed |= (sides_up != base).any(axis=1) | (sides_down != base).any(axis=1)
            # Divided by the step the dtype really took, computed in float64.
            values.append((above - below) / (float(up) - float(down)))
        self.trial[index] = w
        return values, crossed

    def compare(self, index: int, scale: float) -> tuple[float, float] | None:
        """(backpropagated, numeric) derivative for one parameter, or None
        when no step gives a trustworthy difference.

        Two steps a factor 2 apart are tried, and of their estimates the
        one whose two Richardson terms agree better is kept: a large step
        suits a smooth loss, a smaller one a noisy or sharply curved one.
        """
        best = None
        step = self.eps * max(1.0, abs(float(self.params[index])))
        for attempt in range(8):
            if attempt:
                step /= 2.0 if attempt % 2 else 5.0
            (d1, d2, d4), crossed = self._differences(index, step, None)
            exact = self.analytic[index]
            if crossed.any():
                keep = np.flatnonzero(~crossed)
                # Batch norm couples the rows: dropping some changes the
                # batch statistics, so only a smaller step can help.
                if self.batch_norm or len(keep) < len(crossed) // 2:
                    continue
                (d1, d2, d4), _ = self._differences(index, step, keep)
                self.net.set_params(self.params)
                exact = backprop_gradient(self.net, self.x[keep], self.targets[keep])[index]
            coarse, fine = (4.0 * d2 - d1) / 3.0, (4.0 * d4 - d2) / 3.0
            spread = abs(coarse - fine)
            # Estimates that disagree mean a kink the relu check cannot see.
            if spread <= 1e-2 * max(abs(fine), scale):
                if best is None or spread < best[0]:
                    best = (spread, exact, (16.0 * fine - coarse) / 15.0)
                if attempt % 2:
                    break
        return None if best is None else best[1:]

"""Full-batch training with L-BFGS through scipy.optimize.

``model.fit(X, y, optimizer="lbfgs")`` or ``optimizer=bprop.LBFGS(...)``
lands here. scipy drives the iterations; each evaluation sets the
network's parameters from scipy's float64 vector, runs the C core's
forward and backward pass over the whole training set
(``bp_net_gradient``) and hands back the loss and the gradient.

Design decisions:
- scipy is optional: it is imported on first use, with an ImportError
  that says how to install it.
- The loss is the mean over the rows (plus the optional L2 penalty on
  the weights); the C core computes it in float32 with double sums, so
  scipy sees a function that is exact only to float32 precision. A line
  search that cannot improve it further ends the run normally.
- The parameters stay under the model's write lock for the whole run:
  other threads' predictions wait, as they wait for an epoch of SGD.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from . import _core
from .callbacks import History
from .optimizers import LBFGS

DivergenceError = _core.DivergenceError

_log = logging.getLogger("bprop")


def _minimize() -> Any:
    """``scipy.optimize.minimize``; ImportError with the fix if missing."""
    try:
        from scipy.optimize import minimize
    except ImportError as exc:
        raise ImportError(
            "optimizer 'lbfgs' needs scipy: pip install scipy (or pip install 'bprop[lbfgs]'); "
            "the other optimizers (sgd, adam, adamw, rmsprop, adagrad) need nothing more"
        ) from exc
    return minimize


def _weight_mask(net: Any) -> np.ndarray:
    """True at the weights' entries of the parameter slab, False at biases."""
    mask = np.zeros(net.n_params, dtype=bool)
    for (w_off, n_w, _, _), (kind, *_options) in zip(net.spans(), net.layer_kinds()):
        # A normalisation's gamma is exempt from weight decay, as biases are.
        if kind == 0:
            mask[w_off : w_off + n_w] = True
    return mask


class _Objective:
    """The loss and gradient of the whole training set at a point."""

    def __init__(self, net: Any, x: np.ndarray, y: Any, labels: Any, weight_decay: float) -> None:
        self.net, self.x, self.y, self.labels = net, x, y, labels
        self.weight_decay = weight_decay
        self.mask = _weight_mask(net) if weight_decay > 0 else None
        self.params = np.empty(net.n_params, net.dtype)
        self.grads = np.empty(net.n_params, net.dtype)
        self.last_x: np.ndarray | None = None
        self.last_f = np.inf

    def __call__(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        self.params[:] = theta
        self.net.set_params(self.params)
        try:
            loss = self.net.gradient(self.x, self.y, self.labels)
        except DivergenceError:
            # An infinite value makes scipy's line search step back.
            return np.inf, np.zeros_like(theta)
        self.net.get_grads(self.grads)
        grad = self.grads.astype(np.float64)
        if self.mask is not None:
            w = theta[self.mask]
            loss += 0.5 * self.weight_decay * float(np.dot(w, w))
            grad[self.mask] += self.weight_decay * w
        self.last_x, self.last_f = theta.copy(), float(loss)
        return float(loss), grad

    def value_at(self, theta: np.ndarray) -> float:
        """The loss at `theta`, leaving the network's parameters there."""
        if self.last_x is None or not np.array_equal(theta, self.last_x):
            self(theta)
        return self.last_f


def fit(model: Any, x: np.ndarray, targets: np.ndarray, x_val: np.ndarray | None,
        y_val: np.ndarray | None, opt: LBFGS, epochs: int, verbose: bool) -> History:
    """The iterations of ``Sequential.fit`` with L-BFGS; one History entry
    ("loss", and the validation figures) per iteration."""
    minimize = _minimize()
    history = History()
    max_iter = opt.max_iter if opt.max_iter is not None else epochs
    if max_iter == 0:
        return history

    net = model._net
    y_arg, label_arg = model._target_args(targets)
    objective = _Objective(net, x, y_arg, label_arg, opt.weight_decay)
    start = np.empty(net.n_params, net.dtype)
    bar = tqdm(total=max_iter, disable=not verbose, unit="iter", desc="train (L-BFGS)")

    def record(theta: np.ndarray) -> None:
        values = {"loss": objective.value_at(theta)}
        if x_val is not None:
            values.update(model._evaluate_arrays(x_val, y_val, prefix="val_"))
        history.record(len(history), values)
        bar.set_postfix({k: f"{v:.4g}" for k, v in values.items()}, refresh=False)
        bar.update(1)

    try:
        with model._params_lock.write():
            net.get_params(start)
            result = minimize(
                objective, start.astype(np.float64), jac=True, method="L-BFGS-B",
                callback=record,
                options={"maxiter": max_iter, "maxfun": opt.max_fun, "maxcor": opt.history,
                         "gtol": opt.tol, "ftol": opt.ftol},
            )
            best = result.x.astype(net.dtype)
            if not np.isfinite(best).all() or not np.isfinite(result.fun):
                net.set_params(start)
                raise DivergenceError(
                    "L-BFGS ended at NaN or infinite parameters; the weights were restored. "
                    "Try scaling the inputs or adding weight_decay."
                )
            net.set_params(best)
    finally:
        bar.close()
    _log.info("L-BFGS stopped after %d iterations: %s", result.nit, result.message)
    model._epochs_done += int(result.nit)
    model._steps_done += int(result.nit)
    return history

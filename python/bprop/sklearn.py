"""scikit-learn compatible estimators: MLPClassifier and MLPRegressor.

They take the constructor parameters of ``sklearn.neural_network``'s
classes with the same meanings and defaults, and set the same fitted
attributes, so that either can replace its scikit-learn namesake; the
network is a ``bprop.Sequential`` trained by the C core.

Design decisions:
- scikit-learn is optional. When it imports, the estimators inherit its
  BaseEstimator and mixins and validate X with its ``validate_data``
  (feature names, messages); without it, small local bases provide
  get_params, set_params and score.
- ``alpha`` is scikit-learn's L2 penalty, ``alpha / 2 * ||W||^2`` divided
  by the rows of the batch. It becomes the optimizer's coupled L2 term
  (SGD's ``l2``, Adam's ``weight_decay``): ``alpha / batch_size`` times
  the ratio between scikit-learn's loss gradient and the core's (the
  core's mse averages over outputs and has no 1/2; its binary
  cross-entropy averages over outputs). For SGD the learning rate is
  scaled by the same ratio, so every update equals scikit-learn's; Adam
  is invariant to it (its epsilon is scaled too). L-BFGS takes
  ``alpha / n_samples``, as one batch.
- Training runs one C call per epoch; the convergence rule (``tol``,
  ``n_iter_no_change``, the "adaptive" rate divided by 5, early stopping
  on the validation score) is applied in Python between epochs.
- The optimizer state (momentum, Adam moments, update counter) lives in
  the network, so ``warm_start`` and ``partial_fit`` continue it.
- Initial weights are Glorot uniform, as in scikit-learn.

NOTE: changing ``coefs_`` or ``intercepts_`` does not change the
predictions; the network keeps its own parameters (``set_weights`` on
``model_`` changes them).
"""

from __future__ import annotations

import copy
import inspect
import math
import warnings
from typing import Any

import numpy as np

from . import losses, optimizers, schedules
from ._validation import as_dtype
from .callbacks import Callback
from .layers import Dense
from .model import Sequential

try:
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.utils.validation import check_array, check_is_fitted, validate_data

    HAS_SKLEARN = True
except ImportError:  # pragma: no cover - exercised without scikit-learn
    HAS_SKLEARN = False

    class ConvergenceWarning(UserWarning):  # type: ignore[no-redef]
        """Training stopped at max_iter before the convergence rule held."""

    class BaseEstimator:  # type: ignore[no-redef]
        """get_params and set_params from the constructor's signature."""

        @classmethod
        def _get_param_names(cls) -> list[str]:
            signature = inspect.signature(cls.__init__)
            return sorted(p for p in signature.parameters if p != "self")

        def get_params(self, deep: bool = True) -> dict[str, Any]:
            return {name: getattr(self, name) for name in self._get_param_names()}

        def set_params(self, **params: Any) -> BaseEstimator:
            valid = self._get_param_names()
            for name, value in params.items():
                if name not in valid:
                    raise ValueError(
                        f"invalid parameter {name!r} for {type(self).__name__}; "
                        f"valid parameters are {', '.join(valid)}"
                    )
                setattr(self, name, value)
            return self

        def __repr__(self) -> str:
            return f"{type(self).__name__}()"

    class ClassifierMixin:  # type: ignore[no-redef]
        """score: the accuracy."""

        _estimator_type = "classifier"

        def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
            right = np.asarray(self.predict(X)) == np.asarray(y).reshape(len(X), -1).squeeze()
            if right.ndim == 2:
                right = right.all(axis=1)
            return float(np.average(right, weights=sample_weight))

    class RegressorMixin:  # type: ignore[no-redef]
        """score: the coefficient of determination R^2, averaged over outputs."""

        _estimator_type = "regressor"

        def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
            y = np.asarray(y, dtype=np.float64).reshape(len(X), -1)
            pred = np.asarray(self.predict(X), dtype=np.float64).reshape(len(X), -1)
            w = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, float)
            mean = np.average(y, axis=0, weights=w)
            total = (w[:, None] * (y - mean) ** 2).sum(axis=0)
            residual = (w[:, None] * (y - pred) ** 2).sum(axis=0)
            r2 = np.where(total > 0, 1 - residual / np.where(total > 0, total, 1), 1.0)
            return float(r2.mean())

    def check_is_fitted(estimator: Any) -> None:  # type: ignore[misc]
        if not hasattr(estimator, "model_"):
            raise AttributeError(
                f"this {type(estimator).__name__} is not fitted yet: call fit first"
            )


__all__ = ["MLPClassifier", "MLPRegressor", "HAS_SKLEARN"]

#: scikit-learn's activation names and bprop's.
_ACTIVATIONS = {"identity": "identity", "logistic": "sigmoid", "tanh": "tanh", "relu": "relu"}

# Below this the "adaptive" rate stops shrinking and training ends.
_MIN_ADAPTIVE_LR = 1e-6


def _seed(random_state: Any) -> int:
    """An int seed from None, an int or a numpy random generator."""
    if random_state is None:
        return int(np.random.SeedSequence().generate_state(1)[0] >> 1)
    if isinstance(random_state, (int, np.integer)) and not isinstance(random_state, bool):
        return int(random_state)
    if isinstance(random_state, np.random.RandomState):
        return int(random_state.randint(np.iinfo(np.int32).max))
    if isinstance(random_state, np.random.Generator):
        return int(random_state.integers(np.iinfo(np.int32).max))
    raise ValueError(f"random_state must be None, an int or a RandomState, got {random_state!r}")


def _check_X(est: Any, X: Any, reset: bool) -> np.ndarray:
    """X as a float array of finite values; sets or checks n_features_in_."""
    if HAS_SKLEARN:
        x = validate_data(est, X, reset=reset, accept_sparse=True,
                          dtype=(np.float64, np.float32))
    else:
        x = np.asarray(X, dtype=np.float64)
        if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
            raise ValueError(f"X must be a non-empty 2-D array, got shape {x.shape}")
        if not np.isfinite(x).all():
            raise ValueError("Input X contains NaN or infinity")
        if reset:
            est.n_features_in_ = x.shape[1]
            names = getattr(X, "columns", None)
            if names is not None and all(isinstance(n, str) for n in names):
                est.feature_names_in_ = np.asarray(names, dtype=object)
        elif x.shape[1] != est.n_features_in_:
            raise ValueError(
                f"X has {x.shape[1]} features, but {type(est).__name__} is expecting "
                f"{est.n_features_in_} features as input"
            )
    if hasattr(x, "toarray"):
        x = x.toarray()
    return np.ascontiguousarray(x, dtype=as_dtype(est.dtype))


def _check_weights(weights: np.ndarray | None) -> np.ndarray | None:
    if weights is None:
        return None
    if not np.isfinite(weights).all() or weights.min() < 0:
        raise ValueError("sample_weight must hold finite values >= 0")
    if weights.sum() <= 0:
        raise ValueError("sample_weight has only weights equal to zero; give some rows a "
                         "positive weight")
    return weights


def _check_y(y: Any, rows: int, numeric: bool, owner: str) -> np.ndarray:
    if y is None:
        raise ValueError(f"{owner} requires y to be passed, but the target y is None")
    if HAS_SKLEARN:
        y = check_array(y, ensure_2d=False, dtype="numeric" if numeric else None,
                        input_name="y")
    else:
        y = np.asarray(y)
        if numeric:
            y = y.astype(np.float64)
            if not np.isfinite(y).all():
                raise ValueError("Input y contains NaN or infinity")
    if y.ndim not in (1, 2):
        raise ValueError(f"y must be 1-D or 2-D, got shape {y.shape}")
    if len(y) != rows:
        raise ValueError(f"X has {rows} rows but y has {len(y)}")
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    return y


class _BaseMLP(BaseEstimator):
    """What the classifier and the regressor share: the network, the
    optimizer and the training loop."""

    _loss_scale = 1.0

    def __init__(
        self, hidden_layer_sizes: Any = (100,), activation: Any = "relu", *,
        solver: Any = "adam", alpha: float = 0.0001, batch_size: Any = "auto",
        learning_rate: Any = "constant", learning_rate_init: float = 0.001,
        power_t: float = 0.5, max_iter: int = 200, shuffle: bool = True,
        random_state: Any = None, tol: float = 1e-4, verbose: bool = False,
        warm_start: bool = False, momentum: float = 0.9, nesterovs_momentum: bool = True,
        early_stopping: bool = False, validation_fraction: float = 0.1, beta_1: float = 0.9,
        beta_2: float = 0.999, epsilon: float = 1e-8, n_iter_no_change: int = 10,
        max_fun: int = 15000, class_weight: Any = None, n_threads: Any = None,
        dtype: Any = "float32",
    ) -> None:
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.max_fun = max_fun
        self.class_weight = class_weight
        self.n_threads = n_threads
        self.dtype = dtype

    # ------------------------------------------------------------------
    # Parameters
    # ------------------------------------------------------------------

    def _hidden(self) -> list[int]:
        sizes = self.hidden_layer_sizes
        sizes = [sizes] if np.isscalar(sizes) else list(sizes)
        for size in sizes:
            if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
                raise ValueError(f"hidden_layer_sizes must hold ints >= 1, got {sizes!r}")
        return [int(s) for s in sizes]

    def _hidden_activations(self, n_hidden: int) -> list[str]:
        names = self.activation
        names = [names] * n_hidden if isinstance(names, str) else list(names)
        if len(names) != n_hidden:
            raise ValueError(
                f"activation has {len(names)} names for {n_hidden} hidden layers; give one "
                "name, or one per hidden layer"
            )
        return [_ACTIVATIONS.get(name, name) for name in names]

    def _check_params(self) -> None:
        as_dtype(self.dtype)
        if not (isinstance(self.max_iter, (int, np.integer)) and self.max_iter >= 1):
            raise ValueError(f"max_iter must be an int >= 1, got {self.max_iter!r}")
        if not (isinstance(self.n_iter_no_change, (int, np.integer))
                and self.n_iter_no_change >= 1):
            raise ValueError(
                f"n_iter_no_change must be an int >= 1, got {self.n_iter_no_change!r}"
            )
        for name in ("alpha", "tol"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and value >= 0):
                raise ValueError(f"{name} must be a number >= 0, got {value!r}")
        if not (isinstance(self.learning_rate_init, (int, float))
                and self.learning_rate_init > 0):
            raise ValueError(
                f"learning_rate_init must be > 0, got {self.learning_rate_init!r}"
            )
        if not 0 < self.validation_fraction < 1:
            raise ValueError(
                f"validation_fraction must be in (0, 1), got {self.validation_fraction!r}"
            )
        if self.learning_rate not in ("constant", "invscaling", "adaptive") and not (
            isinstance(self.learning_rate, schedules.Schedule)
        ):
            raise ValueError(
                "learning_rate must be 'constant', 'invscaling', 'adaptive' or a "
                f"bprop.schedules object, got {self.learning_rate!r}"
            )

    def _batch(self, rows: int) -> int:
        if self.batch_size == "auto":
            return min(200, rows)
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size,
                                                                (int, np.integer)):
            raise ValueError(f"batch_size must be 'auto' or an int >= 1, got "
                             f"{self.batch_size!r}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        return int(min(self.batch_size, rows))

    def _optimizer(self, rows: int) -> optimizers.Optimizer:
        """The core optimizer for the solver, with alpha mapped onto its
        L2 term (see the module's documentation)."""
        solver, scale = self.solver, self._scale()
        if isinstance(solver, optimizers.Optimizer):
            return copy.deepcopy(solver)
        if solver == "lbfgs":
            return optimizers.LBFGS(max_iter=int(self.max_iter), tol=self.tol, ftol=0.0,
                                    max_fun=self.max_fun,
                                    weight_decay=scale * self.alpha / rows)
        batch = self._batch(rows)
        decay = scale * self.alpha / batch
        schedule = None
        if isinstance(self.learning_rate, schedules.Schedule):
            schedule = copy.deepcopy(self.learning_rate)
        elif self.learning_rate == "invscaling" and solver == "sgd":
            # scikit-learn counts samples where the core counts updates.
            schedule = schedules.InverseScaling(power=self.power_t, gamma=float(batch))
        lr = float(self.learning_rate_init)
        if solver == "sgd":
            return optimizers.SGD(lr / scale, momentum=self.momentum,
                                  nesterov=bool(self.nesterovs_momentum and self.momentum > 0),
                                  l2=decay, schedule=schedule)
        if solver == "adam":
            return optimizers.Adam(lr, self.beta_1, self.beta_2, self.epsilon * scale, decay,
                                   schedule=schedule)
        if solver in ("adamw", "rmsprop", "adagrad"):
            return optimizers.get(solver).__class__(lr, weight_decay=decay, schedule=schedule)
        raise ValueError(
            f"solver must be 'lbfgs', 'sgd' or 'adam' (or 'adamw', 'rmsprop', 'adagrad', or "
            f"a bprop optimizer object), got {solver!r}"
        )

    # ------------------------------------------------------------------
    # Training
    # ------------------------------------------------------------------

    def _scale(self) -> float:
        """The core's loss gradient divided by scikit-learn's."""
        return self._loss_scale

    def _build(self, n_inputs: int, n_outputs: int, out: str, seed: int) -> Sequential:
        hidden = self._hidden()
        names = self._hidden_activations(len(hidden))
        layers = [Dense(units, activation=name) for units, name in zip(hidden, names)]
        layers.append(Dense(n_outputs, activation=out))
        return Sequential(
            layers, n_inputs=n_inputs, seed=seed, init="glorot", dtype=as_dtype(self.dtype)
        )

    def _penalty(self, rows: int) -> float:
        """scikit-learn's L2 term of the loss, ``alpha / 2 * ||W||^2 / rows``."""
        weights = self.model_.get_weights()
        squares = sum(float(np.dot(w.ravel(), w.ravel())) for w in weights if w.ndim == 2)
        return 0.5 * self.alpha * squares / rows

    def _fit(self, x: np.ndarray, targets: np.ndarray, weights: np.ndarray | None,
             incremental: bool, stratify: np.ndarray | None) -> None:
        self._check_params()
        if weights is not None:
            # A weighted mean of the rows' losses, as in scikit-learn.
            weights = (weights * (len(weights) / weights.sum())).astype(as_dtype(self.dtype))
        fresh = not (incremental or self.warm_start) or not hasattr(self, "model_")
        if fresh:
            self._seed_ = _seed(self.random_state)
            self.model_ = self._build(x.shape[1], self.n_outputs_, self._out_name(),
                                      self._seed_)
            self.n_iter_, self.t_ = 0, 0
            self.loss_curve_, self.validation_loss_curve_ = [], []
            self.best_loss_ = np.inf
            self.validation_scores_ = [] if self.early_stopping else None
            self.best_validation_score_ = -np.inf if self.early_stopping else None
            self._no_improve = 0
        self._opt = self._optimizer(len(x))
        threads = _Threads(self.n_threads)
        with threads:
            if isinstance(self._opt, optimizers.LBFGS):
                if incremental:
                    raise AttributeError("partial_fit is not available for solver 'lbfgs'")
                self._fit_lbfgs(x, targets, weights)
            else:
                self._fit_epochs(x, targets, weights, incremental, stratify)
        self.n_layers_ = len(self._hidden()) + 2
        self.out_activation_ = self._out_activation()
        params = self.model_.get_weights()
        self.coefs_ = [p.astype(np.float64) for p in params[0::2]]
        self.intercepts_ = [p.astype(np.float64) for p in params[1::2]]

    def _fit_lbfgs(self, x: np.ndarray, targets: np.ndarray, weights: Any) -> None:
        if weights is not None:
            raise ValueError(
                "sample_weight and class_weight are not available with solver='lbfgs'; "
                "use 'adam' or 'sgd'"
            )
        history = self.model_.fit(x, targets, loss=self._loss(), optimizer=self._opt,
                                  epochs=int(self.max_iter), seed=self._seed_)
        curve = [self._sk_loss(v) for v in history.history.get("loss", [])]
        self.loss_curve_ = curve
        self.n_iter_ = len(curve)
        self.t_ = self.n_iter_ * len(x)
        self.loss_ = self._sk_loss(self.model_.evaluate(x, targets)["loss"])
        self.loss_ += self._penalty(len(x))
        if self.n_iter_ >= self.max_iter:
            warnings.warn(
                f"L-BFGS reached max_iter={self.max_iter} before converging; raise max_iter "
                "or scale the inputs", ConvergenceWarning, stacklevel=3,
            )

    def _split(self, x: np.ndarray, targets: np.ndarray, weights: Any,
               stratify: np.ndarray | None) -> tuple:
        """Training and validation rows for early stopping, drawn from the seed."""
        rng = np.random.default_rng(self._seed_)
        rows = len(x)
        if stratify is not None:
            val = []
            for label in np.unique(stratify):
                members = rng.permutation(np.flatnonzero(stratify == label))
                val.extend(members[: int(round(len(members) * self.validation_fraction))])
            val = np.sort(np.asarray(val, dtype=np.int64))
        else:
            val = np.sort(rng.permutation(rows)[: int(math.ceil(rows * self.validation_fraction))])
        if len(val) == 0 or len(val) == rows:
            raise ValueError(
                f"validation_fraction={self.validation_fraction} leaves no training or no "
                f"validation rows out of {rows}; give more rows or turn early_stopping off"
            )
        train = np.setdiff1d(np.arange(rows), val)
        w = None if weights is None else weights[train]
        return x[train], targets[train], w, x[val], targets[val]

    def _fit_epochs(self, x: np.ndarray, targets: np.ndarray, weights: Any,
                    incremental: bool, stratify: np.ndarray | None) -> None:
        early = self.early_stopping and not incremental
        validation = None
        if early:
            x, targets, weights, x_val, y_val = self._split(x, targets, weights, stratify)
            validation = (x_val, y_val)
            if self.validation_scores_ is None:
                self.validation_scores_, self.best_validation_score_ = [], -np.inf
        batch = self._batch(len(x))
        watch = _Convergence(self, len(x), math.ceil(len(x) / batch), validation, incremental)
        self.model_.fit(
            x, targets, loss=self._loss(), optimizer=self._opt,
            epochs=1 if incremental else int(self.max_iter), batch_size=batch,
            shuffle=bool(self.shuffle), seed=self._seed_, sample_weight=weights,
            validation_data=validation, callbacks=[watch],
        )
        if early:
            self.best_loss_ = None
            if watch.best_params is not None:
                self.model_.set_weights(watch.best_params)
        if not watch.converged and not incremental:
            warnings.warn(
                f"Stochastic Optimizer: Maximum iterations ({self.max_iter}) reached and the "
                "optimization hasn't converged yet.", ConvergenceWarning, stacklevel=4,
            )

    def _end_epoch(self, watch: _Convergence, values: dict[str, float]) -> bool:
        """Record an epoch's figures; True when the convergence rule ends training."""
        self.n_iter_ += 1
        self.t_ += watch.rows
        loss = self._sk_loss(values["loss"]) + self._penalty(watch.rows) * watch.batches
        self.loss_curve_.append(loss)
        self.loss_ = loss
        if self.verbose:
            print(f"Iteration {self.n_iter_}, loss = {loss:.8f}")
        if watch.incremental:
            self.best_loss_ = min(self.best_loss_, loss)
            return False
        if watch.validation is not None:
            score = self._score_arrays(*watch.validation)
            self.validation_loss_curve_.append(self._sk_loss(values["val_loss"]))
            self.validation_scores_.append(score)
            improved = score >= self.best_validation_score_ + self.tol
            if score > self.best_validation_score_:
                self.best_validation_score_ = score
                watch.best_params = self.model_.get_weights()
        else:
            improved = loss <= self.best_loss_ - self.tol
            self.best_loss_ = min(self.best_loss_, loss)
        self._no_improve = 0 if improved else self._no_improve + 1
        if self._no_improve <= self.n_iter_no_change:
            return False
        if (self.learning_rate == "adaptive" and isinstance(self._opt, optimizers.SGD)
                and self._opt.lr * self._scale() > _MIN_ADAPTIVE_LR):
            # The core reads the optimizer's settings again at every epoch.
            self._opt.lr /= 5.0
            self._no_improve = 0
            return False
        return True

    # ------------------------------------------------------------------
    # Prediction
    # ------------------------------------------------------------------

    def _outputs(self, X: Any) -> np.ndarray:
        check_is_fitted(self)
        x = np.ascontiguousarray(_check_X(self, X, reset=False), self.model_.dtype)
        with _Threads(self.n_threads):
            return self.model_._outputs(x).astype(np.float64)

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        tags.target_tags.multi_output = True
        return tags


class _Convergence(Callback):
    """Applies the estimator's convergence rule after every epoch."""

    def __init__(self, estimator: _BaseMLP, rows: int, batches: int, validation: Any,
                 incremental: bool) -> None:
        self.estimator, self.rows, self.batches = estimator, rows, batches
        self.validation, self.incremental = validation, incremental
        self.best_params: list[np.ndarray] | None = None
        self.converged = False

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if self.estimator._end_epoch(self, logs or {}):
            self.converged = True
            self.model.stop_training = True


class _Threads:
    """Use `n` kernel threads inside a with block (None: leave as is)."""

    def __init__(self, n: Any) -> None:
        self.n, self.saved = n, None

    def __enter__(self) -> None:
        from . import _core

        if self.n is not None:
            self.saved = _core.get_num_threads()
            _core.set_num_threads(int(self.n))

    def __exit__(self, *exc: Any) -> None:
        from . import _core

        if self.saved is not None:
            _core.set_num_threads(self.saved)


class MLPClassifier(ClassifierMixin, _BaseMLP):
    """A multi-layer perceptron classifier, a drop-in replacement for
    ``sklearn.neural_network.MLPClassifier``.

    Parameters are scikit-learn's, with the same defaults and meanings;
    in addition:

    activation : str or list of str
        One name for every hidden layer, or one per hidden layer; any
        bprop activation name is accepted besides scikit-learn's.
    solver : str or bprop optimizer
        "lbfgs", "sgd", "adam", or "adamw", "rmsprop", "adagrad", or a
        ``bprop.optimizers`` object used as given (alpha then ignored).
    learning_rate : str or bprop.schedules.Schedule
        Any schedule of the core besides scikit-learn's three names.
    class_weight : dict, "balanced" or None
        Multiplies each row's weight by its class's.
    n_threads : int or None
        Kernel threads during fit and predict (None: bprop's setting).
    dtype : "float32" or "float64"
        The dtype of the network (see ``bprop.Sequential``); X is
        converted to it.

    Fitted attributes are scikit-learn's, plus ``model_`` (the
    ``bprop.Sequential``) and ``validation_loss_curve_`` (with
    early_stopping). Labels may be of any type; a 2-D 0/1 y is a
    multi-label target. Dropout is not offered: the core has none.
    """

    def _loss(self) -> losses.Loss:
        return losses.CrossEntropy() if self._kind == "multiclass" else (
            losses.BinaryCrossEntropy())

    def _scale(self) -> float:
        return 1.0 / self.n_outputs_ if self._kind == "multilabel" else 1.0

    def _sk_loss(self, value: float) -> float:
        return value * self.n_outputs_ if self._kind == "multilabel" else value

    def _out_name(self) -> str:
        return "softmax" if self._kind == "multiclass" else "sigmoid"

    def _out_activation(self) -> str:
        return "softmax" if self._kind == "multiclass" else "logistic"

    def _encode(self, y: np.ndarray, classes: Any, first: bool) -> tuple:
        """(targets for the core, the 1-D class indices or None)."""
        if y.ndim == 2:
            values = np.unique(y)
            if not np.isin(values, [0, 1]).all():
                raise ValueError(
                    "a 2-D y must be a multi-label indicator matrix of 0 and 1; "
                    "multiclass-multioutput targets are not supported"
                )
            if first:
                self._kind, self.classes_ = "multilabel", np.arange(y.shape[1])
                self.n_outputs_ = y.shape[1]
            elif self._kind != "multilabel" or y.shape[1] != self.n_outputs_:
                raise ValueError("y does not match the targets of the earlier fit")
            return y.astype(np.float32), None
        if y.dtype.kind == "f" and np.any(y != np.round(y)):
            raise ValueError(
                "Unknown label type: continuous. MLPClassifier needs class labels; use "
                "MLPRegressor for continuous targets"
            )
        if first:
            found = np.unique(y) if classes is None else np.unique(np.asarray(classes))
            if len(found) < 2:
                raise ValueError(
                    f"y has one class ({found[0]!r}); a classifier needs at least two classes"
                )
            self.classes_ = found
            self._kind = "binary" if len(found) == 2 else "multiclass"
            self.n_outputs_ = 1 if self._kind == "binary" else len(found)
        elif self._kind == "multilabel":
            raise ValueError("y is 1-D but the earlier fit had a multi-label target")
        index = np.searchsorted(self.classes_, y)
        index = np.clip(index, 0, len(self.classes_) - 1)
        unseen = self.classes_[index] != y
        if np.any(unseen):
            raise ValueError(
                f"y holds labels not in classes_: {np.unique(y[unseen])[:5]!r}; "
                "pass every class to the first partial_fit as classes="
            )
        if self._kind == "binary":
            return index.astype(np.float32), index
        return index.astype(np.int32), index

    def _row_weights(self, index: Any, sample_weight: Any, rows: int) -> Any:
        weights = None
        if sample_weight is not None:
            weights = np.asarray(sample_weight, dtype=np.float64).reshape(-1)
            if len(weights) != rows:
                raise ValueError(f"sample_weight has {len(weights)} values but X has {rows} rows")
        if self.class_weight is not None and index is not None:
            k = len(self.classes_)
            if self.class_weight == "balanced":
                counts = np.bincount(index, minlength=k).astype(np.float64)
                per_class = np.where(counts > 0, rows / (k * np.maximum(counts, 1)), 1.0)
            else:
                per_class = np.array([self.class_weight.get(c, 1.0) for c in self.classes_])
            weights = per_class[index] * (1.0 if weights is None else weights)
        return _check_weights(weights)

    def _fit_xy(self, X: Any, y: Any, sample_weight: Any, classes: Any,
                incremental: bool) -> MLPClassifier:
        first = not (incremental or self.warm_start) or not hasattr(self, "model_")
        x = _check_X(self, X, reset=first)
        y = _check_y(y, len(x), False, type(self).__name__)
        targets, index = self._encode(y, classes, first)
        weights = self._row_weights(index, sample_weight, len(x))
        self._fit(x, targets, weights, incremental, index)
        return self

    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> MLPClassifier:
        """Train on X (n, features) and labels y (n,) or a 0/1 matrix (n, labels)."""
        return self._fit_xy(X, y, sample_weight, None, incremental=False)

    def partial_fit(self, X: Any, y: Any, classes: Any = None,
                    sample_weight: Any = None) -> MLPClassifier:
        """One epoch over (X, y), continuing the optimizer's state;
        the first call needs ``classes`` (every label)."""
        if self.solver == "lbfgs":
            raise AttributeError("partial_fit is not available for solver 'lbfgs'")
        if not hasattr(self, "model_") and classes is None and np.ndim(y) == 1:
            raise ValueError("the first partial_fit needs classes= (every label)")
        return self._fit_xy(X, y, sample_weight, classes, incremental=True)

    def _score_arrays(self, x: np.ndarray, targets: np.ndarray) -> float:
        out = self.model_._outputs(x)
        if self._kind == "multiclass":
            return float(np.mean(out.argmax(axis=1) == targets))
        right = (out > 0.5) == (targets.reshape(out.shape) > 0.5)
        return float(np.mean(right.all(axis=1)))

    def predict_proba(self, X: Any) -> np.ndarray:
        """Probabilities, one column per entry of classes_, rows summing to
        1 (independent label probabilities for a multi-label target)."""
        out = self._outputs(X)
        if self._kind == "binary":
            return np.hstack([1.0 - out, out])
        if self._kind == "multiclass":
            return out / out.sum(axis=1, keepdims=True)
        return out

    def predict_log_proba(self, X: Any) -> np.ndarray:
        """The log of predict_proba."""
        with np.errstate(divide="ignore"):
            return np.log(self.predict_proba(X))

    def predict(self, X: Any) -> np.ndarray:
        """Labels from classes_, or a 0/1 matrix for a multi-label target."""
        proba = self.predict_proba(X)
        if self._kind == "multilabel":
            return (proba > 0.5).astype(np.int64)
        return self.classes_[proba.argmax(axis=1)]

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags


class MLPRegressor(RegressorMixin, _BaseMLP):
    """A multi-layer perceptron regressor, a drop-in replacement for
    ``sklearn.neural_network.MLPRegressor``.

    Parameters are scikit-learn's, with ``loss`` "squared_error" or
    "poisson" (any bprop loss name is accepted too, e.g. "huber"), and
    the extensions of ``MLPClassifier`` (activation per layer, any solver
    and schedule of the core, n_threads); class_weight does not apply.
    """

    def __init__(
        self, loss: str = "squared_error", hidden_layer_sizes: Any = (100,),
        activation: Any = "relu", *, solver: Any = "adam", alpha: float = 0.0001,
        batch_size: Any = "auto", learning_rate: Any = "constant",
        learning_rate_init: float = 0.001, power_t: float = 0.5, max_iter: int = 200,
        shuffle: bool = True, random_state: Any = None, tol: float = 1e-4,
        verbose: bool = False, warm_start: bool = False, momentum: float = 0.9,
        nesterovs_momentum: bool = True, early_stopping: bool = False,
        validation_fraction: float = 0.1, beta_1: float = 0.9, beta_2: float = 0.999,
        epsilon: float = 1e-8, n_iter_no_change: int = 10, max_fun: int = 15000,
        n_threads: Any = None, dtype: Any = "float32",
    ) -> None:
        super().__init__(
            hidden_layer_sizes, activation, solver=solver, alpha=alpha,
            batch_size=batch_size, learning_rate=learning_rate,
            learning_rate_init=learning_rate_init, power_t=power_t, max_iter=max_iter,
            shuffle=shuffle, random_state=random_state, tol=tol, verbose=verbose,
            warm_start=warm_start, momentum=momentum, nesterovs_momentum=nesterovs_momentum,
            early_stopping=early_stopping, validation_fraction=validation_fraction,
            beta_1=beta_1, beta_2=beta_2, epsilon=epsilon, n_iter_no_change=n_iter_no_change,
            max_fun=max_fun, n_threads=n_threads, dtype=dtype,
        )
        del self.class_weight
        self.loss = loss

    def _loss(self) -> losses.Loss:
        if self.loss == "squared_error":
            return losses.MeanSquaredError()
        return losses.get(self.loss)

    def _scale(self) -> float:
        # The core's mse is mean((o - t)^2) over outputs; scikit-learn's
        # gradient is that of sum((o - t)^2) / 2 per row.
        return 2.0 / self.n_outputs_ if self.loss == "squared_error" else 1.0

    def _sk_loss(self, value: float) -> float:
        return value / 2.0 if self.loss == "squared_error" else value

    def _out_name(self) -> str:
        return "identity"

    def _out_activation(self) -> str:
        return "identity" if self.loss != "poisson" else "exp"

    def _fit_xy(self, X: Any, y: Any, sample_weight: Any, incremental: bool) -> MLPRegressor:
        first = not (incremental or self.warm_start) or not hasattr(self, "model_")
        x = _check_X(self, X, reset=first)
        y = _check_y(y, len(x), True, type(self).__name__)
        if first:
            self._ndim = y.ndim
            self.n_outputs_ = 1 if y.ndim == 1 else y.shape[1]
        elif (1 if y.ndim == 1 else y.shape[1]) != self.n_outputs_:
            raise ValueError(f"y has a different number of outputs than {self.n_outputs_}")
        weights = None
        if sample_weight is not None:
            weights = np.asarray(sample_weight, dtype=np.float64).reshape(-1)
            if len(weights) != len(x):
                raise ValueError(
                    f"sample_weight has {len(weights)} values but X has {len(x)} rows"
                )
            _check_weights(weights)
        targets = y.reshape(len(x), -1).astype(x.dtype)
        self._fit(x, targets, weights, incremental, None)
        return self

    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> MLPRegressor:
        """Train on X (n, features) and targets y (n,) or (n, outputs)."""
        return self._fit_xy(X, y, sample_weight, incremental=False)

    def partial_fit(self, X: Any, y: Any, sample_weight: Any = None) -> MLPRegressor:
        """One epoch over (X, y), continuing the optimizer's state."""
        if self.solver == "lbfgs":
            raise AttributeError("partial_fit is not available for solver 'lbfgs'")
        return self._fit_xy(X, y, sample_weight, incremental=True)

    def _score_arrays(self, x: np.ndarray, targets: np.ndarray) -> float:
        pred = self.model_.predict(x).reshape(len(x), -1).astype(np.float64)
        truth = targets.reshape(len(x), -1).astype(np.float64)
        total = ((truth - truth.mean(axis=0)) ** 2).sum(axis=0)
        residual = ((truth - pred) ** 2).sum(axis=0)
        return float(np.mean(1 - residual / np.where(total > 0, total, 1)))

    def predict(self, X: Any) -> np.ndarray:
        """Predictions, shape (n,) for a 1-D y (or (n, 1)), else (n, outputs)."""
        out = self._outputs(X)
        if self.loss == "poisson":
            out = np.exp(out)
        return out[:, 0] if self._ndim == 1 else out

"""The Sequential model: build, train, predict, evaluate."""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from typing import Any, Callable

import numpy as np
from tqdm.auto import tqdm

from . import _core, _splits, initializers, lbfgs, losses, metrics, optimizers
from ._optim_run import OptimizerRun
from ._rwlock import ReadWriteLock
from ._validation import (
    as_dtype,
    as_labels,
    as_matrix,
    as_probabilities,
    as_targets,
    as_vector,
    check_positive_int,
    check_same_length,
)
from .callbacks import Callback, CallbackList, History
from .diagnostics import LayerProbe, first_bad_layer, first_bad_parameters, layer_name
from .distributed import as_plan
from .distributed import fit as distributed_fit
from .layers import BatchNorm, Dense, Dropout, Layer, LayerNorm
from .layers import from_config as layer_from_config
from .layers import widths as layer_widths
from .losses import Loss, LossLike
from .optimizers import SGD, CoreOptimizer, OptimizerLike

DivergenceError = _core.DivergenceError

INITS = _core.INITS

# Rows a prediction workspace holds; larger inputs are predicted in chunks.
_PREDICT_CHUNK = 1024


def _not_finite(exc: DivergenceError) -> ValueError:
    """The error for outputs that overflow outside training."""
    return ValueError(f"{exc}. Scale the inputs as for training, or retrain the model.")


def _random_seed() -> int:
    return int(np.random.SeedSequence().generate_state(1, np.uint64)[0] >> np.uint64(1))


class Sequential:
    """A stack of dense layers trained by backpropagation.

    Parameters
    ----------
    layers : sequence of Dense, Dropout, BatchNorm, LayerNorm
        The layers, from the first hidden layer to the output layer.
    n_inputs : int, optional
        Number of input features. Inferred from the data at the first
        ``fit`` when not given.
    seed : int, optional
        Seed of the weight initialisation; drawn at random when None.
    init : str or bprop.initializers.Initializer
        The weights' initialiser for layers without a ``kernel_init``:
        "auto" (He uniform for relu-like layers, Glorot uniform for the
        others), "he" (uniform), "he_normal", "glorot" (uniform),
        "glorot_normal", "lecun_uniform" or "lecun_normal". The same seed
        gives the same weights on every platform.
    dtype : "float32" or "float64"
        The type the network computes in and keeps its parameters and
        optimizer state in; inputs are converted to it. A float64 model
        starts from the weights of a float32 model with the same seed,
        widened, and its Dropout layers drop the same units.

    Examples
    --------
    >>> model = bprop.Sequential([bprop.Dense(64, activation="relu"), bprop.Dense(10)])
    >>> history = model.fit(X, y, loss="cross_entropy", epochs=20, seed=0)
    >>> model.predict(X[:5])
    """

    def __init__(
        self,
        layers: Sequence[Layer],
        n_inputs: int | None = None,
        seed: int | None = None,
        init: initializers.InitializerLike = "auto",
        dtype: Any = "float32",
    ) -> None:
        layers = list(layers)
        if not layers:
            raise ValueError("a Sequential model needs at least one layer")
        dtype = as_dtype(dtype)
        for i, layer in enumerate(layers):
            if not isinstance(layer, (Dense, Dropout, BatchNorm, LayerNorm)):
                raise ValueError(
                    f"layer {i} is {layer!r}, not a bprop.Dense, Dropout, BatchNorm or LayerNorm"
                )
            if layer.activation_fn.per_row and i != len(layers) - 1:
                raise ValueError(
                    f"layer {i}: {layer.activation} is only allowed on the output layer"
                )
        if not isinstance(init, initializers.Initializer) and init not in initializers.NAMES:
            raise ValueError(
                f"unknown init {init!r}; choose one of {', '.join(initializers.NAMES)}"
            )
        init = initializers.get(init).name
        if seed is not None:
            check_positive_int(seed, "seed", allow_zero=True)
        #: The dtype of the parameters, optimizer state and computations.
        self.dtype = dtype
        self.layers = layers
        self.init = init
        self.seed = seed
        self.loss: Loss | None = None
        self.optimizer: OptimizerLike | None = None
        self._net: Any = None
        #: The features of the data fit is checking before it builds.
        self._fit_inputs: int | None = None
        self._epochs_done = 0
        self._steps_done = 0
        self._class_labels: np.ndarray | None = None
        self._input_scaling: tuple[np.ndarray, np.ndarray] | None = None
        #: Text saved with the model: str keys to str values.
        self.metadata: dict[str, str] = {}
        self._lock = threading.RLock()
        # Shared by predictions and copies of the weights; exclusive for each
        # training epoch and anything that writes or replaces the parameters.
        self._params_lock = ReadWriteLock()
        self._local = threading.local()
        #: The History of the last fit, also after Ctrl-C ended it.
        self.history: History | None = None
        #: Set by a callback to end training after the current epoch or batch.
        self.stop_training = False
        if n_inputs is not None:
            self.build(n_inputs)

    # ------------------------------------------------------------------
    # Construction
    # ------------------------------------------------------------------

    def _default_loss(self) -> Loss:
        last = self.layers[-1].activation
        if last in ("softmax", "log_softmax"):
            return losses.CrossEntropy()
        if last == "sigmoid":
            return losses.BinaryCrossEntropy()
        return losses.MeanSquaredError()

    def build(self, n_inputs: int, loss: LossLike | None = None) -> Sequential:
        """Create the network's parameters for `n_inputs` features.

        Rebuilding with another loss keeps the current parameters.
        """
        n_inputs = check_positive_int(n_inputs, "n_inputs")
        loss_obj = losses.get(loss) if loss is not None else (self.loss or self._default_loss())
        net = _core.Net(
            n_inputs,
            [layer.units or 0 for layer in self.layers],
            [layer.activation_code for layer in self.layers],
            loss_obj.code,
            params=[layer.activation_param for layer in self.layers],
            no_bias=[not layer.use_bias for layer in self.layers],
            loss_options=loss_obj.options(layer_widths(self.layers, n_inputs)[-1]),
            kinds=[layer.kind_code for layer in self.layers],
            layer_options=[layer.options() for layer in self.layers],
            dtype=self.dtype.name,
        )
        with self._params_lock.write():
            if self._net is not None and self._net.n_inputs == n_inputs:
                params = np.empty(self._net.n_params, dtype=self.dtype)
                self._net.get_params(params)
                net.set_params(params)
                net.seed = self._net.seed
                for i, units in enumerate(layer_widths(self.layers, n_inputs)):
                    stats = np.empty(2 * units, dtype=self.dtype)
                    if self._net.get_running(i, stats):
                        net.set_running(i, stats)
            else:
                if self.seed is None:
                    self.seed = _random_seed()
                net.init(INITS.index(self.init), self.seed)
                # Layers with their own initialisers draw from the same
                # per-layer streams, so the seed still decides everything.
                for i, layer in enumerate(self.layers):
                    if layer.kernel_init is not None or layer.bias_init != 0.0:
                        init = layer.kernel_init.name if layer.kernel_init else self.init
                        net.init_layer(i, INITS.index(init), layer.bias_init, self.seed)
                self._epochs_done = 0
            self._net = net
            self.loss = loss_obj
        return self

    @property
    def built(self) -> bool:
        return self._net is not None

    def _require_built(self) -> Any:
        if self._net is None:
            raise RuntimeError(
                "the model has no parameters yet: call fit() first, or give n_inputs"
            )
        return self._net

    @property
    def n_inputs(self) -> int:
        return self._require_built().n_inputs

    @property
    def n_outputs(self) -> int:
        for layer in reversed(self.layers):
            if layer.units is not None:
                return layer.units
        # Only layers that keep their input's width: as wide as the input.
        if self._net is None and self._fit_inputs is not None:
            return self._fit_inputs
        return self.n_inputs

    @property
    def n_params(self) -> int:
        return self._require_built().n_params

    def summary(self, print_fn: Callable[[str], Any] | None = print) -> str:
        """A table of the layers, their output shapes and parameter
        counts, with the total; printed with `print_fn` (None: not
        printed) and returned. Parameter counts need a built model."""
        from .diagnostics import summary

        return summary(self, print_fn)

    def get_weights(self) -> list[np.ndarray]:
        """Copies of every layer's parameters, layer by layer: a dense
        layer's weights (inputs x units) and biases (none with
        ``use_bias=False``); a normalisation's gamma and beta (none with
        ``center=False``), then for BatchNorm its running mean and
        running variance; nothing for Dropout."""
        net = self._require_built()
        flat = np.empty(net.n_params, dtype=self.dtype)
        with self._params_lock.read():
            net.get_params(flat)
            result = []
            n_in = net.n_inputs
            for i, ((units, _, w_off, b_off), layer) in enumerate(
                zip(net.layers(), self.layers)
            ):
                if layer.kind == "dropout":
                    continue
                n_w = n_in * units if layer.kind == "dense" else units
                shape = (n_in, units) if layer.kind == "dense" else (units,)
                result.append(flat[w_off : w_off + n_w].reshape(shape).copy())
                if layer.use_bias:
                    result.append(flat[b_off : b_off + units].copy())
                if layer.kind == "batch_norm":
                    stats = np.empty(2 * units, dtype=self.dtype)
                    net.get_running(i, stats)
                    result.extend([stats[:units].copy(), stats[units:].copy()])
                n_in = units
        return result

    def set_weights(self, weights: Sequence[Any]) -> None:
        """Set parameters from a list shaped like get_weights()."""
        net = self._require_built()
        current = self.get_weights()
        if len(weights) != len(current):
            raise ValueError(f"expected {len(current)} arrays, got {len(weights)}")
        converted = []
        for i, (new, old) in enumerate(zip(weights, current)):
            array = np.asarray(new, dtype=self.dtype)
            if array.shape != old.shape:
                raise ValueError(f"array {i} has shape {array.shape}, expected {old.shape}")
            if not np.isfinite(array).all():
                raise ValueError(f"array {i} contains NaN or infinity")
            converted.append(array.ravel())
        # A layer without biases keeps zeros in their place in the slab.
        flat = []
        running = {}
        at = 0
        for i, layer in enumerate(self.layers):
            if layer.kind == "dropout":
                continue
            flat.append(converted[at])
            units = converted[at].size if layer.kind != "dense" else layer.units
            at += 1
            if layer.use_bias:
                flat.append(converted[at])
                at += 1
            else:
                flat.append(np.zeros(units, self.dtype))
            if layer.kind == "batch_norm":
                mean, var = converted[at], converted[at + 1]
                if (var < 0).any():
                    raise ValueError(f"array {at + 1} is a running variance; it must be >= 0")
                running[i] = np.concatenate([mean, var])
                at += 2
        with self._params_lock.write():
            if flat:
                net.set_params(np.ascontiguousarray(np.concatenate(flat), self.dtype))
            for i, stats in running.items():
                net.set_running(i, stats)

    # ------------------------------------------------------------------
    # Data
    # ------------------------------------------------------------------

    def _check_x(self, X: Any, name: str = "X") -> np.ndarray:
        x = as_matrix(X, name, dtype=self.dtype)
        if self._net is not None and x.shape[1] != self._net.n_inputs:
            raise ValueError(
                f"{name} has {x.shape[1]} features but the model takes {self._net.n_inputs}"
            )
        if self._input_scaling is not None:
            mean, scale = self._input_scaling
            if x.shape[1] != len(mean):
                raise ValueError(
                    f"{name} has {x.shape[1]} features but input_scaling has {len(mean)}"
                )
            # In float64, as a C program applies a saved scaling.
            x = as_matrix(
                (np.asarray(X, dtype=np.float64) - mean) / scale, name, dtype=self.dtype
            )
        return x

    # ------------------------------------------------------------------
    # What a model file keeps besides the network
    # ------------------------------------------------------------------

    @property
    def class_labels(self) -> np.ndarray | None:
        """The class of each output unit (two for a single sigmoid unit:
        the classes of 0 and 1), as ints, floats or strings.

        When set, ``predict`` returns these labels instead of class indices
        (fit and evaluate still take indices). None by default; saved with
        the model.
        """
        return self._class_labels

    @class_labels.setter
    def class_labels(self, labels: Any) -> None:
        if labels is None:
            self._class_labels = None
            return
        array = np.asarray(labels)
        if array.dtype.kind == "O" and all(isinstance(v, str) for v in array.ravel()):
            array = array.astype(str)
        if array.ndim != 1 or array.dtype.kind not in "biufU":
            raise ValueError(
                "class_labels must be a 1-D sequence of ints, floats or strings, got "
                f"{array.dtype} of shape {array.shape}"
            )
        wanted = (self.n_outputs, 2) if self.n_outputs == 1 else (self.n_outputs,)
        if len(array) not in wanted:
            raise ValueError(
                f"class_labels has {len(array)} labels; the model has {self.n_outputs} "
                f"output(s), so give {' or '.join(map(str, wanted))}"
            )
        if array.dtype.kind in "bu":
            if array.dtype.kind == "u" and array.max() > np.iinfo(np.int64).max:
                raise ValueError("class_labels must fit in int64")
            array = array.astype(np.int64)
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            raise ValueError("class_labels contains NaN or infinity")
        if array.dtype.kind == "U" and any("\0" in v for v in array):
            raise ValueError("class_labels must not contain NUL characters")
        self._class_labels = array.copy()

    @property
    def input_scaling(self) -> tuple[np.ndarray, np.ndarray] | None:
        """``(mean, scale)``: when set, every X given to fit, predict and
        evaluate becomes ``(X - mean) / scale`` (computed in float64) before
        the network sees it. None by default; saved with the model, and
        applied the same way by C programs that load it.
        """
        return self._input_scaling

    @input_scaling.setter
    def input_scaling(self, value: Any) -> None:
        if value is None:
            self._input_scaling = None
            return
        if not isinstance(value, (tuple, list)) or len(value) != 2:
            raise ValueError("input_scaling must be a pair (mean, scale) or None")
        mean = np.array(value[0], dtype=np.float64).reshape(-1)
        scale = np.array(value[1], dtype=np.float64).reshape(-1)
        if len(mean) != len(scale) or len(mean) == 0:
            raise ValueError(
                f"input_scaling needs one mean and one scale per feature, got {len(mean)} "
                f"and {len(scale)}"
            )
        if self._net is not None and len(mean) != self._net.n_inputs:
            raise ValueError(
                f"input_scaling has {len(mean)} features but the model takes "
                f"{self._net.n_inputs}"
            )
        if not (np.isfinite(mean).all() and np.isfinite(scale).all() and (scale != 0).all()):
            raise ValueError("input_scaling needs finite means and finite, nonzero scales")
        self._input_scaling = (mean, scale)

    def _check_y(self, y: Any, loss: Loss, name: str = "y") -> np.ndarray:
        if isinstance(loss, losses.CrossEntropy):
            if self.n_outputs < 2:
                raise ValueError("cross_entropy needs an output layer with at least 2 units")
            if np.ndim(y) == 2 and np.shape(y)[1] > 1:
                return as_probabilities(y, self.n_outputs, name, self.dtype)
            return as_labels(y, self.n_outputs, name)
        targets = as_targets(y, self.n_outputs, name, self.dtype)
        if isinstance(loss, losses.BinaryCrossEntropy):
            if targets.min() < 0 or targets.max() > 1:
                raise ValueError(
                    f"{name} must be in [0, 1] for binary_cross_entropy, got values from "
                    f"{targets.min():g} to {targets.max():g}"
                )
        if isinstance(loss, losses.Poisson) and targets.min() < 0:
            raise ValueError(
                f"{name} must hold counts >= 0 for the poisson loss, got {targets.min():g}"
            )
        return targets

    def _check_weights(self, sample_weight: Any, rows: int) -> np.ndarray | None:
        """Per-row weights of the model's dtype, finite and >= 0, or None."""
        if sample_weight is None:
            return None
        weights = as_vector(sample_weight, "sample_weight", self.dtype)
        if len(weights) != rows:
            raise ValueError(
                f"sample_weight has {len(weights)} values but X has {rows} rows"
            )
        if weights.min() < 0:
            raise ValueError(f"sample_weight must be >= 0, got {weights.min():g}")
        return weights

    @staticmethod
    def _target_args(y: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
        return (None, y) if y.dtype == np.int32 else (y, None)

    def _metric_name(self) -> str:
        assert self.loss is not None
        return "accuracy" if self.loss.is_classification else "r2"

    # ------------------------------------------------------------------
    # Training
    # ------------------------------------------------------------------

    def fit(
        self,
        X: Any,
        y: Any,
        loss: LossLike | None = None,
        optimizer: OptimizerLike | None = None,
        epochs: int = 10,
        batch_size: int | None = 32,
        shuffle: bool = True,
        seed: int | None = None,
        validation_data: tuple[Any, Any] | None = None,
        validation_split: float = 0.0,
        verbose: bool = False,
        distributed: Any = False,
        callbacks: Sequence[Callback] | None = None,
        stratify: bool = False,
        diagnostics: bool = False,
        sample_weight: Any = None,
    ) -> History:
        """Train by backpropagation.

        Parameters
        ----------
        X : array-like, shape (n, n_inputs)
        y : array-like
            For "cross_entropy", class indices in [0, units) or class
            probabilities shaped (n, units) with rows summing to 1; for
            "binary_cross_entropy", values in [0, 1] shaped (n,) or (n,
            units) (several units: multi-label); for "poisson", counts >= 0;
            otherwise values shaped (n,) or (n, units).
        loss : str or Loss
            "mse", "mae", "huber", "cross_entropy", "binary_cross_entropy"
            or "poisson", or an object from ``bprop.losses`` with options
            such as ``CrossEntropy(label_smoothing=0.1)``; by default
            inferred from the output activation (softmax or log_softmax:
            cross-entropy, sigmoid: binary cross-entropy, otherwise mse).
        optimizer : str or Optimizer, optional
            "sgd" (lr 0.01), "adam", "adamw", "rmsprop", "adagrad",
            "lbfgs" (full batch, needs scipy), or an object such as
            ``bprop.SGD(lr=0.1, momentum=0.9, nesterov=True)`` or
            ``bprop.Adam(lr=1e-3, schedule=bprop.schedules.CosineWarmup())``;
            a learning-rate schedule is given to the optimizer. By
            default the optimizer of the last fit (kept in saved models,
            with its state), else "sgd".
        epochs : int
            Passes over the data, >= 0.
        batch_size : int or None
            1 for stochastic gradient descent, None for full-batch
            gradient descent, anything between for mini-batches. A size
            larger than the data trains on the whole set at once.
        shuffle : bool
            Reshuffle the rows every epoch (seeded).
        seed : int, optional
            Seed of the shuffles and the validation split (and of the
            initialisation, if the model is not built yet); the model's
            seed when None, so a fit is reproducible from it.
        validation_data : (X_val, y_val), optional
        validation_split : float
            Fraction of rows held out for validation when no
            validation_data is given, never trained on.
        verbose : bool
            Show a progress bar with one step per epoch.
        distributed : bool, MPI communicator or bprop.distributed.DataParallel
            Train data-parallel across the ranks of an MPI job (needs
            mpi4py): every rank passes the same data, takes a shard of
            every batch, and ends with the same parameters. True means
            all ranks of ``MPI.COMM_WORLD``. Every optimizer but L-BFGS,
            callbacks and diagnostics work as in one process; callbacks
            run on every rank with the same logs, and the ranks agree on
            when to stop. See docs/distributed.md.
        callbacks : sequence of bprop.callbacks.Callback, optional
            Called at the start and end of training, of each epoch and,
            for those that override the batch methods, of each batch:
            e.g. ``EarlyStopping``, ``ModelCheckpoint``, ``StopAtLoss``,
            ``GradientMonitor``.
        stratify : bool
            Hold out the validation_split rows class by class, keeping
            each class's proportion (classification only).
        diagnostics : bool
            Record per-layer gradient norms, weight norms, update-to-weight
            ratios and dead relu fractions each epoch in
            ``History.diagnostics`` (bprop.diagnostics.LAYER_STATS).
        sample_weight : array-like, shape (n,), optional
            A weight >= 0 per row of X, multiplying that row's loss (and
            gathered with it when the rows are shuffled); the loss stays
            divided by the number of rows. Validation losses are not
            weighted.

        Returns
        -------
        History
            Per epoch: "loss" and "accuracy" or "r2" on the training rows,
            "lr", and "val_loss" with "val_accuracy" or "val_r2" when
            there is validation data. Also kept as ``model.history``.

        Raises
        ------
        DivergenceError
            When a loss, weight or output becomes NaN or infinite; the
            message names the epoch, the batch and the layer where it
            began (also as the attributes ``epoch``, ``batch`` and
            ``layer``, from 0), and the weights are those of the end of
            the previous epoch.
        KeyboardInterrupt
            On Ctrl-C (SIGINT), after the batch in progress: the model
            keeps the weights of the last batch trained (an epoch cut
            short counts as an epoch), and ``model.history`` holds the
            epochs completed with ``interrupted`` set. A callback's
            exception ends training in the same way.

        Callbacks' ``on_train_end`` runs in every case above too, before
        the exception propagates (see ``bprop.callbacks.Callback``).
        """
        epochs = check_positive_int(epochs, "epochs", allow_zero=True)
        if batch_size is not None:
            batch_size = check_positive_int(batch_size, "batch_size")
        if seed is not None:
            check_positive_int(seed, "seed", allow_zero=True)
        loss_obj = losses.get(loss) if loss is not None else (self.loss or self._default_loss())
        if optimizer is None:
            optimizer = self.optimizer if self.optimizer is not None else "sgd"
        opt = optimizers.get(optimizer)
        plan = as_plan(distributed)
        if plan is not None and isinstance(opt, optimizers.LBFGS):
            raise ValueError(
                "distributed training does not support L-BFGS, which optimizes the whole data "
                "set at once in one process; use a mini-batch optimizer such as bprop.Adam or "
                "bprop.SGD"
            )

        x = self._check_x(X)
        self._fit_inputs = x.shape[1]
        targets = self._check_y(y, loss_obj)
        check_same_length(x, targets)
        weights = self._check_weights(sample_weight, len(x))

        x_val = y_val = None
        if validation_data is not None:
            if validation_split:
                raise ValueError("give validation_data or validation_split, not both")
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
                raise ValueError("validation_data must be a pair (X_val, y_val)")
            x_val = self._check_x(validation_data[0], "X_val")
            # An unbuilt model cannot catch this in _check_x, and the C core
            # would read past the end of X_val.
            if x_val.shape[1] != x.shape[1]:
                raise ValueError(f"X_val has {x_val.shape[1]} features but X has {x.shape[1]}")
            y_val = self._check_y(validation_data[1], loss_obj, "y_val")
            check_same_length(x_val, y_val, "X_val", "y_val")
        elif validation_split:
            if stratify and not loss_obj.is_classification:
                raise ValueError(
                    f"stratify=True needs classes; the loss {loss_obj.name!r} is for regression"
                )
            _splits.validation_rows(len(x), validation_split)
            if seed is None and self.seed is None:
                self.seed = _random_seed()
            train_rows, val_rows = _splits.split(
                len(x), validation_split, self.seed if seed is None else seed,
                targets if stratify else None,
            )
            x_val, y_val = x[val_rows], targets[val_rows]
            x, targets = x[train_rows], targets[train_rows]
            if weights is not None:
                weights = weights[train_rows]
        elif stratify:
            raise ValueError("stratify=True needs a validation_split")

        with self._lock:
            if self._net is None:
                if self.seed is None and seed is not None:
                    self.seed = seed
                self.build(x.shape[1], loss_obj)
            elif loss_obj != self.loss:
                self.build(x.shape[1], loss_obj)
            self.optimizer = opt
            if plan is not None and self.dtype != np.float32:
                raise ValueError(
                    "distributed training supports float32 models only; build the model "
                    "with dtype='float32'"
                )
            if weights is not None and (plan is not None or isinstance(opt, optimizers.LBFGS)):
                raise ValueError(
                    "sample_weight is not available with distributed training or L-BFGS"
                )
            if isinstance(opt, optimizers.LBFGS):
                if callbacks or diagnostics:
                    raise ValueError("callbacks and diagnostics are not available with L-BFGS")
                return lbfgs.fit(self, x, targets, x_val, y_val, opt, epochs, verbose)
            if plan is not None:
                return distributed_fit(
                    self, x, targets, x_val, y_val, opt, epochs, batch_size, shuffle, seed,
                    verbose, plan, callbacks=callbacks or (), diagnostics=diagnostics,
                )
            return self._run_epochs(
                x, targets, x_val, y_val, opt, epochs, batch_size, shuffle, seed, verbose,
                callbacks=callbacks or (), diagnostics=diagnostics, sample_weight=weights,
            )

    def _run_epochs(
        self,
        x: np.ndarray,
        targets: np.ndarray,
        x_val: np.ndarray | None,
        y_val: np.ndarray | None,
        opt: SGD,
        epochs: int,
        batch_size: int | None,
        shuffle: bool,
        seed: int | None,
        verbose: bool,
        callbacks: Sequence[Callback] = (),
        diagnostics: bool = False,
        sample_weight: np.ndarray | None = None,
    ) -> History:
        net = self._net
        history = History()
        self.history = history
        y_arg, label_arg = self._target_args(targets)
        batch = len(x) if batch_size is None else min(batch_size, len(x))
        n_batches = (len(x) + batch - 1) // batch
        shuffle_seed = self.seed if seed is None else seed
        snapshot = np.empty(net.n_params, dtype=self.dtype)
        velocity = np.empty(net.n_params, dtype=self.dtype)
        after = np.empty(net.n_params, dtype=self.dtype)
        run = OptimizerRun(net, opt, n_batches, epochs)

        metric = self._metric_name()
        names = ["loss", metric, "lr"]
        if x_val is not None:
            names += ["val_loss", f"val_{metric}"]
        hooks = CallbackList(callbacks, self, {
            "epochs": epochs, "batches": n_batches, "batch_size": batch,
            "samples": len(x), "metrics": names,
        })  # fmt: skip
        stats = diagnostics or hooks.needs_layer_stats
        probe = LayerProbe(self, x, targets, shuffle_seed) if stats else None
        monitor = _core.EpochMonitor(
            metric=self._running_metric(),
            on_batch=hooks.batch_hook(n_batches, batch, len(x)) if hooks.wants_batches else None,
            layer_stats=stats,
        )
        self.stop_training = False
        values: dict[str, Any] = {}
        last: dict[str, Any] = {}

        bar = tqdm(total=epochs, disable=not verbose, unit="epoch", desc="train")
        try:
            hooks.on_train_begin()
            for epoch in range(epochs):
                hooks.on_epoch_begin(epoch)
                if self.stop_training:
                    break
                # Predictions in other threads wait for the end of the epoch, so
                # they never see the weights halfway through it.
                with self._params_lock.write():
                    net.get_params(snapshot)
                    net.get_velocity(velocity)
                    run.save()
                    stream = self._epochs_done
                    stage = "epoch"
                    try:
                        loss = self._train_one_epoch(
                            net, x, y_arg, label_arg, batch, shuffle, shuffle_seed, stream, opt,
                            monitor, sample_weight,
                        )
                        # NOTE: the C core checks only the loss, which stays finite
                        # when saturated units hide infinite weights; the epoch has
                        # diverged all the same.
                        stage = "weights"
                        net.get_params(after)
                        if not np.isfinite(after).all():
                            raise DivergenceError("the weights became NaN or infinite")
                        net.get_velocity(after)
                        if not np.isfinite(after).all():
                            raise DivergenceError("the momentum became NaN or infinite")
                        run.check_finite()
                        # Outputs that overflow on the validation rows are a
                        # divergence too (DivergenceError from the C core).
                        stage = "outputs"
                        values = {"loss": loss, metric: self._training_metric(monitor, x, targets)}
                        if x_val is not None:
                            values.update(self._evaluate_arrays(x_val, y_val, prefix="val_"))
                    except DivergenceError as exc:
                        where = self._divergence_site(exc, stage, n_batches, x, targets, x_val,
                                                      y_val)
                        # The momentum is restored too: a diverged one would wreck
                        # the next fit() even at a smaller learning rate.
                        net.set_params(snapshot)
                        net.set_velocity(velocity)
                        run.restore()
                        if stage == "weights":
                            where = self._replay_divergence(
                                exc, n_batches, x, y_arg, label_arg, batch, shuffle,
                                shuffle_seed, stream, opt, sample_weight,
                            )
                        error = DivergenceError(
                            f"training diverged in epoch {epoch + 1}, {where[0]}. The weights "
                            "were restored to the end of the previous epoch. Try a smaller "
                            "learning rate, scaling the inputs (e.g. to zero mean and unit "
                            "variance), or a smaller momentum."
                        )
                        error.epoch, error.batch, error.layer = epoch, where[1], where[2]
                        raise error from None
                    except BaseException:
                        self._keep_cut_epoch(net, monitor, snapshot, velocity, after, run)
                        raise
                    self._epochs_done += 1
                    self._steps_done += monitor.batches
                run.end_epoch(values)
                if probe is not None:
                    values["layers"] = probe.epoch_stats(monitor)
                history.record(epoch, values)
                last = values
                bar.set_postfix(
                    {k: f"{v:.4g}" for k, v in values.items() if k in names}, refresh=False
                )
                bar.update(1)
                hooks.on_epoch_end(epoch, values)
                if self.stop_training:
                    break
        except BaseException as exc:
            # The weights are settled by now (restored after a divergence,
            # kept after Ctrl-C or a callback's exception): the callbacks
            # end on them, and the exception is raised as it came.
            if isinstance(exc, KeyboardInterrupt):
                history.interrupted = True
            hooks.on_train_end(last, exc)
            raise
        else:
            hooks.on_train_end(last)
        finally:
            bar.close()
        return history

    def _train_one_epoch(
        self, net: Any, x: np.ndarray, y_arg: np.ndarray | None, label_arg: np.ndarray | None,
        batch: int, shuffle: bool, shuffle_seed: int, stream: int, opt: CoreOptimizer,
        monitor: Any, weights: np.ndarray | None = None,
    ) -> float:
        """One epoch of `net` (the model's, or a clone replaying one);
        `weights` are the rows' sample weights, or None."""
        return net.train_epoch_opt(
            x, y_arg, label_arg, batch, shuffle, shuffle_seed, stream, opt.config(),
            opt.schedule_config(), monitor, weights=weights,
        )

    def _running_metric(self) -> str | None:
        """The metric the epoch monitor can add up from the batches'
        outputs, or None for losses whose outputs it cannot read."""
        return {
            losses.CrossEntropy: "argmax",
            losses.BinaryCrossEntropy: "sign",
            losses.MeanSquaredError: "r2",
            losses.MeanAbsoluteError: "r2",
            losses.Huber: "r2",
        }.get(type(self.loss))

    def _training_metric(self, monitor: Any, x: np.ndarray, targets: np.ndarray) -> float:
        """The epoch's running metric, or one prediction pass when the
        monitor has none."""
        value = monitor.metric_value()
        if value is None:
            value = self._evaluate_arrays(x, targets)[self._metric_name()]
        return value

    def _divergence_site(
        self, exc: DivergenceError, stage: str, n_batches: int, x: np.ndarray,
        targets: np.ndarray, x_val: np.ndarray | None, y_val: np.ndarray | None,
    ) -> tuple[str, int | None, int | None]:
        """Where an epoch diverged, read from the network as it diverged:
        (words naming the batch and layer, batch, layer), both from 0."""
        if stage == "epoch":
            # The C core stopped before the update of the batch it names, so
            # the network holds the weights that batch saw.
            batch, layer = getattr(exc, "batch", None), getattr(exc, "layer", None)
            if batch is None:
                return str(exc), None, None
            loss_words = f"the loss was {getattr(exc, 'loss', float('nan')):g}"
            bad = first_bad_parameters(self._net)
            if bad is not None and batch > 0:
                return self._bad_update(batch - 1, n_batches, *bad,
                                        f"; {loss_words} in the next batch")
            where = f"batch {batch + 1} of {n_batches}"
            if layer is None:
                return f"{where}: {loss_words} with finite outputs", batch, None
            return (
                f"{where}, {layer_name(self, layer)}: its output was the first to overflow to "
                f"NaN or infinity, and {loss_words}", batch, layer,
            )
        if stage == "outputs":
            rows = "validation" if x_val is not None else "training"
            data = (x_val, y_val) if x_val is not None else (x, targets)
            layer = first_bad_layer(self._net, *data)
            named = f", {layer_name(self, layer)}" if layer is not None else ""
            return (
                f"after its last batch ({n_batches} of {n_batches}){named}: the outputs on the "
                f"{rows} rows overflowed to NaN or infinity", n_batches - 1, layer,
            )
        return str(exc), None, None

    def _bad_update(
        self, batch: int, n_batches: int, layer: int, bad_gradient: bool, tail: str = ""
    ) -> tuple[str, int, int]:
        cause = (
            "its gradient was NaN or infinite" if bad_gradient
            else "its gradient was finite, so the step was too large"
        )
        return (
            f"batch {batch + 1} of {n_batches}, {layer_name(self, layer)}: the update made its "
            f"weights or momentum NaN or infinite ({cause}){tail}", batch, layer,
        )

    def _replay_divergence(
        self, exc: DivergenceError, n_batches: int, x: np.ndarray, y_arg: np.ndarray | None,
        label_arg: np.ndarray | None, batch: int, shuffle: bool, shuffle_seed: int,
        stream: int, opt: Any, weights: np.ndarray | None = None,
    ) -> tuple[str, int | None, int | None]:
        """Where the weights of a restored epoch first became NaN or
        infinite, found by training a clone through it again (the same
        batches give the same results) and checking after every batch;
        `weights` are the rows' sample weights, or None."""
        twin = self._net.clone()
        monitor = _core.EpochMonitor(check_every=-1.0, stop_on_bad_params=True)
        try:
            self._train_one_epoch(twin, x, y_arg, label_arg, batch, shuffle, shuffle_seed,
                                  stream, opt, monitor, weights)
        except DivergenceError as again:
            return f"in a batch that diverged differently on a second run: {again}", None, None
        if monitor.bad_layer is None:
            return f"in a batch that could not be found again: {exc}", None, None
        return self._bad_update(
            monitor.batches - 1, n_batches, monitor.bad_layer, monitor.bad_gradient
        )

    def _keep_cut_epoch(
        self, net: Any, monitor: Any, snapshot: np.ndarray, velocity: np.ndarray,
        scratch: np.ndarray, run: OptimizerRun,
    ) -> None:
        """After an exception (Ctrl-C, a callback's) ended an epoch early:
        keeps the batches it trained, counted as an epoch, when they left
        the parameters finite; otherwise goes back to the epoch's start."""
        net.get_params(scratch)
        if np.array_equal(scratch, snapshot):
            return
        finite = bool(np.isfinite(scratch).all())
        net.get_velocity(scratch)
        if finite and np.isfinite(scratch).all():
            self._epochs_done += 1
            self._steps_done += monitor.batches
        else:
            net.set_params(snapshot)
            net.set_velocity(velocity)
            run.restore()

    # ------------------------------------------------------------------
    # Inference
    # ------------------------------------------------------------------

    def _workspace(self) -> Any:
        net = self._require_built()
        ws = getattr(self._local, "workspace", None)
        if ws is None or ws.net is not net:
            ws = _core.Workspace(net, _PREDICT_CHUNK)
            self._local.workspace = ws
        return ws

    def _outputs(self, x: np.ndarray) -> np.ndarray:
        out = np.empty((len(x), self.n_outputs), dtype=self.dtype)
        try:
            with self._params_lock.read():
                ws = self._workspace()
                ws.net.predict(ws, out, x)
        except DivergenceError as exc:
            raise _not_finite(exc) from None
        return out

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities: softmax rows for cross-entropy (also after a
        log_softmax output layer), sigmoid outputs for binary
        cross-entropy, shape (n, units)."""
        self._require_built()
        if not self.loss.is_classification:
            raise ValueError("predict_proba needs a classification loss; this model uses "
                             f"{self.loss.name!r}, use predict()")
        out = self._outputs(self._check_x(X))
        if self.layers[-1].activation == "log_softmax":
            # The C core returns what the layer declares: log-probabilities.
            np.exp(out, out=out)
        return out

    def predict(self, X: Any) -> np.ndarray:
        """Predictions for each row of X.

        Class indices for cross-entropy; 0/1 per output for binary
        cross-entropy; the rate exp(output) for poisson; output values for
        the other losses. A model with one output returns shape (n,),
        otherwise (n, units).
        """
        self._require_built()
        out = self._outputs(self._check_x(X))
        decided = self._decide(out)
        labels = self._class_labels
        if labels is not None and (
            isinstance(self.loss, losses.CrossEntropy)
            or (isinstance(self.loss, losses.BinaryCrossEntropy) and self.n_outputs == 1)
        ):
            return labels[decided]
        return decided

    def _decide(self, out: np.ndarray) -> np.ndarray:
        if isinstance(self.loss, losses.CrossEntropy):
            return out.argmax(axis=1)
        if isinstance(self.loss, losses.BinaryCrossEntropy):
            out = (out > 0.5).astype(np.int64)
        return out[:, 0] if out.shape[1] == 1 else out

    def _evaluate_arrays(
        self, x: np.ndarray, targets: np.ndarray, prefix: str = "",
        weights: np.ndarray | None = None,
    ) -> dict:
        y_arg, label_arg = self._target_args(targets)
        out = np.empty((len(x), self.n_outputs), dtype=self.dtype)
        with self._params_lock.read():
            ws = self._workspace()
            loss = ws.net.evaluate(ws, x, y_arg, label_arg, weights)
            ws.net.predict(ws, out, x)
        predicted = self._decide(out)
        if isinstance(self.loss, losses.CrossEntropy) and targets.dtype != np.int32:
            truth = targets.argmax(axis=1)  # class probabilities
        elif targets.dtype == np.int32 or targets.shape[1] > 1:
            truth = targets
        else:
            truth = targets[:, 0]
        if self.loss.is_classification:
            metric = metrics.accuracy(truth, predicted)
        else:
            metric = metrics.r2_score(truth, predicted)
        return {f"{prefix}loss": loss, f"{prefix}{self._metric_name()}": metric}

    def evaluate(self, X: Any, y: Any, sample_weight: Any = None) -> dict[str, float]:
        """The mean loss and the metric on (X, y).

        Returns ``{"loss": ..., "accuracy": ...}`` for classification and
        ``{"loss": ..., "r2": ...}`` for regression. With ``sample_weight``
        the loss is weighted as in ``fit``; the metric is not.
        """
        self._require_built()
        x = self._check_x(X)
        targets = self._check_y(y, self.loss)
        check_same_length(x, targets)
        weights = self._check_weights(sample_weight, len(x))
        try:
            return self._evaluate_arrays(x, targets, weights=weights)
        except DivergenceError as exc:
            raise _not_finite(exc) from None

    # ------------------------------------------------------------------
    # Files, pickling and export
    # ------------------------------------------------------------------

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the model to a file that ``bprop.load`` and C programs read.

        The file (docs/model-format.md) holds the layers, loss and
        parameters, and the training state: optimizer settings and
        momentum, the seed and epochs done, so that training resumes
        exactly; also ``class_labels``, ``input_scaling`` and
        ``metadata``. It is written under a temporary name and renamed,
        so a failed save leaves any earlier file at `path` as it was.

        Raises OSError when the file cannot be written.
        """
        from . import model_file

        model_file.save(self, path)

    def to_bytes(self) -> bytes:
        """The bytes ``save`` writes; ``bprop.from_bytes`` reads them."""
        from . import model_file

        return model_file.to_bytes(self)

    def to_onnx(self, path: str | os.PathLike[str]) -> None:
        """Export the model for inference to an ONNX file.

        Needs the ``onnx`` package (``pip install bprop[onnx]``). The
        graph takes rows of the model's dtype (float32 or float64) and
        returns what ``predict_proba`` (or, for regression, ``predict``)
        returns, shaped (n, units), except after a log_softmax output
        layer: then the log-probabilities.
        gelu needs opset 20, which the graph then declares.
        """
        from .onnx_export import export

        export(self, path)

    def __getstate__(self) -> dict[str, Any]:
        if self._net is not None:
            return {"model_file": self.to_bytes()}
        return {
            "layers": [layer.config() for layer in self.layers],
            "seed": self.seed,
            "init": self.init,
            "dtype": self.dtype.name,
            "class_labels": self._class_labels,
            "input_scaling": self._input_scaling,
            "metadata": self.metadata,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        if "model_file" in state:
            from . import model_file

            self.__dict__.update(model_file.from_bytes(state["model_file"]).__dict__)
            return
        layers = [
            layer_from_config(layer) if isinstance(layer, dict) else Dense(*layer)
            for layer in state["layers"]
        ]
        self.__init__(
            layers, seed=state["seed"], init=state["init"], dtype=state.get("dtype", "float32")
        )
        self._class_labels = state["class_labels"]
        self._input_scaling = state["input_scaling"]
        self.metadata = dict(state["metadata"])

    def __repr__(self) -> str:
        inputs = self._net.n_inputs if self._net is not None else None
        dtype = ", dtype='float64'" if self.dtype == np.float64 else ""
        return f"Sequential({self.layers!r}, n_inputs={inputs}{dtype})"

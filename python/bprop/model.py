"""The Sequential model: build, train, predict, evaluate."""

from __future__ import annotations

import os
import threading
from typing import Any, Sequence

import numpy as np
from tqdm.auto import tqdm

from . import _core, losses, metrics, optimizers
from ._rwlock import ReadWriteLock
from ._validation import (
    as_labels,
    as_matrix,
    as_targets,
    check_positive_int,
    check_same_length,
)
from .callbacks import History
from .distributed import as_plan
from .distributed import fit as distributed_fit
from .layers import Dense
from .losses import Loss, LossLike
from .optimizers import SGD, OptimizerLike

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
    layers : sequence of Dense
        The layers, from the first hidden layer to the output layer.
    n_inputs : int, optional
        Number of input features. Inferred from the data at the first
        ``fit`` when not given.
    seed : int, optional
        Seed of the weight initialisation; drawn at random when None.
    init : str
        "auto" (He for relu layers, Glorot otherwise), "he" or "glorot".

    Examples
    --------
    >>> model = bprop.Sequential([bprop.Dense(64, activation="relu"), bprop.Dense(10)])
    >>> history = model.fit(X, y, loss="cross_entropy", epochs=20, seed=0)
    >>> model.predict(X[:5])
    """

    def __init__(
        self,
        layers: Sequence[Dense],
        n_inputs: int | None = None,
        seed: int | None = None,
        init: str = "auto",
    ) -> None:
        layers = list(layers)
        if not layers:
            raise ValueError("a Sequential model needs at least one layer")
        for i, layer in enumerate(layers):
            if not isinstance(layer, Dense):
                raise ValueError(f"layer {i} is {layer!r}, not a bprop.Dense")
            if layer.activation == "softmax" and i != len(layers) - 1:
                raise ValueError(f"layer {i}: softmax is only allowed on the output layer")
        if init not in INITS:
            raise ValueError(f"unknown init {init!r}; choose one of {', '.join(INITS)}")
        if seed is not None:
            check_positive_int(seed, "seed", allow_zero=True)
        self.layers = layers
        self.init = init
        self.seed = seed
        self.loss: Loss | None = None
        self.optimizer: OptimizerLike | None = None
        self._net: Any = None
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
        if n_inputs is not None:
            self.build(n_inputs)

    # ------------------------------------------------------------------
    # Construction
    # ------------------------------------------------------------------

    def _default_loss(self) -> Loss:
        last = self.layers[-1].activation
        if last == "softmax":
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
        units = [layer.units for layer in self.layers]
        codes = [layer.activation_code for layer in self.layers]
        net = _core.Net(n_inputs, units, codes, loss_obj.code)
        with self._params_lock.write():
            if self._net is not None and self._net.n_inputs == n_inputs:
                params = np.empty(self._net.n_params, dtype=np.float32)
                self._net.get_params(params)
                net.set_params(params)
            else:
                if self.seed is None:
                    self.seed = _random_seed()
                net.init(INITS.index(self.init), self.seed)
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
        return self.layers[-1].units

    @property
    def n_params(self) -> int:
        return self._require_built().n_params

    def get_weights(self) -> list[np.ndarray]:
        """Copies of every layer's weights (inputs x units) and biases."""
        net = self._require_built()
        flat = np.empty(net.n_params, dtype=np.float32)
        with self._params_lock.read():
            net.get_params(flat)
        n_in = net.n_inputs
        result = []
        for units, _, w_off, b_off in net.layers():
            result.append(flat[w_off : w_off + n_in * units].reshape(n_in, units).copy())
            result.append(flat[b_off : b_off + units].copy())
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
            array = np.asarray(new, dtype=np.float32)
            if array.shape != old.shape:
                raise ValueError(f"array {i} has shape {array.shape}, expected {old.shape}")
            if not np.isfinite(array).all():
                raise ValueError(f"array {i} contains NaN or infinity")
            converted.append(array.ravel())
        with self._params_lock.write():
            net.set_params(np.ascontiguousarray(np.concatenate(converted)))

    # ------------------------------------------------------------------
    # Data
    # ------------------------------------------------------------------

    def _check_x(self, X: Any, name: str = "X") -> np.ndarray:
        x = as_matrix(X, name)
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
            x = as_matrix((np.asarray(X, dtype=np.float64) - mean) / scale, name)
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
            return as_labels(y, self.n_outputs, name)
        targets = as_targets(y, self.n_outputs, name)
        if isinstance(loss, losses.BinaryCrossEntropy):
            if targets.min() < 0 or targets.max() > 1:
                raise ValueError(
                    f"{name} must be in [0, 1] for binary_cross_entropy, got values from "
                    f"{targets.min():g} to {targets.max():g}"
                )
        return targets

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
    ) -> History:
        """Train by backpropagation.

        Parameters
        ----------
        X : array-like, shape (n, n_inputs)
        y : array-like
            Class indices in [0, units) for "cross_entropy"; 0/1 values
            shaped (n,) or (n, units) for "binary_cross_entropy"; values
            shaped (n,) or (n, units) for "mse".
        loss : str or Loss
            "mse", "cross_entropy" or "binary_cross_entropy"; by default
            inferred from the output activation (softmax: cross-entropy,
            sigmoid: binary cross-entropy, otherwise mse).
        optimizer : str or Optimizer, optional
            "sgd" (lr 0.01) or an object such as ``bprop.SGD(lr=0.1,
            momentum=0.9, nesterov=True)``. By default the optimizer of
            the last fit (kept in saved models), else "sgd".
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
            initialisation, if the model is not built yet).
        validation_data : (X_val, y_val), optional
        validation_split : float
            Fraction of rows, chosen at random, held out for validation
            when no validation_data is given.
        verbose : bool
            Show a progress bar with one step per epoch.
        distributed : bool, MPI communicator or bprop.distributed.DataParallel
            Train data-parallel across the ranks of an MPI job (needs
            mpi4py): every rank passes the same data, takes a shard of
            every batch, and ends with the same parameters. True means
            all ranks of ``MPI.COMM_WORLD``. See docs/distributed.md.

        Returns
        -------
        History
            "loss" per epoch, and "val_loss" with "val_accuracy" or
            "val_r2" when there is validation data.
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
        if not isinstance(opt, SGD):
            raise ValueError(f"optimizer {opt!r} is not supported by this model")
        plan = as_plan(distributed)

        x = self._check_x(X)
        targets = self._check_y(y, loss_obj)
        check_same_length(x, targets)

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
            if not 0.0 < float(validation_split) < 1.0:
                raise ValueError(f"validation_split must be in (0, 1), got {validation_split}")
            n_val = int(round(len(x) * float(validation_split)))
            if n_val < 1 or n_val >= len(x):
                raise ValueError(
                    f"validation_split={validation_split} leaves no rows for "
                    f"{'validation' if n_val < 1 else 'training'} out of {len(x)}"
                )
            order = np.random.default_rng(seed).permutation(len(x))
            val_rows, train_rows = np.sort(order[:n_val]), np.sort(order[n_val:])
            x_val, y_val = x[val_rows], targets[val_rows]
            x, targets = x[train_rows], targets[train_rows]

        with self._lock:
            if self._net is None:
                if self.seed is None and seed is not None:
                    self.seed = seed
                self.build(x.shape[1], loss_obj)
            elif loss_obj != self.loss:
                self.build(x.shape[1], loss_obj)
            self.optimizer = opt
            if plan is not None:
                return distributed_fit(
                    self, x, targets, x_val, y_val, opt, epochs, batch_size, shuffle, seed,
                    verbose, plan,
                )
            return self._run_epochs(
                x, targets, x_val, y_val, opt, epochs, batch_size, shuffle, seed, verbose
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
    ) -> History:
        net = self._net
        history = History()
        y_arg, label_arg = self._target_args(targets)
        batch = len(x) if batch_size is None else min(batch_size, len(x))
        shuffle_seed = self.seed if seed is None else seed
        snapshot = np.empty(net.n_params, dtype=np.float32)
        velocity = np.empty(net.n_params, dtype=np.float32)
        after = np.empty(net.n_params, dtype=np.float32)

        bar = tqdm(total=epochs, disable=not verbose, unit="epoch", desc="train")
        try:
            for epoch in range(epochs):
                # Predictions in other threads wait for the end of the epoch, so
                # they never see the weights halfway through it.
                with self._params_lock.write():
                    net.get_params(snapshot)
                    net.get_velocity(velocity)
                    try:
                        loss = net.train_epoch(
                            x, y_arg, label_arg, batch, shuffle, shuffle_seed,
                            self._epochs_done, opt.lr, opt.momentum, opt.nesterov, opt.l2,
                        )
                        # NOTE: the C core checks only the loss, which stays finite
                        # when saturated units hide infinite weights; the epoch has
                        # diverged all the same.
                        net.get_params(after)
                        if not np.isfinite(after).all():
                            raise DivergenceError("the weights became NaN or infinite")
                        net.get_velocity(after)
                        if not np.isfinite(after).all():
                            raise DivergenceError("the momentum became NaN or infinite")
                        values = {"loss": loss}
                        if x_val is not None:
                            # Outputs that overflow on the validation rows are a
                            # divergence too (DivergenceError from the C core).
                            values.update(self._evaluate_arrays(x_val, y_val, prefix="val_"))
                    except DivergenceError as exc:
                        # The momentum is restored too: a diverged one would wreck
                        # the next fit() even at a smaller learning rate.
                        net.set_params(snapshot)
                        net.set_velocity(velocity)
                        raise DivergenceError(
                            f"training diverged in epoch {epoch + 1}: {exc}. The weights "
                            "were restored to the end of the previous epoch. Try a smaller "
                            "learning rate, scaling the inputs (e.g. to zero mean and unit "
                            "variance), or a smaller momentum."
                        ) from None
                    self._epochs_done += 1
                    self._steps_done += (len(x) + batch - 1) // batch
                history.record(epoch, values)
                bar.set_postfix({k: f"{v:.4g}" for k, v in values.items()}, refresh=False)
                bar.update(1)
        finally:
            bar.close()
        return history

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
        out = np.empty((len(x), self.n_outputs), dtype=np.float32)
        try:
            with self._params_lock.read():
                ws = self._workspace()
                ws.net.predict(ws, out, x)
        except DivergenceError as exc:
            raise _not_finite(exc) from None
        return out

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities: softmax rows for cross-entropy, sigmoid
        outputs for binary cross-entropy, shape (n, units)."""
        self._require_built()
        if not self.loss.is_classification:
            raise ValueError("predict_proba needs a classification loss; this model uses "
                             f"{self.loss.name!r}, use predict()")
        return self._outputs(self._check_x(X))

    def predict(self, X: Any) -> np.ndarray:
        """Predictions for each row of X.

        Class indices for cross-entropy; 0/1 per output for binary
        cross-entropy; output values for mse. A model with one output
        returns shape (n,), otherwise (n, units).
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

    def _evaluate_arrays(self, x: np.ndarray, targets: np.ndarray, prefix: str = "") -> dict:
        y_arg, label_arg = self._target_args(targets)
        out = np.empty((len(x), self.n_outputs), dtype=np.float32)
        with self._params_lock.read():
            ws = self._workspace()
            loss = ws.net.evaluate(ws, x, y_arg, label_arg)
            ws.net.predict(ws, out, x)
        predicted = self._decide(out)
        truth = targets if targets.dtype == np.int32 or targets.shape[1] > 1 else targets[:, 0]
        if self.loss.is_classification:
            metric = metrics.accuracy(truth, predicted)
        else:
            metric = metrics.r2_score(truth, predicted)
        return {f"{prefix}loss": loss, f"{prefix}{self._metric_name()}": metric}

    def evaluate(self, X: Any, y: Any) -> dict[str, float]:
        """The mean loss and the metric on (X, y).

        Returns ``{"loss": ..., "accuracy": ...}`` for classification and
        ``{"loss": ..., "r2": ...}`` for regression.
        """
        self._require_built()
        x = self._check_x(X)
        targets = self._check_y(y, self.loss)
        check_same_length(x, targets)
        try:
            return self._evaluate_arrays(x, targets)
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
        graph takes float32 rows and returns what ``predict_proba`` (or,
        for regression, ``predict``) returns, shaped (n, units).
        """
        from .onnx_export import export

        export(self, path)

    def __getstate__(self) -> dict[str, Any]:
        if self._net is not None:
            return {"model_file": self.to_bytes()}
        return {
            "layers": [(layer.units, layer.activation) for layer in self.layers],
            "seed": self.seed,
            "init": self.init,
            "class_labels": self._class_labels,
            "input_scaling": self._input_scaling,
            "metadata": self.metadata,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        if "model_file" in state:
            from . import model_file

            self.__dict__.update(model_file.from_bytes(state["model_file"]).__dict__)
            return
        layers = [Dense(units, activation=act) for units, act in state["layers"]]
        self.__init__(layers, seed=state["seed"], init=state["init"])
        self._class_labels = state["class_labels"]
        self._input_scaling = state["input_scaling"]
        self.metadata = dict(state["metadata"])

    def __repr__(self) -> str:
        inputs = self._net.n_inputs if self._net is not None else None
        return f"Sequential({self.layers!r}, n_inputs={inputs})"

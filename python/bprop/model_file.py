"""Model files: Sequential models to and from bprop's binary format.

The C core writes and reads the format (docs/model-format.md), so C
programs load the same files. This module maps a model's state to the
file's sections and back.

Design decisions:
- The file holds everything that decides the next epoch: parameters,
  the optimizer's settings, state slabs and update counter, its
  learning-rate schedule (with a plateau schedule's state), the seed and
  the epoch counter that keys the shuffles. Training that resumes from
  a file gives the same bits as training that never stopped.
- Floats the file keeps as float32 (the optimizer settings) come back as
  the shortest decimal that rounds to the same float32, so that
  ``SGD(lr=0.05)`` reads back as 0.05; the C core trains with the
  float32 value either way.
- Pickling writes the same bytes as ``save``.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from . import _core, activations, losses, optimizers
from .layers import from_spec
from .model import INITS, Sequential, _random_seed
from .optimizers import CoreOptimizer

ModelFormatError = _core.ModelFormatError

#: The newest format version this bprop writes and reads.
FORMAT_VERSION: int = _core.MODEL_FORMAT_VERSION


def _state(model: Sequential) -> dict[str, Any]:
    """The optional sections of `model`'s file, as _core takes them."""
    state: dict[str, Any] = {
        "progress": (model._epochs_done, model._steps_done),
        "rng": (model.seed, INITS.index(model.init), model._epochs_done),
        "metadata": dict(model.metadata),
    }
    if isinstance(model.optimizer, CoreOptimizer):
        state["optimizer"] = model.optimizer.config()
        state["schedule"] = model.optimizer.schedule_config()
    labels = model.class_labels
    if labels is not None:
        if labels.dtype.kind == "i":
            state["labels"] = ("int", np.ascontiguousarray(labels, dtype=np.int64))
        elif labels.dtype.kind == "f":
            state["labels"] = ("float", np.ascontiguousarray(labels, dtype=np.float64))
        else:
            state["labels"] = ("str", [str(label) for label in labels])
    if model.input_scaling is not None:
        state["scaling"] = model.input_scaling
    return state


def _model(net: Any, state: dict[str, Any]) -> Sequential:
    """A Sequential around a network read from a file, with its state."""
    layers = [
        from_spec(kind, units, activations.from_code(code, param), has_bias, tuple(options))
        for (units, code, _, _), (param, has_bias), (kind, *options) in zip(
            net.layers(), net.layer_options(), net.layer_kinds()
        )
    ]
    seed, init, stream = state.get("rng", (_random_seed(), 0, None))
    epochs, steps = state.get("progress", (0, 0))
    model = Sequential(layers, seed=seed, init=INITS[init], dtype=net.dtype)
    model._net = net
    model.loss = losses.from_options(net.loss_options())
    # The shuffle stream decides the next epoch's order; a file without
    # one falls back to the epoch count.
    model._epochs_done = epochs if stream is None else stream
    model._steps_done = steps
    if "optimizer" in state:
        model.optimizer = optimizers.from_config(state["optimizer"], state.get("schedule"))
    if "labels" in state:
        kind, values = state["labels"]
        dtype = {"int": np.int64, "float": np.float64, "str": str}[kind]
        model.class_labels = np.array(values, dtype=dtype)
    if "scaling" in state:
        model.input_scaling = state["scaling"]
    model.metadata = state.get("metadata", {})
    return model


def _built(model: Sequential) -> Any:
    if model._net is None:
        raise RuntimeError(
            "the model has no parameters to save yet: call fit() first, or give n_inputs"
        )
    return model._net


def save(model: Sequential, path: str | os.PathLike[str]) -> None:
    """Write `model` to `path`; see Sequential.save."""
    # Between fits, and with no thread writing the parameters.
    with model._lock, model._params_lock.read():
        _core.net_save(_built(model), os.fsencode(path), _state(model))


def to_bytes(model: Sequential) -> bytes:
    """The bytes Sequential.save would write."""
    with model._lock, model._params_lock.read():
        return _core.net_dumps(_built(model), _state(model))


def load(path: str | os.PathLike[str]) -> Sequential:
    """Read a model saved by ``Sequential.save`` (or by a C program).

    Raises
    ------
    OSError
        The file cannot be opened or read.
    bprop.ModelFormatError (a ValueError)
        The file is empty, truncated, corrupt (its checksum does not
        match), not a bprop model file, or written by a newer format
        version. The message names the file and the problem.
    """
    net, state = _core.net_load(os.fsencode(path))
    return _model(net, state)


def from_bytes(data: bytes) -> Sequential:
    """A model from the bytes of a model file, such as to_bytes() gives."""
    net, state = _core.net_loads(memoryview(data).cast("B"))
    return _model(net, state)

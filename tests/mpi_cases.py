"""Training cases shared by tests/test_distributed.py and the MPI ranks it
starts: ``mpirun -n N python tests/mpi_cases.py OUT_DIR REDUCTION``.

Each rank trains every case with ``fit(..., distributed=...)`` and writes
its final parameters and loss history to OUT_DIR/rank<r>.npz, plus what
two failure cases raised to OUT_DIR/rank<r>.json. The test compares them
with one-process training.
"""

from __future__ import annotations

import json
import os
import sys

import bprop
import numpy as np

#: name: (loss, layers, fit arguments)
CASES = {
    "classify": (
        "cross_entropy",
        [(16, "relu"), (10, "identity")],
        dict(epochs=4, batch_size=32, shuffle=True, seed=5,
             optimizer=dict(lr=0.05, momentum=0.9, nesterov=True, l2=1e-4)),
    ),
    "regress": (
        "mse",
        [(8, "tanh"), (2, "identity")],
        dict(epochs=3, batch_size=45, shuffle=False, seed=1,
             optimizer=dict(lr=0.02, momentum=0.5, nesterov=False, l2=0.0)),
    ),
    "binary": (
        "binary_cross_entropy",
        [(12, "sigmoid"), (1, "sigmoid")],
        dict(epochs=3, batch_size=None, shuffle=True, seed=2,
             optimizer=dict(lr=0.5, momentum=0.0, nesterov=False, l2=0.0)),
    ),
    "tiny_batches": (
        "cross_entropy",
        [(10, "identity")],
        dict(epochs=1, batch_size=2, shuffle=True, seed=3,
             optimizer=dict(lr=0.01, momentum=0.9, nesterov=False, l2=0.0)),
    ),
}

ROWS = 600


def make_data(name: str) -> tuple[np.ndarray, np.ndarray]:
    """Standardised digits rows and the targets case `name` trains on."""
    X, y = bprop.datasets.load_digits()
    X, y = X[:ROWS], y[:ROWS]
    std = X.std(axis=0)
    std[std == 0] = 1.0
    X = ((X - X.mean(axis=0)) / std).astype(np.float32)
    loss = CASES[name][0]
    if loss == "mse":
        return X, np.stack([y / 9.0, y % 2], axis=1).astype(np.float32)
    if loss == "binary_cross_entropy":
        return X, (y >= 5).astype(np.float32)
    return X, y


def make_model(name: str) -> bprop.Sequential:
    layers = [bprop.Dense(units, activation=act) for units, act in CASES[name][1]]
    return bprop.Sequential(layers, seed=11).build(64, CASES[name][0])


def fit_args(name: str) -> dict:
    args = dict(CASES[name][2])
    args["optimizer"] = bprop.SGD(**args["optimizer"])
    return {"loss": CASES[name][0], **args}


def flat(model: bprop.Sequential) -> np.ndarray:
    return np.concatenate([w.ravel() for w in model.get_weights()])


def _failures(comm, plan) -> dict:
    """What a mismatched data set and a diverging fit raise on this rank."""
    found = {}
    x, y = make_data("classify")
    if comm.Get_rank() == 1:
        x = x.copy()
        x[7, 3] += 1.0
    model = make_model("classify")
    try:
        model.fit(x, y, **fit_args("classify"), distributed=plan)
    except ValueError as exc:
        found["mismatch"] = str(exc)

    x, y = make_data("regress")
    model = make_model("regress")
    before = flat(model)
    try:
        model.fit(x * 1e3, y * 1e6, loss="mse", optimizer=bprop.SGD(lr=10.0), epochs=2,
                  batch_size=16, seed=0, distributed=plan)
    except bprop.DivergenceError as exc:
        found["divergence"] = str(exc)
    found["restored"] = bool(np.array_equal(before, flat(model)))
    return found


def main() -> None:
    from mpi4py import MPI

    out, reduction = sys.argv[1], sys.argv[2]
    comm = MPI.COMM_WORLD
    plan = bprop.distributed.DataParallel(reduction=reduction)
    arrays = {}
    for name in CASES:
        x, y = make_data(name)
        model = make_model(name)
        history = model.fit(x, y, **fit_args(name), distributed=plan)
        arrays[f"{name}/params"] = flat(model)
        arrays[f"{name}/loss"] = np.array(history["loss"])
        arrays[f"{name}/counters"] = np.array([model._epochs_done, model._steps_done])
    rank = comm.Get_rank()
    info = {"size": comm.Get_size(), "threads": bprop.get_num_threads(), **_failures(comm, plan)}
    np.savez(os.path.join(out, f"rank{rank}.npz"), **arrays)
    with open(os.path.join(out, f"rank{rank}.json"), "w") as handle:
        json.dump(info, handle)


if __name__ == "__main__":
    main()

"""What the training toolkit's features cost: group "toolkit" of
``bprop bench``.

One epoch of the mnist workload (784-256-128-10, batch 128) with Adam,
batch norm after each hidden dense layer and dropout 0.2 after each
normalised layer, against the plain epoch (relu dense layers, SGD with
momentum) as "baseline": "vs baseline" is the rich epoch's speed over the
plain one's, and the bound column holds the least it should be (1 / 1.5).
PyTorch, when installed, runs the same rich network (``BatchNorm1d``,
``Dropout``, ``torch.optim.Adam``) for comparison.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any, Callable

from . import bench
from .bench import NETWORKS, Row, _bprop_model, _data, _interleaved, _torch_epoch
from .layers import BatchNorm, Dense, Dropout
from .model import Sequential
from .optimizers import SGD, Adam

#: The slowest the rich epoch may be, as a multiple of the plain one.
SLOWDOWN_BOUND = 1.5
_RATE = 0.2


def _rich_model(sizes: Sequence[int]) -> Sequential:
    layers: list[Any] = []
    for units in sizes[1:-1]:
        layers += [Dense(units), BatchNorm(activation="relu"), Dropout(_RATE)]
    return Sequential([*layers, Dense(sizes[-1])], seed=0).build(sizes[0], "cross_entropy")


def _torch_rich(sizes: Sequence[int]) -> Any:
    torch = bench.torch
    torch.manual_seed(0)
    layers: list[Any] = []
    for n_in, n_out in zip(sizes[:-2], sizes[1:-1]):
        layers += [
            torch.nn.Linear(n_in, n_out),
            torch.nn.BatchNorm1d(n_out),
            torch.nn.ReLU(),
            torch.nn.Dropout(_RATE),
        ]
    layers.append(torch.nn.Linear(sizes[-2], sizes[-1]))
    return torch.nn.Sequential(*layers)


def bench_toolkit(quick: bool = False, repeats: int = 3) -> list[Row]:
    """Samples per second of the rich and the plain mnist epoch."""
    sizes, batch, n = NETWORKS["mnist"]
    if quick:
        n = 8 * batch
    x, y = _data(sizes, n)
    rich, plain = _rich_model(sizes), _bprop_model(sizes)
    fit = dict(loss="cross_entropy", epochs=1, batch_size=batch, seed=1)
    fns: dict[str, Callable[[], object]] = {
        "bprop": partial(rich.fit, x, y, optimizer=Adam(lr=1e-3), **fit),
        "baseline": partial(plain.fit, x, y, optimizer=SGD(lr=0.01, momentum=0.9), **fit),
    }
    torch = bench.torch
    if torch is not None:
        model = _torch_rich(sizes)
        model.train()
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        tx, ty = torch.from_numpy(x), torch.from_numpy(y.astype("int64"))
        fns["torch"] = partial(_torch_epoch, model, opt, tx, ty, batch)
    times = _interleaved(fns, 1 if quick else repeats)
    figures = {peer: n / t for peer, t in times.items()}
    figures["bound"] = figures["baseline"] / SLOWDOWN_BOUND
    label = f"mnist {'-'.join(map(str, sizes))} b={batch}: adam + batch norm + dropout"
    note = (
        "baseline: the plain epoch (relu dense layers, SGD momentum); "
        f"bound: its speed / {SLOWDOWN_BOUND}"
    )
    return [Row("toolkit", label, "samples/s", figures, note=note)]

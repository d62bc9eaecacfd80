"""Side-by-side benchmarks of bprop against NumPy and PyTorch.

Every workload runs bprop and each peer in one process on the same data,
interleaved (bprop, peer, bprop, peer, ...), and keeps the best of several
repeats, so that a noisy machine disturbs all of them alike. The result
is a list of rows with absolute figures and the ratio of bprop to each
peer (above 1 means bprop is faster). PyTorch is optional: without it its
columns are left empty.

Run it as ``bprop bench`` (``--json`` for machine-readable output).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any, Callable

import numpy as np

from . import _core, cpu_info, set_num_threads
from .layers import Dense
from .model import Sequential
from .optimizers import SGD

torch: Any = None  # the optional peer, imported by load_torch()


def load_torch() -> Any:
    """Import PyTorch if it is installed (once); None otherwise. Imported
    on demand so that the memory benchmark's process stays lean."""
    global torch
    if torch is None:
        try:
            import torch as module
        except ImportError:
            return None
        torch = module
    return torch


@dataclass
class Row:
    """One measured workload: figures per implementation and ratios."""

    group: str
    name: str
    unit: str  # what the figures count; larger is better unless `lower`
    figures: dict[str, float] = field(default_factory=dict)
    lower_is_better: bool = False
    note: str = ""

    def ratio(self, peer: str) -> float | None:
        """bprop's speed relative to `peer` (> 1: bprop is faster)."""
        mine, theirs = self.figures.get("bprop"), self.figures.get(peer)
        if mine is None or theirs is None or mine == 0 or theirs == 0:
            return None
        return theirs / mine if self.lower_is_better else mine / theirs


def _interleaved(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Best wall time in seconds of each function, run in turns."""
    for fn in fns.values():  # warm up: page in buffers, pack caches
        fn()
    best = {name: float("inf") for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


# ---------------------------------------------------------------------------
# GEMM
# ---------------------------------------------------------------------------


def _gemm_cases(quick: bool) -> list[tuple[str, int, int, int, bool, bool]]:
    """(label, m, n, k, trans_a, trans_b) of C = op(A) @ op(B)."""
    sizes = (128, 256) if quick else (256, 512, 1024, 2048)
    cases = [(f"square n={n}", n, n, n, False, False) for n in sizes]
    mlp = [(128, 784, 256)] if quick else [(128, 784, 256), (256, 4096, 4096)]
    for batch, n_in, n_out in mlp:
        shape = f"{batch}x{n_in}x{n_out}"
        cases += [
            (f"{shape} forward  x@W", batch, n_out, n_in, False, False),
            (f"{shape} dW = x^T@dz", n_in, n_out, batch, True, False),
            (f"{shape} dx = dz@W^T", batch, n_in, n_out, False, True),
        ]
    return cases


def bench_gemm(quick: bool = False, repeats: int = 5) -> list[Row]:
    from . import kernels

    rng = np.random.default_rng(0)
    rows = []
    for label, m, n, k, trans_a, trans_b in _gemm_cases(quick):
        a = rng.standard_normal((k, m) if trans_a else (m, k), dtype=np.float32)
        b = rng.standard_normal((n, k) if trans_b else (k, n), dtype=np.float32)
        out = np.empty((m, n), np.float32)
        op_a, op_b = (a.T if trans_a else a), (b.T if trans_b else b)
        fns: dict[str, Callable[[], object]] = {
            "bprop": partial(kernels.sgemm, a, b, trans_a, trans_b, out=out),
            "numpy": partial(np.matmul, op_a, op_b, out=out),
        }
        if torch is not None:
            ta, tb, tout = torch.from_numpy(op_a), torch.from_numpy(op_b), torch.from_numpy(out)
            fns["torch"] = partial(torch.mm, ta, tb, out=tout)
        times = _interleaved(fns, repeats)
        flops = 2.0 * m * n * k
        rows.append(
            Row("sgemm", label, "GFLOP/s", {p: flops / t / 1e9 for p, t in times.items()})
        )
    return rows


# ---------------------------------------------------------------------------
# Training epochs
# ---------------------------------------------------------------------------

#: name: (layer sizes, batch size, samples)
NETWORKS = {
    "tiny": ((64, 32, 10), 32, 20_000),
    "mnist": ((784, 256, 128, 10), 128, 60_000),
    "wide": ((1024, 4096, 4096, 1024), 256, 8_192),
}

_LR, _MOMENTUM = 0.01, 0.9


def _data(sizes: Sequence[int], n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, sizes[0]), dtype=np.float32)
    y = rng.integers(0, sizes[-1], n).astype(np.int32)
    return x, y


def _bprop_model(sizes: Sequence[int]) -> Sequential:
    layers = [Dense(units, activation="relu") for units in sizes[1:-1]]
    return Sequential([*layers, Dense(sizes[-1])], seed=0).build(sizes[0], "cross_entropy")


class NumpyMLP:
    """The same network in plain NumPy: relu layers, softmax cross-entropy,
    SGD with momentum; the peer that shows what vectorised Python costs."""

    def __init__(self, sizes: Sequence[int]) -> None:
        rng = np.random.default_rng(0)
        self.w = [
            (rng.standard_normal((i, o), dtype=np.float32) * np.sqrt(2.0 / i)).astype(np.float32)
            for i, o in zip(sizes[:-1], sizes[1:])
        ]
        self.b = [np.zeros(o, np.float32) for o in sizes[1:]]
        self.vw = [np.zeros_like(w) for w in self.w]
        self.vb = [np.zeros_like(b) for b in self.b]

    def forward(self, x: np.ndarray) -> list[np.ndarray]:
        acts = [x]
        for i, (w, b) in enumerate(zip(self.w, self.b)):
            z = acts[-1] @ w
            z += b
            if i < len(self.w) - 1:
                np.maximum(z, 0.0, out=z)
            acts.append(z)
        return acts

    def step(self, x: np.ndarray, y: np.ndarray) -> None:
        acts = self.forward(x)
        logits = acts[-1]
        logits -= logits.max(axis=1, keepdims=True)
        np.exp(logits, out=logits)
        logits /= logits.sum(axis=1, keepdims=True)
        logits[np.arange(len(y)), y] -= 1.0
        dz = logits / np.float32(len(y))
        for i in range(len(self.w) - 1, -1, -1):
            dw = acts[i].T @ dz
            db = dz.sum(axis=0)
            if i > 0:
                dz = (dz @ self.w[i].T) * (acts[i] > 0)
            for v, g, p in ((self.vw[i], dw, self.w[i]), (self.vb[i], db, self.b[i])):
                v *= _MOMENTUM
                v += g
                p -= _LR * v

    def epoch(self, x: np.ndarray, y: np.ndarray, batch: int, seed: int) -> None:
        order = np.random.default_rng(seed).permutation(len(x))
        for start in range(0, len(x), batch):
            rows = order[start : start + batch]
            self.step(x[rows], y[rows])


def _torch_model(sizes: Sequence[int]) -> Any:
    torch.manual_seed(0)
    layers: list[Any] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(torch.nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(torch.nn.ReLU())
    return torch.nn.Sequential(*layers)


def _torch_epoch(model: Any, opt: Any, x: Any, y: Any, batch: int) -> None:
    loss_fn = torch.nn.functional.cross_entropy
    order = torch.randperm(len(x))
    for start in range(0, len(x), batch):
        rows = order[start : start + batch]
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x[rows]), y[rows]).backward()
        opt.step()


def _torch_predict(model: Any, x: Any) -> Any:
    with torch.no_grad():
        return model(x)


def _set_threads(n: int) -> None:
    set_num_threads(n)
    if torch is not None:
        torch.set_num_threads(n)


def bench_epochs(
    networks: Sequence[str] = ("tiny", "mnist", "wide"),
    quick: bool = False,
    repeats: int = 3,
    threads: Sequence[int] = (),
) -> list[Row]:
    """Samples per second of one training epoch per network, at the
    current thread count and then at each count in `threads`."""
    rows = []
    default_threads = _core.get_num_threads()
    for name in networks:
        sizes, batch, n = NETWORKS[name]
        if quick:
            n = min(n, 4 * batch)
        x, y = _data(sizes, n)
        counts = [default_threads, *[t for t in threads if t != default_threads]]
        for count in counts:
            _set_threads(count)
            model = _bprop_model(sizes)
            opt = SGD(lr=_LR, momentum=_MOMENTUM)
            mlp = NumpyMLP(sizes)
            fns: dict[str, Callable[[], object]] = {
                "bprop": partial(
                    model.fit, x, y, loss="cross_entropy", optimizer=opt, epochs=1,
                    batch_size=batch, seed=1,
                ),
                "numpy": partial(mlp.epoch, x, y, batch, 1),
            }
            if torch is not None:
                tmodel = _torch_model(sizes)
                topt = torch.optim.SGD(tmodel.parameters(), lr=_LR, momentum=_MOMENTUM)
                tx, ty = torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))
                fns["torch"] = partial(_torch_epoch, tmodel, topt, tx, ty, batch)
            reps = 1 if name == "wide" and not quick else repeats
            times = _interleaved(fns, reps)
            label = f"{name} {'-'.join(map(str, sizes))} b={batch} threads={count}"
            rows.append(
                Row("epoch", label, "samples/s", {p: n / t for p, t in times.items()})
            )
    _set_threads(default_threads)
    return rows


# ---------------------------------------------------------------------------
# Prediction latency
# ---------------------------------------------------------------------------


def bench_predict(repeats: int = 2000) -> list[Row]:
    rows = []
    for sizes in ((64, 32, 10), (784, 256, 128, 10)):
        model = _bprop_model(sizes)
        mlp = NumpyMLP(sizes)
        tmodel = _torch_model(sizes) if torch is not None else None
        for batch in (1, 32):
            x, _ = _data(sizes, batch)
            fns: dict[str, Callable[[], object]] = {
                "bprop": partial(model.predict_proba, x),
                "numpy": partial(mlp.forward, x),
            }
            if tmodel is not None:
                fns["torch"] = partial(_torch_predict, tmodel, torch.from_numpy(x))
            best = _best_per_call(fns, repeats)
            rows.append(
                Row(
                    "predict",
                    f"{'-'.join(map(str, sizes))} rows={batch}",
                    "µs/call",
                    {p: t * 1e6 for p, t in best.items()},
                    lower_is_better=True,
                )
            )
    return rows


def _best_per_call(fns: dict[str, Callable[[], object]], calls: int) -> dict[str, float]:
    """Best mean time per call over blocks of calls, interleaved."""
    block = max(1, calls // 10)
    best = {name: float("inf") for name in fns}
    for fn in fns.values():
        fn()
    for _ in range(10):
        for name, fn in fns.items():
            start = time.perf_counter()
            for _ in range(block):
                fn()
            best[name] = min(best[name], (time.perf_counter() - start) / block)
    return best


# ---------------------------------------------------------------------------
# Memory
# ---------------------------------------------------------------------------

# NOTE: the peak is read from /proc (VmHWM, this process's own high-water
# mark): getrusage's ru_maxrss survives exec on Linux, so a child started
# from a large benchmark process would report the parent's peak.
_MEMORY_SCRIPT = """
import resource, sys
import bprop
from bprop.bench import _bprop_model, _data, NETWORKS

def peak_bytes():
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

sizes, batch, n = NETWORKS[sys.argv[1]]
base = peak_bytes()
x, y = _data(sizes, n)
model = _bprop_model(sizes)
model.fit(x, y, loss="cross_entropy", optimizer=bprop.SGD(lr=0.01, momentum=0.9),
          epochs=1, batch_size=batch, seed=1)
print(base, peak_bytes(), x.nbytes + y.nbytes, model.n_params * 4)
"""


def bench_memory(networks: Sequence[str] = ("mnist",)) -> list[Row]:
    """Peak resident memory of a training run in a fresh process, beside
    the bound: data + 4 x parameters + one batch of activations + 30 MB,
    on top of the interpreter with NumPy and bprop imported."""
    rows = []
    for name in networks:
        sizes, batch, _ = NETWORKS[name]
        out = subprocess.run(
            [sys.executable, "-c", _MEMORY_SCRIPT, name],
            capture_output=True, text=True, check=True, env=os.environ.copy(),
        ).stdout.split()
        base, peak, data, params = (int(v) for v in out)
        activations = batch * sum(sizes) * 4
        bound = data + 4 * params + activations + 30 * 2**20
        rows.append(
            Row(
                "memory",
                f"{name} training, peak RSS above the interpreter",
                "MB",
                {"bprop": (peak - base) / 2**20, "bound": bound / 2**20},
                lower_is_better=True,
                note=f"interpreter with numpy and bprop {base / 2**20:.0f} MB; "
                f"data {data / 2**20:.0f} MB, params {params / 2**20:.1f} MB",
            )
        )
    return rows


# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------

# "baseline": the serial way of doing a parallel workload (bench_parallel.py).
PEERS = ("numpy", "torch", "sklearn", "baseline", "bound")


def format_table(rows: Sequence[Row]) -> str:
    peers = [p for p in PEERS if any(p in row.figures for row in rows)]
    head = ["workload", "unit", "bprop", *peers, *[f"vs {p}" for p in peers if p != "bound"]]
    lines = []
    for row in rows:
        cells = [f"{row.group}: {row.name}", row.unit, _fmt(row.figures.get("bprop"))]
        cells += [_fmt(row.figures.get(p)) for p in peers]
        cells += [_ratio(row.ratio(p)) for p in peers if p != "bound"]
        lines.append(cells)
    widths = [max(len(str(c)) for c in col) for col in zip(head, *lines)]
    out = ["  ".join(h.ljust(w) for h, w in zip(head, widths))]
    out.append("  ".join("-" * w for w in widths))
    out += ["  ".join(str(c).ljust(w) for c, w in zip(cells, widths)) for cells in lines]
    out += [f"  {row.name}: {row.note}" for row in rows if row.note]
    return "\n".join(out)


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 1000:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


GROUPS = ("gemm", "epoch", "predict", "memory", "many", "mpi", "sklearn", "toolkit")


def run(
    groups: Sequence[str] = GROUPS,
    quick: bool = False,
    networks: Sequence[str] = ("tiny", "mnist", "wide"),
    threads: Sequence[int] = (),
) -> list[Row]:
    load_torch()
    rows: list[Row] = []
    if "gemm" in groups:
        rows += bench_gemm(quick=quick, repeats=2 if quick else 5)
    if "epoch" in groups:
        rows += bench_epochs(networks, quick=quick, repeats=1 if quick else 3, threads=threads)
    if "predict" in groups:
        rows += bench_predict(repeats=50 if quick else 2000)
    if "memory" in groups:
        rows += bench_memory(("tiny",) if quick else ("mnist",))
    if "many" in groups or "mpi" in groups:
        from . import bench_parallel

        if "many" in groups:
            rows += bench_parallel.bench_train_many(quick=quick)
        if "mpi" in groups:
            rows += bench_parallel.bench_mpi(quick=quick)
    if "sklearn" in groups:
        from .bench_sklearn import bench_sklearn

        rows += bench_sklearn(quick=quick)
    if "toolkit" in groups:
        from .bench_toolkit import bench_toolkit

        rows += bench_toolkit(quick=quick)
    return rows


def environment() -> dict[str, Any]:
    info = cpu_info()
    info["numpy"] = np.__version__
    info["torch"] = load_torch().__version__ if load_torch() is not None else None
    return info


def to_json(rows: Sequence[Row]) -> str:
    data = {
        "environment": environment(),
        "rows": [
            {**asdict(row), "ratios": {p: row.ratio(p) for p in ("numpy", "torch", "baseline")}}
            for row in rows
        ],
    }
    return json.dumps(data, indent=2)

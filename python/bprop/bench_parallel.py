"""Benchmarks of training in parallel: many models at once, and MPI ranks.

Part of ``bprop bench`` (groups "many" and "mpi"). Each row's "baseline"
column is the serial way of doing the same work, so "vs baseline" is the
speedup:

- many: K small models trained by ``train_many`` (one thread each)
  against the same K fits one after another with 2 threads each.
- mpi: one epoch of the mnist workload (784-256-128-10, batch 128) with
  2 MPI ranks of 1 thread each against 1 rank of 1 thread, each in a job
  of its own started by mpirun (or mpiexec). Skipped, with a note, when
  mpi4py or a launcher is missing.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from typing import Callable

from . import _core, distributed
from .bench import NETWORKS, Row, _bprop_model, _data, _interleaved
from .optimizers import SGD
from .parallel import train_many

#: name: (layer sizes, batch size, samples) of the models train_many trains
SMALL_NETWORKS = {
    "tiny": ((64, 32, 10), 32, 5_000),
    "small": ((64, 64, 10), 32, 5_000),
}


def bench_train_many(
    networks: Sequence[str] = ("tiny", "small"), quick: bool = False, repeats: int = 3
) -> list[Row]:
    """Models per second: train_many against one fit after another."""
    count = 4 if quick else 8
    epochs = 1 if quick else 5
    rows = []
    before = _core.get_num_threads()
    _core.set_num_threads(2)
    try:
        for name in networks:
            sizes, batch, n = SMALL_NETWORKS[name]
            x, y = _data(sizes, 1_000 if quick else n)
            kwargs = dict(loss="cross_entropy", optimizer=SGD(lr=0.01, momentum=0.9),
                          epochs=epochs, batch_size=batch, seed=1)
            together = [_bprop_model(sizes) for _ in range(count)]
            apart = [_bprop_model(sizes) for _ in range(count)]
            def side_by_side(models=together, x=x, y=y, kwargs=kwargs) -> object:
                return train_many(models, x, y, **kwargs)

            def one_by_one(models=apart, x=x, y=y, kwargs=kwargs) -> object:
                return [model.fit(x, y, **kwargs) for model in models]

            fns: dict[str, Callable[[], object]] = {
                "bprop": side_by_side, "baseline": one_by_one
            }
            times = _interleaved(fns, 1 if quick else repeats)
            rows.append(Row(
                "train_many",
                f"{count} x {name} {'-'.join(map(str, sizes))} b={batch}, {epochs} epochs",
                "models/s",
                {p: count / t for p, t in times.items()},
                note=f"baseline: one fit after another, 2 threads each; bprop: train_many, "
                f"{min(count, _cores())} at once, 1 thread each",
            ))
    finally:
        _core.set_num_threads(before)
    return rows


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


# One rank's part of the MPI benchmark: the best of `repeats` one-epoch fits
# after a short warm-up, printed by rank 0.
_MPI_SCRIPT = """
import sys, time
import bprop
from bprop.bench import NETWORKS, _bprop_model, _data
from mpi4py import MPI

name, n, repeats = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
sizes, batch, _ = NETWORKS[name]
x, y = _data(sizes, n)
model = _bprop_model(sizes)
args = dict(loss="cross_entropy", optimizer=bprop.SGD(lr=0.01, momentum=0.9),
            batch_size=batch, seed=1, distributed=True)
model.fit(x[: 8 * batch], y[: 8 * batch], epochs=1, **args)
best = float("inf")
for _ in range(repeats):
    MPI.COMM_WORLD.Barrier()
    start = time.perf_counter()
    model.fit(x, y, epochs=1, **args)
    best = min(best, MPI.COMM_WORLD.allreduce(time.perf_counter() - start, op=MPI.MAX))
if MPI.COMM_WORLD.Get_rank() == 0:
    print("samples/s:", n / best, "threads:", bprop.get_num_threads())
"""


def _mpi_rate(ranks: int, name: str, n: int, repeats: int) -> float:
    env = os.environ.copy()
    env["OMP_NUM_THREADS"] = "1"
    command = [*distributed.launcher(ranks), sys.executable, "-c", _MPI_SCRIPT,
               name, str(n), str(repeats)]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=1800,
                          stdin=subprocess.DEVNULL)
    for line in done.stdout.splitlines():
        if line.startswith("samples/s:"):
            return float(line.split()[1])
    raise RuntimeError(f"{' '.join(command[:-4])} ... failed:\n{done.stdout}\n{done.stderr}")


def bench_mpi(quick: bool = False, ranks: int = 2) -> list[Row]:
    """Samples per second of an mnist epoch: `ranks` ranks against one."""
    name = "mnist"
    sizes, batch, n = NETWORKS[name]
    n = 16 * batch if quick else n
    label = f"{name} {'-'.join(map(str, sizes))} b={batch}, {ranks} ranks x 1 thread"
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return [Row("mpi", label, "samples/s", note="skipped: mpi4py is not installed")]
    if distributed.launcher(ranks) is None:
        return [Row("mpi", label, "samples/s", note="skipped: no mpirun or mpiexec")]
    repeats = 1 if quick else 3
    figures = {"bprop": _mpi_rate(ranks, name, n, repeats),
               "baseline": _mpi_rate(1, name, n, repeats)}
    note = f"baseline: 1 rank x 1 thread; {_cores()} cores"
    return [Row("mpi", label, "samples/s", figures, note=note)]

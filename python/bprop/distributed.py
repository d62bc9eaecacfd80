"""Training across processes with MPI, and batch prediction with Dask.

Data-parallel training runs one copy of a model in every MPI rank:
``model.fit(X, y, ..., distributed=True)`` in a script started by
``mpirun -n 4 python script.py``, or ``mpirun -n 4 bprop train
--distributed``. Every rank passes the same data; rank 0's parameters
are broadcast at the start, each rank computes the gradient of its shard
of every global batch, the gradients are summed across ranks, and every
rank applies the same update. MPI comes from mpi4py (``pip install
"bprop[mpi]"``) over Open MPI or MPICH.

``predict_dask`` predicts a Dask array block by block, on any Dask
scheduler.

Design decisions:
- The C core stays free of MPI. A step is ``bp_net_gradient`` on this
  rank's rows, an in-place all-reduce of the gradient slab (a NumPy
  array over the network's own memory: no copy) and
  ``bp_net_apply_update`` with the fit's optimizer and schedule, so every
  optimizer, clipping and weight decay see the whole batch's gradient as
  in one process.
- Every rank draws the shuffled order of a one-process epoch
  (``bp_shuffle_order`` with the same seed and epoch). A global batch of
  B rows is cut into contiguous shards: rank r of n takes rows
  [B r / n, B (r + 1) / n) of it.
- A shard's gradient is the mean over its rows; it is weighted by
  rows / B before the sum. With one rank the weight is exactly 1, so the
  result is bitwise the one-process result; with two ranks the sum of two
  terms does not depend on the order MPI adds them in.
- ``reduction="ordered"`` gathers every rank's gradient and adds them in
  rank order on every rank: bitwise reproducible for any MPI library and
  any rank count, at the cost of an all-gather instead of an all-reduce.
- A rank whose loss is not finite writes NaN into its gradient before the
  all-reduce, so every rank sees it and all stop at the same step rather
  than leaving the others waiting in the next collective call.
- The loss and the running metric's sums are summed locally and reduced
  once per epoch, with a flag that says whether any rank's parameters or
  optimizer state became NaN or infinite.
- Callbacks run on every rank. After each of their events the ranks
  all-reduce two flags, "stop" and "raised", so that one rank's decision
  is every rank's and no rank waits in a collective call that another
  left. Ranks may pass different callbacks: batch events happen on every
  rank as soon as one rank's callbacks want them.
- Diagnostics read the summed gradient and the parameters, the same on
  every rank, and need no communication.
"""

from __future__ import annotations

import logging
import os
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable

import numpy as np
from tqdm.auto import tqdm

from . import _core
from ._optim_run import OptimizerRun
from ._validation import as_matrix
from .callbacks import Callback, CallbackList, History
from .diagnostics import LayerProbe
from .layers import widths as layer_widths
from .optimizers import CoreOptimizer

DivergenceError = _core.DivergenceError

REDUCTIONS = ("sum", "ordered")

_log = logging.getLogger("bprop")


def mpi() -> Any:
    """The ``mpi4py.MPI`` module; ImportError with the fix if it is missing."""
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise ImportError(
            "distributed training needs mpi4py and an MPI library: "
            "pip install 'bprop[mpi]' mpich, or install Open MPI "
            "(apt-get install openmpi-bin libopenmpi-dev) and then 'bprop[mpi]'"
        ) from exc
    return MPI


def world() -> Any:
    """``MPI.COMM_WORLD``: every process of the job."""
    return mpi().COMM_WORLD


@dataclass(frozen=True)
class DataParallel:
    """How ``fit(..., distributed=...)`` trains across processes.

    ``distributed=True`` is ``DataParallel()``: all ranks of
    ``MPI.COMM_WORLD``, gradients summed by ``MPI_Allreduce``.

    Parameters
    ----------
    comm : mpi4py communicator, optional
        The ranks that train together; ``MPI.COMM_WORLD`` when None.
    reduction : str
        "sum": one in-place ``Allreduce`` per step, in whatever order the
        MPI library adds. "ordered": an ``Allgather``, then a sum in rank
        order on every rank, bitwise reproducible for any MPI library.
    """

    comm: Any = None
    reduction: str = "sum"

    def __post_init__(self) -> None:
        if self.reduction not in REDUCTIONS:
            raise ValueError(
                f"unknown reduction {self.reduction!r}; choose one of {', '.join(REDUCTIONS)}"
            )

    def communicator(self) -> Any:
        return self.comm if self.comm is not None else world()


def as_plan(distributed: Any) -> DataParallel | None:
    """The DataParallel that a ``distributed`` argument of fit means."""
    if distributed is None or distributed is False:
        return None
    if distributed is True:
        return DataParallel()
    if isinstance(distributed, DataParallel):
        return distributed
    if hasattr(distributed, "Allreduce") and hasattr(distributed, "Get_rank"):
        return DataParallel(comm=distributed)
    raise ValueError(
        f"distributed must be True, False, an MPI communicator or a DataParallel, "
        f"got {distributed!r}"
    )


def shard(rows: int, size: int, rank: int) -> tuple[int, int]:
    """The rows [begin, end) of a batch of `rows` that `rank` of `size` takes."""
    return rows * rank // size, rows * (rank + 1) // size


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def threads_per_rank(comm: Any) -> int:
    """Threads a rank should use: at most its share of this machine's cores
    among the ranks running on it (at least 1), unless OMP_NUM_THREADS is
    set, which then wins."""
    current = _core.get_num_threads()
    if "OMP_NUM_THREADS" in os.environ:
        return current
    local = comm.Split_type(mpi().COMM_TYPE_SHARED)
    try:
        share = max(1, _cores() // local.Get_size())
    finally:
        local.Free()
    return min(current, share)


def _check_same_everywhere(comm: Any, facts: dict[str, Any]) -> None:
    """ValueError on every rank unless every rank has the same `facts`."""
    every = comm.allgather(facts)
    for name in facts:
        differ = [r for r, other in enumerate(every) if other[name] != every[0][name]]
        if differ:
            raise ValueError(
                f"distributed training needs the same {name} on every rank: rank 0 has "
                f"{every[0][name]!r}, rank {differ[0]} has {every[differ[0]][name]!r}"
            )


# Rows of the data, evenly spaced, whose CRC-32 every rank compares.
_SAMPLE_ROWS = 4096


def _fingerprint(array: np.ndarray) -> int:
    """A CRC-32 of a sample of rows (all of them in a small array): equal
    data give equal values on any machine, and a sample costs little."""
    if len(array) > _SAMPLE_ROWS:
        array = array[np.linspace(0, len(array) - 1, _SAMPLE_ROWS).astype(np.int64)]
    return zlib.crc32(memoryview(np.ascontiguousarray(array)).cast("B"))


class _RunningMetric:
    """The training metric of one epoch ("argmax", "sign" or "r2", as
    ``Sequential._running_metric`` names it), added up over this rank's
    rows from each batch's outputs before its update, as the C core's
    epoch monitor adds it up in one process; the sums are then added
    across ranks."""

    def __init__(self, kind: str, net: Any, most: int) -> None:
        self.kind = kind
        self.last = len(net.layers()) - 1
        self.out = np.empty((most, net.n_outputs), np.float32)
        # argmax and sign: the rows right; r2: the sums of t, t^2 and
        # (t - p)^2 per output, shifted by the epoch's first targets.
        self.sums = np.zeros(3 * net.n_outputs if kind == "r2" else 1)
        self.shift = np.zeros(net.n_outputs)

    def start(self, first: np.ndarray) -> None:
        """A new epoch whose first row has the targets `first`."""
        self.sums.fill(0.0)
        if self.kind == "r2":
            self.shift[:] = first

    def add(self, net: Any, by: np.ndarray) -> None:
        """Counts the rows `net.gradient` was just called on."""
        out = self.out[: len(by)]
        net.layer_output(self.last, out)
        if self.kind == "argmax":
            # Without labels the targets are class probabilities.
            labels = by if by.dtype == np.int32 else by.argmax(axis=1)
            self.sums[0] += np.count_nonzero(out.argmax(axis=1) == labels)
        elif self.kind == "sign":
            self.sums[0] += np.count_nonzero(np.all(by == (out > 0), axis=1))
        else:
            n = len(self.shift)
            t = by.astype(np.float64) - self.shift
            p = out.astype(np.float64) - self.shift
            self.sums[:n] += t.sum(axis=0)
            self.sums[n : 2 * n] += (t * t).sum(axis=0)
            self.sums[2 * n :] += ((t - p) ** 2).sum(axis=0)

    def value(self, sums: np.ndarray, rows: int) -> float:
        """The metric from `sums`, this class's sums added across ranks."""
        if self.kind != "r2":
            return float(sums[0]) / rows
        n, score = len(self.shift), 0.0
        for j in range(n):
            total = sums[n + j] - sums[j] * sums[j] / rows
            residual = sums[2 * n + j]
            if total > 0:
                score += 1.0 - residual / total
            elif residual == 0:
                score += 1.0
        return score / n


class _LayerSums:
    """Per-layer gradient norms and update ratios over one epoch's steps,
    added up as the C core's epoch monitor adds them up in one process.
    Every rank adds the same numbers: the summed gradient and the same
    parameters. ``layer_stats`` is what ``LayerProbe`` reads."""

    def __init__(self, net: Any) -> None:
        self.net, self.grads = net, net.grads_array()
        self.spans = [slice(w_off, w_off + n_w) for w_off, n_w, _b, _n in net.spans()]
        self.before = np.empty(net.n_params, np.float32)
        self.after = np.empty(net.n_params, np.float32)
        self.grad_sq = np.zeros(len(self.spans))
        self.ratio = np.zeros(len(self.spans))
        self.batches = 0

    def start(self) -> None:
        self.net.get_params(self.before)
        self.grad_sq.fill(0.0)
        self.ratio.fill(0.0)
        self.batches = 0

    def add(self) -> None:
        """Counts the update just made."""
        self.net.get_params(self.after)
        for layer, span in enumerate(self.spans):
            g = self.grads[span].astype(np.float64)
            w = self.before[span].astype(np.float64)
            d = self.after[span] - w
            self.grad_sq[layer] += g @ g
            w2 = w @ w
            if w2 > 0:
                self.ratio[layer] += float(np.sqrt((d @ d) / w2))
        self.before, self.after = self.after, self.before
        self.batches += 1

    def layer_stats(self) -> list[tuple[float, float]] | None:
        if self.batches == 0:
            return None
        return [
            (float(np.sqrt(g / self.batches)), float(r / self.batches))
            for g, r in zip(self.grad_sq, self.ratio)
        ]


class _Trainer:
    """One distributed fit: the shard buffers, the step loop, and the
    agreement of the ranks on the callbacks' decisions."""

    def __init__(self, model: Any, x: np.ndarray, targets: np.ndarray, opt: CoreOptimizer,
                 batch: int, shuffle: bool, plan: DataParallel) -> None:
        self.MPI = mpi()
        self.comm = plan.communicator()
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        self.ordered = plan.reduction == "ordered"
        self.model, self.net, self.opt = model, model._net, opt
        self.config, self.sched = opt.config(), None
        self.x, self.targets = x, targets
        self.labels = targets.dtype == np.int32
        self.batch, self.shuffle = batch, shuffle
        self.batches = -(-len(x) // batch)
        self.order = np.arange(len(x), dtype=np.int64)
        self.grads = self.net.grads_array()
        self.most = -(-batch // self.size)
        self.bx = np.empty((self.most, x.shape[1]), np.float32)
        self.by = np.empty((self.most, *targets.shape[1:]), targets.dtype)
        self.parts = np.empty((self.size, len(self.grads)), np.float32) if self.ordered else None
        # Set by fit: the optimizer's epochs, the batch callbacks' hook,
        # the running metric and the layer statistics (None: not wanted).
        self.run: OptimizerRun | None = None
        self.hook: Callable[[int, int, float], bool] | None = None
        self.metric: _RunningMetric | None = None
        self.layer_sums: _LayerSums | None = None
        # Batches and rows trained in the current epoch.
        self.done = self.rows_done = 0

    def broadcast_state(self, shuffle_seed: int) -> int:
        """Rank 0's parameters, optimizer state, seeds and counters
        everywhere; returns the shuffle seed every rank uses."""
        model, net = self.model, self.net
        state = (
            shuffle_seed,
            model.seed,
            model._epochs_done,
            model._steps_done,
            net.optimizer_step,
            net.has_state(1),
        )
        (shuffle_seed, model.seed, model._epochs_done, model._steps_done, step, second) = (
            self.comm.bcast(state, root=0)
        )
        net.optimizer_step = step
        slabs = [(net.get_params, net.set_params), (net.get_velocity, net.set_velocity)]
        if second:
            slabs.append((partial(net.get_state, 1), partial(net.set_state, 1)))
        elif net.has_state(1):
            net.set_state(1, np.zeros(net.n_params, np.float32))
        for get, put in slabs:
            values = np.empty(net.n_params, np.float32)
            get(values)
            self.comm.Bcast(values, root=0)
            put(values)
        return shuffle_seed

    def call(self, method: Callable[..., Any], *args: Any) -> bool:
        """Calls a callback method on this rank, then agrees with the other
        ranks on what the callbacks decided: whether to stop (any rank that
        stops stops all), and whether one raised (then every rank raises)."""
        error = None
        try:
            method(*args)
        except BaseException as exc:
            error = exc
        flags = np.array([self.model.stop_training, error is not None], np.int32)
        if self.size > 1:
            self.comm.Allreduce(self.MPI.IN_PLACE, flags, op=self.MPI.MAX)
        if flags[1]:
            said = self.comm.allgather(None if error is None else f"{error!r}")
            if error is not None:
                raise error
            rank = next(r for r, text in enumerate(said) if text is not None)
            raise RuntimeError(
                f"training stopped on every rank: a callback on rank {rank} raised {said[rank]}"
            )
        self.model.stop_training = bool(flags[0])
        return self.model.stop_training

    def _shard(self, start: int, rows: int) -> tuple[np.ndarray, np.ndarray]:
        begin, end = shard(rows, self.size, self.rank)
        if not self.shuffle:
            return self.x[start + begin : start + end], self.targets[start + begin : start + end]
        rows_here = self.order[start + begin : start + end]
        bx, by = self.bx[: len(rows_here)], self.by[: len(rows_here)]
        np.take(self.x, rows_here, axis=0, out=bx)
        np.take(self.targets, rows_here, axis=0, out=by)
        return bx, by

    def _reduce(self) -> None:
        if self.size == 1:
            return
        if self.ordered:
            self.comm.Allgather(self.grads, self.parts)
            np.copyto(self.grads, self.parts[0])
            for part in self.parts[1:]:
                self.grads += part
        else:
            self.comm.Allreduce(self.MPI.IN_PLACE, self.grads, op=self.MPI.SUM)

    def step(self, start: int, rows: int) -> float:
        """One global batch; returns this rank's summed loss of its rows."""
        bx, by = self._shard(start, rows)
        local, problem = 0.0, None
        if len(bx) == 0:
            self.grads.fill(0.0)
        else:
            y_arg, label_arg = (None, by) if self.labels else (by, None)
            try:
                loss = self.net.gradient(bx, y_arg, label_arg)
            except DivergenceError as exc:
                problem = str(exc)
                self.grads[0] = np.nan
            else:
                local = loss * len(bx)
                if self.metric is not None:
                    self.metric.add(self.net, by)
                if len(bx) != rows:
                    self.grads *= np.float32(len(bx) / rows)
        self._reduce()
        if not np.isfinite(self.grads[0]):
            raise DivergenceError(problem or "the loss of another rank's rows is not finite")
        # The optimizer, its schedule, clipping and weight decay work on the
        # summed gradient exactly as a one-process step on the whole batch.
        self.net.apply_update(self.config, self.sched)
        if self.layer_sums is not None:
            self.layer_sums.add()
        return local

    def _batch_end(self, index: int, rows: int, local: float) -> bool:
        """The batch callbacks, with the batch's loss over all its rows;
        True when the ranks agreed to stop."""
        summed = np.array([local])
        if self.size > 1:
            self.comm.Allreduce(self.MPI.IN_PLACE, summed, op=self.MPI.SUM)
        return self.call(self.hook, index, rows, float(summed[0]) / rows)

    def epoch(self, shuffle_seed: int) -> dict[str, float]:
        """One pass over the data, or up to the batch after which the ranks
        agreed to stop; returns the mean loss over the rows trained and,
        when it can be added up batch by batch, the training metric."""
        n = len(self.x)
        if self.shuffle:
            _core.shuffle_order(self.order, shuffle_seed, self.model._epochs_done)
        self.sched = self.opt.schedule_config()
        if self.metric is not None:
            self.metric.start(self.targets[self.order[0]])
        if self.layer_sums is not None:
            self.layer_sums.start()
        self.done = self.rows_done = 0
        total = 0.0
        for index, start in enumerate(range(0, n, self.batch)):
            rows = min(self.batch, n - start)
            local = self.step(start, rows)
            total += local
            self.done += 1
            self.rows_done += rows
            if self.hook is not None and self._batch_end(index, rows, local):
                break

        self._average_running()
        extra = self.metric.sums if self.metric is not None else np.zeros(0)
        summed = np.concatenate(([total, float(not self.finite())], extra))
        self.comm.Allreduce(self.MPI.IN_PLACE, summed, op=self.MPI.SUM)
        if summed[1] > 0:
            raise DivergenceError("the weights or the optimizer state became NaN or infinite")
        values = {"loss": float(summed[0]) / self.rows_done}
        if self.metric is not None:
            values[self.model._metric_name()] = self.metric.value(summed[2:], self.rows_done)
        return values

    def _average_running(self) -> None:
        """Batch norm layers keep running averages of their own shard's
        batches; every rank takes their mean, so all predict alike."""
        size = self.comm.Get_size()
        for i, units in enumerate(layer_widths(self.model.layers, self.net.n_inputs)):
            stats = np.empty(2 * units, np.float32)
            if self.net.get_running(i, stats):
                stats64 = stats.astype(np.float64)
                self.comm.Allreduce(self.MPI.IN_PLACE, stats64, op=self.MPI.SUM)
                self.net.set_running(i, (stats64 / size).astype(np.float32))

    def finite(self) -> bool:
        """Whether this rank's parameters and optimizer state are finite."""
        net = self.net
        scratch = np.empty(net.n_params, np.float32)
        slabs = [net.get_params, net.get_velocity]
        if net.has_state(1):
            slabs.append(partial(net.get_state, 1))
        for get in slabs:
            get(scratch)
            if _core.first_nonfinite(scratch) >= 0:
                return False
        return True

    def agree(self) -> None:
        """Makes sure every rank ends with rank 0's parameters, bit for bit."""
        net = self.net
        params, velocity = np.empty(net.n_params, np.float32), np.empty(net.n_params, np.float32)
        net.get_params(params)
        net.get_velocity(velocity)
        sums = self.comm.allgather((zlib.crc32(params), zlib.crc32(velocity)))
        if len(set(sums)) > 1:
            _log.warning("ranks ended with different parameters; using rank 0's")
            self.comm.Bcast(params, root=0)
            self.comm.Bcast(velocity, root=0)
            net.set_params(params)
            net.set_velocity(velocity)


def _epoch_or_rollback(trainer: _Trainer, epoch: int, shuffle_seed: int,
                       x_val: np.ndarray | None, y_val: np.ndarray | None) -> dict[str, float]:
    """One epoch and its figures. On divergence, the weights and optimizer
    state of the epoch before are put back on every rank; after another
    exception (a callback's), the batches trained are kept, counted as an
    epoch, when they left the parameters finite, as in one process."""
    model, net, run = trainer.model, trainer.net, trainer.run
    snapshot = np.empty(net.n_params, np.float32)
    velocity = np.empty(net.n_params, np.float32)
    net.get_params(snapshot)
    net.get_velocity(velocity)
    run.save()
    try:
        values = trainer.epoch(shuffle_seed)
        metric = model._metric_name()
        if metric not in values:
            # Every rank holds the same weights, so all agree on these.
            values[metric] = model._evaluate_arrays(trainer.x, trainer.targets)[metric]
        if x_val is not None:
            values.update(model._evaluate_arrays(x_val, y_val, prefix="val_"))
    except DivergenceError as exc:
        net.set_params(snapshot)
        net.set_velocity(velocity)
        run.restore()
        error = DivergenceError(
            f"training diverged in epoch {epoch + 1}: {exc}. The weights were "
            "restored to the end of the previous epoch on every rank. Try a "
            "smaller learning rate, scaling the inputs, or a smaller momentum."
        )
        error.epoch, error.batch, error.layer = epoch, None, None
        raise error from None
    except BaseException:
        if trainer.done and trainer.finite():
            model._epochs_done += 1
            model._steps_done += trainer.done
        elif trainer.done:
            net.set_params(snapshot)
            net.set_velocity(velocity)
            run.restore()
        raise
    model._epochs_done += 1
    model._steps_done += trainer.done
    return values


def fit(model: Any, x: np.ndarray, targets: np.ndarray, x_val: np.ndarray | None,
        y_val: np.ndarray | None, opt: Any, epochs: int, batch_size: int | None,
        shuffle: bool, seed: int | None, verbose: bool, plan: DataParallel,
        callbacks: Sequence[Callback] = (), diagnostics: bool = False) -> History:
    """The epochs of ``Sequential.fit`` across the ranks of ``plan``.

    Called by fit with validated arrays; every rank returns the same
    History and holds the same parameters afterwards. Callbacks run on
    every rank with the same logs; ranks may pass different callbacks
    (for instance a ModelCheckpoint on rank 0 only).
    """
    if not isinstance(opt, CoreOptimizer):
        raise ValueError(
            "distributed training needs an optimizer that updates batch by batch (bprop.SGD, "
            f"Adam, AdamW, RMSprop or Adagrad), got {opt!r}"
        )
    batch = len(x) if batch_size is None else min(batch_size, len(x))
    trainer = _Trainer(model, x, targets, opt, batch, shuffle, plan)
    comm = trainer.comm
    if any(layer.kind == "batch_norm" for layer in model.layers):
        # Every rank normalises its own share of a batch, which batch norm
        # needs to be at least 2 rows: the last batch's share included.
        size = comm.Get_size()
        sizes = {batch, len(x) % batch or batch}
        smallest = min(b - a for rows in sizes for a, b in
                       (shard(rows, size, r) for r in range(size)))
        if smallest < 2:
            raise ValueError(
                f"batch norm needs at least 2 rows per rank in every batch; with "
                f"batch_size={batch}, {len(x)} rows and {size} ranks a rank gets {smallest}"
            )
    metric = model._metric_name()
    names = ["loss", metric, "lr"]
    if x_val is not None:
        names += ["val_loss", f"val_{metric}"]
    hooks = CallbackList(callbacks, model, {
        "epochs": epochs, "batches": trainer.batches, "batch_size": batch,
        "samples": len(x), "metrics": names,
    })  # fmt: skip
    _check_same_everywhere(comm, {
        "number of rows": len(x), "shape of X": x.shape, "shape of y": targets.shape,
        "batch size": batch, "shuffle": shuffle, "number of epochs": epochs,
        "optimizer": (type(opt).__name__, opt.config(), repr(opt.schedule)),
        "reduction": plan.reduction, "loss": model.loss.name,
        "layers": [layer.config() for layer in model.layers],
        "data (CRC-32 of X)": _fingerprint(x), "data (CRC-32 of y)": _fingerprint(targets),
        "validation data": None if x_val is None else (x_val.shape, _fingerprint(x_val)),
    })
    # Batch callbacks on any rank make every rank agree after every batch.
    batch_events = any(comm.allgather(hooks.wants_batches))

    # Predictions in other threads wait while the weights change, as they
    # do for a one-process fit: here too they see whole epochs only.
    lock = model._params_lock
    with lock.write():
        shuffle_seed = trainer.broadcast_state(model.seed if seed is None else seed)
        trainer.run = OptimizerRun(trainer.net, opt, trainer.batches, epochs)
    if batch_events:
        trainer.hook = hooks.batch_hook(trainer.batches, batch, len(x))
    kind = model._running_metric()
    if kind is not None:
        trainer.metric = _RunningMetric(kind, trainer.net, trainer.most)
    probe = None
    if diagnostics or hooks.needs_layer_stats:
        probe = LayerProbe(model, x, targets, shuffle_seed)
        trainer.layer_sums = _LayerSums(trainer.net)

    saved_threads = _core.get_local_num_threads()
    _core.set_local_num_threads(threads_per_rank(comm))
    history = History()
    model.history = history
    model.stop_training = False
    last: dict[str, Any] = {}
    bar = tqdm(total=epochs, disable=not verbose or trainer.rank != 0, unit="epoch",
               desc=f"train ({trainer.size} ranks)")
    try:
        trainer.call(hooks.on_train_begin)
        for epoch in range(epochs):
            if trainer.call(hooks.on_epoch_begin, epoch):
                break
            with lock.write():
                values = _epoch_or_rollback(trainer, epoch, shuffle_seed, x_val, y_val)
            trainer.run.end_epoch(values)
            if probe is not None:
                values["layers"] = probe.epoch_stats(trainer.layer_sums)
            history.record(epoch, values)
            last = values
            bar.set_postfix({k: f"{v:.4g}" for k, v in values.items() if k in names}, refresh=False)
            bar.update(1)
            if trainer.call(hooks.on_epoch_end, epoch, values):
                break
        # Before the final check, so that a callback that sets weights on
        # some ranks only (a restore of the best epoch) still leaves every
        # rank with rank 0's.
        trainer.call(hooks.on_train_end, last)
        with lock.write():
            trainer.agree()
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt):
            history.interrupted = True
        hooks.on_train_end(last, exc)
        raise
    finally:
        bar.close()
        _core.set_local_num_threads(saved_threads)
    return history


# ---------------------------------------------------------------------------
# Launching
# ---------------------------------------------------------------------------


def launcher(ranks: int) -> list[str] | None:
    """The command prefix that starts `ranks` processes on this machine, or
    None when no MPI launcher is found.

    Prefers the ``mpiexec`` installed beside this Python (pip's mpich),
    then ``mpirun`` or ``mpiexec`` on PATH. Open MPI gets
    ``--oversubscribe`` (more ranks than cores are allowed) and, as root,
    ``--allow-run-as-root``.
    """
    import shutil
    import subprocess
    import sys

    here = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    found = here if os.access(here, os.X_OK) else None
    found = found or shutil.which("mpirun") or shutil.which("mpiexec")
    if found is None:
        return None
    try:
        about = subprocess.run([found, "--version"], capture_output=True, text=True,
                               timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    command = [found]
    if "Open MPI" in about or "OpenRTE" in about:
        command.append("--oversubscribe")
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            command.append("--allow-run-as-root")
    return [*command, "-n", str(ranks)]


# ---------------------------------------------------------------------------
# Dask
# ---------------------------------------------------------------------------


class _BlockPredictor:
    """A picklable copy of a model that predicts one block of rows.

    It carries the layers, the loss and the weights; a process that
    unpickles it rebuilds the model once, on its first block.
    """

    def __init__(self, model: Any, proba: bool) -> None:
        self.layers = [layer.config() for layer in model.layers]
        self.n_inputs = model.n_inputs
        self.loss = model.loss
        self.weights = model.get_weights()
        self.proba = proba
        self._model: Any = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_model"] = None
        return state

    def model(self) -> Any:
        if self._model is None:
            from .layers import from_config
            from .model import Sequential

            copy = Sequential([from_config(layer) for layer in self.layers])
            copy.build(self.n_inputs, self.loss)
            copy.set_weights(self.weights)
            self._model = copy
        return self._model

    def __call__(self, block: np.ndarray) -> np.ndarray:
        model = self.model()
        return model.predict_proba(block) if self.proba else model.predict(block)


def predict_dask(model: Any, X: Any, proba: bool = False, chunk_rows: int = 65_536) -> Any:
    """Predictions for a large array as a lazy Dask array, block by block.

    Parameters
    ----------
    model : Sequential
        A built model. Its weights are copied now: training it further
        does not change the result.
    X : dask.array.Array or array-like, shape (n, n_inputs)
        Rows to predict. Column chunks are merged first, so that every
        block holds whole rows; a NumPy array is cut into blocks of
        `chunk_rows` rows.
    proba : bool
        ``predict_proba`` instead of ``predict``.

    Returns
    -------
    dask.array.Array
        What ``model.predict`` (or ``predict_proba``) returns for X, with
        X's row chunks; call ``.compute()`` on any scheduler, for instance
        a ``dask.distributed`` cluster.
    """
    import dask.array as da

    if not model.built:
        raise RuntimeError("the model has no parameters yet: call fit() first")
    if proba and not model.loss.is_classification:
        raise ValueError(f"proba=True needs a classification loss; this model uses "
                         f"{model.loss.name!r}")
    if not isinstance(X, da.Array):
        X = da.from_array(as_matrix(X, "X", dtype=model.dtype), chunks=(chunk_rows, -1))
    if X.ndim != 2 or X.shape[1] != model.n_inputs:
        raise ValueError(f"X must have shape (n, {model.n_inputs}), got {X.shape}")
    if X.numblocks[1] > 1:
        X = X.rechunk({1: -1})

    predictor = _BlockPredictor(model, proba)
    units = model.n_outputs
    if proba:
        return X.map_blocks(predictor, dtype=model.dtype, chunks=(X.chunks[0], (units,)))
    sample = predictor(np.zeros((1, model.n_inputs), model.dtype))
    if sample.ndim == 1:
        return X.map_blocks(predictor, dtype=sample.dtype, drop_axis=1)
    return X.map_blocks(predictor, dtype=sample.dtype, chunks=(X.chunks[0], (units,)))

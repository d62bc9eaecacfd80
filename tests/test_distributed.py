"""Data-parallel training over MPI, the C calls it rests on, and batch
prediction with Dask.

The MPI tests start real jobs with ``mpirun -n 2`` (Open MPI or MPICH,
whichever mpi4py uses), one OpenMP thread per rank unless OMP_NUM_THREADS
says otherwise; they are skipped, saying why, without mpi4py or a
launcher. MPI is never initialised in the pytest process itself: every
rank, even a lone one, is a child process.

What is checked: every rank ends with the same parameters, bit for bit;
one rank gives exactly what one-process training gives; n ranks give
exactly what a one-process sum of the same shards in rank order gives;
and against one-process training the weights differ by at most
TOLERANCE relative to the largest weight (the summation order differs).
The same holds for every optimizer with schedules and clipping; callbacks
see the same logs on every rank, and the ranks stop together even when a
callback on one rank alone decides to stop or raises.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import bprop
import numpy as np
import pytest
from bprop import _core, distributed
from bprop._optim_run import OptimizerRun
from bprop.cli import main as cli_main

sys.path.insert(0, str(Path(__file__).parent))
import mpi_callbacks  # noqa: E402
import mpi_cases  # noqa: E402

# Largest |w_mpi - w_one_process| / max |w_one_process| accepted after a
# few epochs; measured values are 1e-7 to 1e-6 (docs/distributed.md).
TOLERANCE = 1e-5

CASES_SCRIPT = str(Path(mpi_cases.__file__).resolve())
CALLBACKS_SCRIPT = str(Path(mpi_callbacks.__file__).resolve())


def _needs_mpi() -> list[str]:
    pytest.importorskip("mpi4py", reason="mpi4py is not installed: pip install 'bprop[mpi]'")
    command = distributed.launcher(1)
    if command is None:
        pytest.skip("no MPI launcher (mpirun or mpiexec): install Open MPI or pip install mpich")
    return command


def _env() -> dict[str, str]:
    env = os.environ.copy()
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def _launch(ranks: int, args: list[str], **kwargs) -> subprocess.CompletedProcess:
    """Runs `args` (after the Python interpreter) in `ranks` MPI processes."""
    _needs_mpi()
    command = [*distributed.launcher(ranks), sys.executable, *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env=_env(),
                          stdin=subprocess.DEVNULL, **kwargs)
    assert done.returncode == 0, f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}"
    return done


def _run_cases(tmp_path: Path, ranks: int, reduction: str) -> list[tuple[dict, dict]]:
    if ranks == 1:
        _needs_mpi()
        done = subprocess.run([sys.executable, CASES_SCRIPT, str(tmp_path), reduction],
                              capture_output=True, text=True, timeout=600, env=_env(),
                              stdin=subprocess.DEVNULL)
        assert done.returncode == 0, done.stderr
    else:
        _launch(ranks, [CASES_SCRIPT, str(tmp_path), reduction])
    results = []
    for rank in range(ranks):
        with np.load(tmp_path / f"rank{rank}.npz") as data:
            arrays = dict(data)
        info = json.loads((tmp_path / f"rank{rank}.json").read_text())
        results.append((arrays, info))
    return results


def one_process(name: str) -> tuple[np.ndarray, list[float]]:
    """Case `name` trained by a plain fit in this process."""
    x, y = mpi_cases.make_data(name)
    model = mpi_cases.make_model(name)
    history = model.fit(x, y, **mpi_cases.fit_args(name))
    return mpi_cases.flat(model), history["loss"]


def one_process_counters(name: str) -> list[int]:
    """Epochs and steps that a plain fit of case `name` counts."""
    x, y = mpi_cases.make_data(name)
    model = mpi_cases.make_model(name)
    model.fit(x, y, **mpi_cases.fit_args(name))
    return [model._epochs_done, model._steps_done]


def sharded_in_rank_order(name: str, ranks: int) -> np.ndarray:
    """Case `name` trained in this process the way `ranks` ranks train it:
    each shard's gradient weighted by its share of the batch, the shards
    summed in rank order, one update per global batch."""
    x, targets = mpi_cases.make_data(name)
    model = mpi_cases.make_model(name)
    args = mpi_cases.fit_args(name)
    opt = args["optimizer"]
    net = model._net
    targets = model._check_y(targets, model.loss)
    y_arg, label_arg = (None, targets) if targets.dtype == np.int32 else (targets, None)
    grads = net.grads_array()
    batch = len(x) if args["batch_size"] is None else args["batch_size"]
    order = np.arange(len(x), dtype=np.int64)
    for epoch in range(args["epochs"]):
        if args["shuffle"]:
            _core.shuffle_order(order, args["seed"], epoch)
        for start in range(0, len(x), batch):
            rows = min(batch, len(x) - start)
            parts = np.zeros((ranks, net.n_params), np.float32)
            for rank in range(ranks):
                begin, end = distributed.shard(rows, ranks, rank)
                if begin == end:
                    continue
                pick = order[start + begin : start + end]
                net.gradient(
                    x[pick],
                    None if y_arg is None else y_arg[pick],
                    None if label_arg is None else label_arg[pick],
                )
                parts[rank] = grads
                if end - begin != rows:
                    parts[rank] *= np.float32((end - begin) / rows)
            total = parts[0].copy()
            for part in parts[1:]:
                total += part
            grads[:] = total
            net.apply_gradients(opt.lr, opt.momentum, opt.nesterov, opt.l2)
    return mpi_cases.flat(model)


def relative_gap(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


# ----------------------------------------------------------------------
# The C calls beneath: gradient slab view, update, shuffle, thread counts
# ----------------------------------------------------------------------


def small_net():
    """A fresh 7-5-3 network, the same one on every call."""
    model = bprop.Sequential([bprop.Dense(5, activation="relu"), bprop.Dense(3)], seed=4)
    return model.build(7, "cross_entropy")._net


@pytest.fixture
def net_and_batch():
    rng = np.random.default_rng(0)
    net = small_net()
    x = rng.standard_normal((9, 7), dtype=np.float32)
    labels = rng.integers(0, 3, 9).astype(np.int32)
    return net, x, labels


def test_grads_array_views_the_gradient_slab_without_a_copy(net_and_batch):
    net, x, labels = net_and_batch
    view = net.grads_array()
    assert view.dtype == np.float32 and view.shape == (net.n_params,)
    assert view.flags.writeable and view.flags.c_contiguous

    net.gradient(x, None, labels)
    copy = np.empty(net.n_params, np.float32)
    net.get_grads(copy)
    assert np.array_equal(view, copy) and np.abs(copy).max() > 0

    view *= 3.0
    net.get_grads(copy)
    assert np.array_equal(copy, view)


def test_grads_array_keeps_its_network_alive(net_and_batch):
    net, x, labels = net_and_batch
    net.gradient(x, None, labels)
    view = net.grads_array()
    expected = view.copy()
    del net
    import gc

    gc.collect()
    assert np.array_equal(view, expected)


def test_gradient_then_apply_equals_train_batch_bitwise(net_and_batch):
    net, x, labels = net_and_batch
    other = small_net()
    opt = dict(lr=0.1, momentum=0.9, nesterov=True, l2=0.01)
    for _ in range(3):
        net.gradient(x, None, labels)
        net.apply_gradients(*opt.values())
        other.train_epoch(x, None, labels, len(x), False, 0, 0, *opt.values())
    mine, theirs = np.empty(net.n_params, np.float32), np.empty(net.n_params, np.float32)
    net.get_params(mine)
    other.get_params(theirs)
    assert np.array_equal(mine, theirs)
    net.get_velocity(mine)
    other.get_velocity(theirs)
    assert np.array_equal(mine, theirs) and np.abs(mine).max() > 0


def test_apply_gradients_checks_the_optimizer(net_and_batch):
    net, _, _ = net_and_batch
    with pytest.raises(ValueError, match="bp_net_apply_gradients.*lr"):
        net.apply_gradients(0.0, 0.0, False, 0.0)


def test_shuffle_order_is_the_order_of_a_training_epoch(net_and_batch):
    net, x, labels = net_and_batch
    other = small_net()
    net.train_epoch(x, None, labels, 2, True, 17, 4, 0.1, 0.0, False, 0.0)

    order = np.empty(len(x), np.int64)
    _core.shuffle_order(order, 17, 4)
    assert sorted(order) == list(range(len(x)))
    for start in range(0, len(x), 2):
        pick = order[start : start + 2]
        other.train_epoch(x[pick], None, labels[pick], 2, False, 0, 0, 0.1, 0.0, False, 0.0)
    mine, theirs = np.empty(net.n_params, np.float32), np.empty(net.n_params, np.float32)
    net.get_params(mine)
    other.get_params(theirs)
    assert np.array_equal(mine, theirs)


def test_local_thread_count_belongs_to_one_thread():
    before = bprop.get_num_threads()
    seen = {}

    def worker():
        _core.set_local_num_threads(1)
        seen["inside"] = (_core.get_local_num_threads(), _core.get_num_threads())
        _core.set_local_num_threads(0)
        seen["after"] = _core.get_num_threads()

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert seen["inside"] == (1, 1)
    assert seen["after"] == before
    assert bprop.get_num_threads() == before and _core.get_local_num_threads() == 0
    with pytest.raises(ValueError, match="bp_set_local_num_threads.*'n' is -1"):
        _core.set_local_num_threads(-1)


@pytest.mark.parametrize("size", [1, 2, 3, 5, 8])
def test_shards_cover_every_row_once_and_differ_by_at_most_one(size):
    for rows in range(1, 40):
        bounds = [distributed.shard(rows, size, rank) for rank in range(size)]
        assert bounds[0][0] == 0 and bounds[-1][1] == rows
        assert all(bounds[r][1] == bounds[r + 1][0] for r in range(size - 1))
        lengths = [end - begin for begin, end in bounds]
        assert max(lengths) - min(lengths) <= 1


# ----------------------------------------------------------------------
# The Python side without MPI
# ----------------------------------------------------------------------


def test_distributed_argument_is_checked():
    model = mpi_cases.make_model("classify")
    x, y = mpi_cases.make_data("classify")
    with pytest.raises(ValueError, match="distributed must be True, False, an MPI communicator"):
        model.fit(x, y, epochs=1, distributed="yes")
    with pytest.raises(ValueError, match="unknown reduction 'mean'; choose one of sum, ordered"):
        distributed.DataParallel(reduction="mean")


def test_missing_mpi4py_is_reported_with_the_fix(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "mpi4py", None)
    model = mpi_cases.make_model("classify")
    x, y = mpi_cases.make_data("classify")
    with pytest.raises(ImportError, match=r"needs mpi4py.*pip install 'bprop\[mpi\]'"):
        model.fit(x, y, epochs=1, distributed=True)
    with pytest.raises(SystemExit, match="--distributed: distributed training needs mpi4py"):
        cli_main(["train", "--distributed", "--epochs", "1", "--quiet"])


def test_launcher_adds_what_open_mpi_needs():
    command = distributed.launcher(3)
    if command is None:
        pytest.skip("no MPI launcher on this machine")
    assert command[-2:] == ["-n", "3"]
    about = subprocess.run([command[0], "--version"], capture_output=True, text=True).stdout
    if "Open MPI" in about:
        assert "--oversubscribe" in command
        assert ("--allow-run-as-root" in command) == (os.geteuid() == 0)
    else:
        assert command == [command[0], "-n", "3"]


# ----------------------------------------------------------------------
# Real MPI jobs
# ----------------------------------------------------------------------


def test_one_rank_is_bitwise_one_process(tmp_path):
    [(arrays, info)] = _run_cases(tmp_path, 1, "sum")
    assert info["size"] == 1
    for name in mpi_cases.CASES:
        params, losses = one_process(name)
        assert np.array_equal(arrays[f"{name}/params"], params), name
        assert arrays[f"{name}/loss"].tolist() == losses, name
    assert "mismatch" not in info
    assert "diverged in epoch 1" in info["divergence"] and info["restored"]


def test_two_ranks_agree_and_match_one_process(tmp_path):
    results = _run_cases(tmp_path, 2, "sum")
    (first, info0), (second, info1) = results
    assert info0["size"] == 2 and info0["threads"] == info1["threads"]
    if "OMP_NUM_THREADS" not in os.environ:
        assert info0["threads"] == 1
    for name in mpi_cases.CASES:
        key = f"{name}/params"
        assert np.array_equal(first[key], second[key]), f"{name}: ranks differ"
        # Two terms add the same in either order: the sum in rank order is exact.
        assert np.array_equal(first[key], sharded_in_rank_order(name, 2)), name
        params, losses = one_process(name)
        assert relative_gap(first[key], params) <= TOLERANCE, name
        np.testing.assert_allclose(first[f"{name}/loss"], losses, rtol=TOLERANCE)
        assert np.array_equal(first[f"{name}/loss"], second[f"{name}/loss"])
        assert first[f"{name}/counters"].tolist() == one_process_counters(name)

    for info in (info0, info1):
        assert "same data (CRC-32 of X) on every rank" in info["mismatch"]
        assert "restored to the end of the previous epoch on every rank" in info["divergence"]
        assert info["restored"]


def test_ordered_reduction_is_bitwise_reproducible_with_three_ranks(tmp_path):
    results = _run_cases(tmp_path, 3, "ordered")
    for name in mpi_cases.CASES:
        key = f"{name}/params"
        reference = sharded_in_rank_order(name, 3)
        for arrays, info in results:
            assert info["size"] == 3
            assert np.array_equal(arrays[key], reference), name
        params, _ = one_process(name)
        assert relative_gap(results[0][0][key], params) <= TOLERANCE, name


def test_cli_trains_across_two_ranks_and_only_rank_zero_prints():
    done = _launch(2, ["-m", "bprop.cli", "train", "--distributed", "--quiet", "--epochs", "3"])
    lines = done.stdout.splitlines()
    assert sum("2 MPI ranks" in line for line in lines) == 1, done.stdout
    accuracy = [line for line in lines if line.startswith("test accuracy:")]
    assert len(accuracy) == 1, done.stdout
    assert float(accuracy[0].split()[-1].rstrip("%")) > 90.0


# ----------------------------------------------------------------------
# Other optimizers, callbacks and diagnostics across two ranks
# ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    """What each of two ranks of tests/mpi_callbacks.py wrote: a list of
    (arrays, info) in rank order."""
    out = tmp_path_factory.mktemp("callbacks")
    _launch(2, [CALLBACKS_SCRIPT, str(out)])
    results = []
    for rank in range(2):
        with np.load(out / f"rank{rank}.npz") as data:
            arrays = dict(data)
        results.append((arrays, json.loads((out / f"rank{rank}.json").read_text())))
    return results


def optimizer_in_rank_order(name: str, ranks: int) -> tuple[np.ndarray, list[float]]:
    """Optimizer case `name` of mpi_callbacks trained in this process the
    way `ranks` ranks train it (see sharded_in_rank_order), with the same
    C update from the summed gradient; the parameters and the rates."""
    x, y, _, _ = mpi_callbacks.data()
    model = mpi_callbacks.model()
    opt = mpi_callbacks.optimizers()[name]
    args = mpi_callbacks.FIT
    labels = model._check_y(y, model.loss)
    net = model._net
    grads = net.grads_array()
    batch = args["batch_size"]
    run = OptimizerRun(net, opt, -(-len(x) // batch), args["epochs"])
    order = np.arange(len(x), dtype=np.int64)
    rates = []
    for epoch in range(args["epochs"]):
        _core.shuffle_order(order, args["seed"], epoch)
        schedule = opt.schedule_config()
        totals = [0.0] * ranks
        for start in range(0, len(x), batch):
            rows = min(batch, len(x) - start)
            parts = np.zeros((ranks, net.n_params), np.float32)
            for rank in range(ranks):
                begin, end = distributed.shard(rows, ranks, rank)
                pick = order[start + begin : start + end]
                totals[rank] += net.gradient(x[pick], None, labels[pick]) * len(pick)
                parts[rank] = grads
                if end - begin != rows:
                    parts[rank] *= np.float32((end - begin) / rows)
            grads[:] = parts[0]
            for part in parts[1:]:
                grads += part
            net.apply_update(run.config, schedule)
        values = {"loss": sum(totals) / len(x)}
        run.end_epoch(values)  # a plateau schedule observes the loss here
        rates.append(values["lr"])
    return mpi_cases.flat(model), rates


@pytest.mark.parametrize("name", list(mpi_callbacks.optimizers()))
def test_every_optimizer_trains_on_two_ranks_as_in_one_process(two_ranks, name):
    (first, _), (second, _) = two_ranks
    key = f"{name}/params"
    assert np.array_equal(first[key], second[key]), f"{name}: ranks differ"
    for figure in ("loss", "lr", "accuracy"):
        assert np.array_equal(first[f"{name}/{figure}"], second[f"{name}/{figure}"])

    # The same global batches, summed in rank order in one process, give
    # the same parameters bit for bit: the update is the one-process one.
    params, rates = optimizer_in_rank_order(name, 2)
    assert np.array_equal(first[key], params), name
    assert first[f"{name}/lr"].tolist() == rates

    # A plain one-process fit differs by the order of the gradient sums.
    x, y, _, _ = mpi_callbacks.data()
    model = mpi_callbacks.model()
    history = model.fit(x, y, optimizer=mpi_callbacks.optimizers()[name], **mpi_callbacks.FIT)
    assert relative_gap(first[key], mpi_cases.flat(model)) <= TOLERANCE, name
    np.testing.assert_allclose(first[f"{name}/loss"], history["loss"], rtol=TOLERANCE)
    assert first[f"{name}/lr"].tolist() == history["lr"]
    assert np.abs(first[f"{name}/accuracy"] - history["accuracy"]).max() <= 0.01
    if name == "sgd_plateau":
        assert history["lr"] == pytest.approx([0.05, 0.05, 0.025, 0.0125])


def test_early_stopping_stops_every_rank_at_the_same_epoch(two_ranks):
    (first, info0), (second, info1) = two_ranks
    assert info0["early"] == info1["early"]
    assert np.array_equal(first["early/params"], second["early/params"])
    assert np.array_equal(first["early/val_loss"], second["early/val_loss"])

    x, y, x_val, y_val = mpi_callbacks.data()
    stopper = mpi_callbacks.early_stopping()
    model = mpi_callbacks.model()
    history = model.fit(
        x, y, validation_data=(x_val, y_val), callbacks=[stopper], **mpi_callbacks.EARLY
    )
    assert info0["early"] == {
        "stopped_epoch": stopper.stopped_epoch,
        "best_epoch": stopper.best_epoch,
        "epochs": len(history),
    }
    assert 2 <= stopper.best_epoch < stopper.stopped_epoch < 39
    # Both ended with the weights of the best epoch.
    assert relative_gap(first["early/params"], mpi_cases.flat(model)) <= TOLERANCE
    np.testing.assert_allclose(first["early/val_loss"], history["val_loss"], rtol=TOLERANCE)


def test_a_callback_on_one_rank_stops_every_rank(two_ranks):
    (_, info0), (_, info1) = two_ranks
    # StopAt(epoch=1) on rank 1 only: both ranks train epochs 0 and 1.
    assert info0["stop_epoch"] == info1["stop_epoch"] == {"epochs": 2, "done": 2}
    # StopAt(batch=4) on rank 1 only: both stop after five updates.
    assert info0["stop_batch"] == info1["stop_batch"] == {"epochs": 1, "steps": 5}


def test_batch_callbacks_see_every_batch_with_the_same_logs_on_every_rank(two_ranks):
    (_, info0), (_, info1) = two_ranks
    events = info0["events"]
    assert events == info1["events"]
    rows, batch = 390, 32
    sizes = [batch] * (rows // batch) + [rows % batch]
    per_epoch = len(sizes)
    ends = [(number, logs) for kind, number, logs in events if kind == "batch_end"]
    begins = [(number, logs) for kind, number, logs in events if kind == "batch_begin"]
    assert [number for number, _ in ends] == list(range(per_epoch)) * 2
    assert [logs["size"] for _, logs in ends] == sizes * 2
    assert [(n, logs) for n, logs in begins] == [
        (b, {"batch": b, "size": sizes[b]}) for b in range(per_epoch)
    ] * 2
    kinds = [kind for kind, _, _ in events]
    assert kinds[0] == "train_begin" and kinds[-1] == "train_end"
    assert kinds.count("epoch_end") == 2

    # Each batch's loss is that of all its rows, as in one process.
    x, y, _, _ = mpi_callbacks.data()
    recorder = mpi_callbacks.Recorder()
    model = mpi_callbacks.model()
    history = model.fit(
        x[:rows],
        y[:rows],
        optimizer=bprop.SGD(lr=0.05),
        epochs=2,
        batch_size=batch,
        seed=5,
        callbacks=[recorder],
    )
    alone = [logs["loss"] for kind, _, logs in recorder.events if kind == "batch_end"]
    np.testing.assert_allclose([logs["loss"] for _, logs in ends], alone, rtol=TOLERANCE)
    epoch_logs = [logs for kind, _, logs in events if kind == "epoch_end"]
    assert sorted(epoch_logs[0]) == ["accuracy", "loss", "lr"]
    np.testing.assert_allclose(
        [logs["loss"] for logs in epoch_logs], history["loss"], rtol=TOLERANCE
    )


def test_a_callback_that_raises_on_one_rank_ends_training_on_every_rank(two_ranks):
    (_, info0), (_, info1) = two_ranks
    assert info1["raised"] == "KeyError: 'no such figure'"
    assert info0["raised"] == (
        "RuntimeError: training stopped on every rank: a callback on rank 1 raised "
        "KeyError('no such figure')"
    )
    # Both trained two epochs, then ended their callbacks.
    for info, error in ((info0, "RuntimeError"), (info1, "KeyError")):
        assert [kind for kind, _ in info["raised_events"]].count("epoch_end") == 2
        assert info["raised_events"][-1] == ["train_end", None]
        assert info["raised_end"]["exception"] == error
    assert info0["raised_end"]["loss"] == info1["raised_end"]["loss"]


def test_diagnostics_on_two_ranks_match_one_process(two_ranks):
    (first, info0), (second, info1) = two_ranks
    assert info0["monitor_matches"] and info1["monitor_matches"]
    x, y, _, _ = mpi_callbacks.data()
    model = mpi_callbacks.model()
    history = model.fit(
        x,
        y,
        optimizer=bprop.SGD(lr=0.05, momentum=0.9),
        diagnostics=True,
        **{**mpi_callbacks.FIT, "epochs": 3},
    )
    assert sorted(history.diagnostics) == sorted(
        key.split("/")[1] for key in first if key.startswith("diagnostics/")
    )
    for stat, alone in history.diagnostics.items():
        mine = first[f"diagnostics/{stat}"]
        assert np.array_equal(mine, second[f"diagnostics/{stat}"], equal_nan=True), stat
        assert mine.shape == (3, 2)
        np.testing.assert_allclose(mine, alone, rtol=1e-4, equal_nan=True, err_msg=stat)
    assert (first["diagnostics/grad_norm"] > 0).all()


# ----------------------------------------------------------------------
# Dask
# ----------------------------------------------------------------------


def test_predict_dask_equals_predict_on_a_local_cluster():
    da = pytest.importorskip("dask.array")
    x, y = mpi_cases.make_data("classify")
    model = mpi_cases.make_model("classify")
    model.fit(x, y, **mpi_cases.fit_args("classify"))
    big = da.from_array(np.tile(x, (5, 1)), chunks=(700, 32))

    labels = distributed.predict_dask(model, big)
    proba = distributed.predict_dask(model, big, proba=True)
    assert labels.shape == (len(big),) and proba.shape == (len(big), 10)
    model.fit(x, y, epochs=1)  # later training must not change the lazy result
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError:
        got_labels, got_proba = labels.compute(scheduler="threads"), proba.compute()
    else:
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                          dashboard_address=None) as cluster, Client(cluster) as client:
            got_labels, got_proba = client.compute([labels, proba], sync=True)
    reference = mpi_cases.make_model("classify")
    reference.fit(x, y, **mpi_cases.fit_args("classify"))
    assert np.array_equal(got_labels, np.tile(reference.predict(x), 5))
    assert np.array_equal(got_proba, np.tile(reference.predict_proba(x), (5, 1)))


def test_predict_dask_checks_its_input():
    pytest.importorskip("dask.array")
    model = mpi_cases.make_model("regress")
    with pytest.raises(ValueError, match=r"X must have shape \(n, 64\), got \(10, 3\)"):
        distributed.predict_dask(model, np.zeros((10, 3)))
    with pytest.raises(ValueError, match="proba=True needs a classification loss"):
        distributed.predict_dask(model, np.zeros((10, 64)), proba=True)
    out = distributed.predict_dask(model, np.ones((10, 64)), chunk_rows=4)
    assert out.chunks == ((4, 4, 2), (2,))
    assert np.array_equal(out.compute(), model.predict(np.ones((10, 64))))


def test_benchmark_reports_two_ranks_against_one():
    from bprop import bench_parallel

    [row] = bench_parallel.bench_mpi(quick=True)
    assert row.group == "mpi" and "2 ranks x 1 thread" in row.name
    try:
        _needs_mpi()
    except pytest.skip.Exception:
        assert row.note.startswith("skipped:") and row.figures == {}
        return
    assert row.figures["bprop"] > 0 and row.figures["baseline"] > 0
    assert row.ratio("baseline") == pytest.approx(row.figures["bprop"] / row.figures["baseline"])


def test_batch_norm_and_dropout_train_alike_on_two_ranks(two_ranks):
    (first, info), (second, _) = two_ranks
    for key in ("layers/params", "layers/running", "layers/predictions"):
        np.testing.assert_array_equal(first[key], second[key])
    # The running averages moved away from their start (mean 0, variance 1).
    assert np.abs(first["layers/running"][:16]).max() > 1e-3
    assert np.isfinite(first["layers/predictions"]).all()
    # Batches of 3 rows give one rank a single row, which batch norm refuses.
    assert "at least 2 rows per rank" in info["layers_small_batch"]

"""Optimizers: every update rule against a NumPy float64 reference (the
kernel, and a network's update with weight decay, bias exemption and
clipping), bitwise-identical training on 1 and 2 threads, accuracy on
the digits with every optimizer, L-BFGS, model files, and the Python
API's names, objects and errors."""

from __future__ import annotations

import builtins
import pickle
import zlib

import bprop
import numpy as np
import pytest
from bprop import _core, datasets

KINDS = ["sgd", "sgd_nesterov", "adam", "adamw", "rmsprop", "rmsprop_momentum", "adagrad"]


def make(kind: str, **extra) -> bprop.optimizers.CoreOptimizer:
    """An optimizer of each kind with settings that exercise its state."""
    if kind == "sgd":
        return bprop.SGD(lr=0.1, momentum=0.9, l2=0.01, **extra)
    if kind == "sgd_nesterov":
        return bprop.SGD(lr=0.1, momentum=0.8, nesterov=True, **extra)
    if kind == "adam":
        return bprop.Adam(lr=0.01, beta1=0.8, beta2=0.99, weight_decay=0.01, **extra)
    if kind == "adamw":
        return bprop.AdamW(lr=0.01, weight_decay=0.1, **extra)
    if kind == "rmsprop":
        return bprop.RMSprop(lr=0.01, rho=0.8, weight_decay=0.01, **extra)
    if kind == "rmsprop_momentum":
        return bprop.RMSprop(lr=0.01, momentum=0.5, **extra)
    return bprop.Adagrad(lr=0.1, initial_accumulator=0.1, weight_decay=0.01, **extra)


def reference_step(opt, w, m, s, g, t, lr, wd):
    """One update in float64, written from the formulas in the docs."""
    g = g.astype(np.float64)
    if opt.clip_value is not None:
        g = np.clip(g, -opt.clip_value, opt.clip_value)
    if opt.kind != "adamw":
        g = g + wd * w
    if opt.kind == "sgd":
        if opt.momentum == 0:
            return w - lr * g
        m[:] = opt.momentum * m + g
        return w - lr * (g + opt.momentum * m if opt.nesterov else m)
    if opt.kind in ("adam", "adamw"):
        if opt.kind == "adamw":
            w = w * (1 - lr * wd)
        m[:] = opt.beta1 * m + (1 - opt.beta1) * g
        s[:] = opt.beta2 * s + (1 - opt.beta2) * g * g
        m_hat, s_hat = m / (1 - opt.beta1**t), s / (1 - opt.beta2**t)
        return w - lr * m_hat / (np.sqrt(s_hat) + opt.eps)
    if opt.kind == "rmsprop":
        s[:] = opt.rho * s + (1 - opt.rho) * g * g
        d = g / (np.sqrt(s) + opt.eps)
        if opt.momentum > 0:
            m[:] = opt.momentum * m + d
            d = m
        return w - lr * d
    s[:] = s + g * g
    return w - lr * g / (np.sqrt(s + opt.initial_accumulator) + opt.eps)


def _digits(rows=None):
    X, y = datasets.load_digits()
    X = (X - X.mean(axis=0)) / (X.std(axis=0) + 1e-9)
    order = np.random.default_rng(0).permutation(len(X))
    X, y = X[order], y[order]
    return (X, y) if rows is None else (X[:rows], y[:rows])


@pytest.fixture
def threads():
    previous = bprop.get_num_threads()
    yield
    bprop.set_num_threads(previous)


# ----------------------------------------------------------------------
# Update rules against NumPy
# ----------------------------------------------------------------------


@pytest.mark.parametrize("clip_value", [None, 0.3])
@pytest.mark.parametrize("kind", KINDS)
def test_the_kernel_matches_numpy_over_several_steps(kind, clip_value):
    opt = make(kind, clip_value=clip_value)
    rng = np.random.default_rng(1)
    n = 53  # not a multiple of any vector width
    w = rng.normal(size=n).astype(np.float32)
    w0 = w.copy()
    m, s = np.zeros(n, np.float32), np.zeros(n, np.float32)
    ref_w, ref_m, ref_s = w.astype(np.float64), np.zeros(n), np.zeros(n)
    for t in range(1, 8):
        g = rng.normal(scale=0.5, size=n).astype(np.float32)
        bprop.kernels.optimizer_update(opt, w, g, m, s, step=t)
        ref_w = reference_step(opt, ref_w, ref_m, ref_s, g, t, opt.lr, opt.weight_decay)
    moved = np.abs(ref_w - w0).max()
    assert moved > 0.01
    np.testing.assert_allclose(w, ref_w, rtol=0, atol=2e-6 * max(1.0, moved))
    if kind not in ("sgd", "sgd_nesterov"):
        np.testing.assert_allclose(s, ref_s, rtol=2e-5, atol=1e-9)


def test_the_kernel_applies_the_schedule_for_the_step():
    opt = bprop.SGD(lr=0.5, schedule=bprop.schedules.ExponentialDecay(0.5, unit="step"))
    w = np.ones(3, np.float32)
    bprop.kernels.optimizer_update(opt, w, np.ones(3), step=3)
    assert np.array_equal(w, np.full(3, 1 - 0.5 * 0.25, np.float32))


def test_the_kernel_names_missing_state_and_bad_steps():
    w, g = np.zeros(4, np.float32), np.ones(4, np.float32)
    with pytest.raises(ValueError, match="adam needs the state array m"):
        bprop.kernels.optimizer_update("adam", w, g)
    with pytest.raises(ValueError, match="step must be an integer >= 1, got 0"):
        bprop.kernels.optimizer_update("adagrad", w, g, s=np.zeros(4, np.float32), step=0)
    with pytest.raises(ValueError, match="has no update kernel"):
        bprop.kernels.optimizer_update("lbfgs", w, g)


def _small_net(seed=0, units=(7, 3)):
    net = _core.Net(5, list(units), [3, 0], _core.LOSSES.index("cross_entropy"))
    net.init(0, seed)
    return net


def _weight_mask(net):
    mask = np.zeros(net.n_params, bool)
    n_in = net.n_inputs
    for units, _, w_off, _ in net.layers():
        mask[w_off : w_off + n_in * units] = True
        n_in = units
    return mask


@pytest.mark.parametrize("decay_biases", [False, True])
@pytest.mark.parametrize("clip_norm", [None, 0.05])
@pytest.mark.parametrize("kind", KINDS)
def test_a_network_update_matches_numpy(kind, clip_norm, decay_biases):
    """bp_net_apply_update: decay on weights (and on biases only when
    asked), the global norm over all layers, the step counter."""
    opt = make(kind, clip_norm=clip_norm, decay_biases=decay_biases)
    net = _small_net()
    rng = np.random.default_rng(2)
    x = rng.normal(size=(11, 5)).astype(np.float32)
    labels = rng.integers(0, 3, size=11).astype(np.int32)
    mask = _weight_mask(net) | decay_biases
    params = np.empty(net.n_params, np.float32)
    grads = np.empty(net.n_params, np.float32)
    net.get_params(params)
    ref_w, ref_m, ref_s = params.astype(np.float64), np.zeros(len(params)), np.zeros(len(params))
    clipped = 0
    for t in range(1, 6):
        net.gradient(x, None, labels)
        net.get_grads(grads)
        g = grads.astype(np.float64)
        if clip_norm is not None:
            norm = np.sqrt(np.sum(g * g))
            clipped += norm > clip_norm
            g = g * min(1.0, clip_norm / (norm + 1e-6))
        net.apply_update(opt.config(), None)
        decay = np.where(mask, opt.weight_decay, 0.0)
        ref_w = reference_step(opt, ref_w, ref_m, ref_s, g, t, opt.lr, decay)
        net.get_params(params)
        np.testing.assert_allclose(params, ref_w, rtol=1e-5, atol=1e-6)
        ref_w = params.astype(np.float64)  # follow the float32 trajectory
    assert net.optimizer_step == 5
    assert net.has_state(1) == (kind not in ("sgd", "sgd_nesterov"))
    if clip_norm is not None:
        assert clipped == 5


def test_clip_value_bounds_every_entry_of_the_step():
    net = _small_net()
    rng = np.random.default_rng(3)
    x = (rng.normal(size=(8, 5)) * 50).astype(np.float32)
    labels = rng.integers(0, 3, size=8).astype(np.int32)
    before, after = np.empty(net.n_params, np.float32), np.empty(net.n_params, np.float32)
    net.get_params(before)
    net.gradient(x, None, labels)
    grads = np.empty(net.n_params, np.float32)
    net.get_grads(grads)
    assert np.abs(grads).max() > 0.01
    net.apply_update(bprop.SGD(lr=1.0, clip_value=0.01).config())
    net.get_params(after)
    step = np.abs(after.astype(np.float64) - before)
    assert step.max() <= 0.01 * (1 + 1e-5) and step.max() >= 0.0099


def test_sgd_objects_train_exactly_as_before():
    """The SGD calls and the general ones with an SGD optimizer are one
    code path: the same bits."""
    X, y = _digits(200)
    x, labels = X.astype(np.float32), y.astype(np.int32)
    a, b = _small_units_net(), _small_units_net()
    opt = bprop.SGD(lr=0.05, momentum=0.9, nesterov=True, l2=1e-3)
    for epoch in range(3):
        a.train_epoch(x, None, labels, 16, True, 4, epoch, 0.05, 0.9, True, 1e-3)
        b.train_epoch_opt(x, None, labels, 16, True, 4, epoch, opt.config(), None)
    pa, pb = np.empty(a.n_params, np.float32), np.empty(b.n_params, np.float32)
    a.get_params(pa)
    b.get_params(pb)
    assert np.array_equal(pa, pb)


def _small_units_net(hidden=16):
    net = _core.Net(64, [hidden, 10], [1, 0], _core.LOSSES.index("cross_entropy"))
    net.init(0, 3)
    return net


# ----------------------------------------------------------------------
# Threads
# ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["adam", "rmsprop_momentum"])
def test_one_and_two_threads_give_the_same_bits(threads, kind):
    """600,000 parameters, so that the global norm and the updates are
    split over threads."""
    X, y = _digits(256)
    results = []
    for n in (1, 2):
        bprop.set_num_threads(n)
        model = bprop.Sequential([bprop.Dense(8192, activation="relu"), bprop.Dense(10)],
                                 seed=1)
        opt = make(kind, clip_norm=0.5,
                   schedule=bprop.schedules.CosineWarmup(period=4, warmup=1, unit="step"))
        model.fit(X, y, loss="cross_entropy", optimizer=opt, epochs=2, batch_size=64, seed=2)
        state = np.empty(model.n_params, np.float32)
        model._net.get_state(1, state)
        results.append((np.concatenate([w.ravel() for w in model.get_weights()]), state))
    assert model.n_params > 600_000
    assert np.array_equal(results[0][0], results[1][0])
    assert np.array_equal(results[0][1], results[1][1]) and np.abs(results[0][1]).max() > 0


# ----------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------

DIGITS_SETTINGS = {
    "sgd": bprop.SGD(lr=0.05, momentum=0.9, nesterov=True),
    "adam": bprop.Adam(lr=1e-3),
    "adamw": bprop.AdamW(lr=1e-3, weight_decay=0.01),
    "rmsprop": bprop.RMSprop(lr=1e-3),
    "adagrad": bprop.Adagrad(lr=0.05),
    "lbfgs": bprop.LBFGS(max_iter=150),
}


@pytest.mark.parametrize("name", sorted(DIGITS_SETTINGS))
def test_every_optimizer_learns_the_digits(name):
    if name == "lbfgs":
        pytest.importorskip("scipy")
    X, y = _digits()
    model = bprop.Sequential([bprop.Dense(64, activation="relu"), bprop.Dense(10)], seed=0)
    history = model.fit(X[:1437], y[:1437], loss="cross_entropy",
                        optimizer=DIGITS_SETTINGS[name], epochs=20, batch_size=32, seed=0)
    accuracy = model.evaluate(X[1437:], y[1437:])["accuracy"]
    assert accuracy >= 0.95, f"{name}: test accuracy {accuracy:.3f}"
    assert history["loss"][-1] < 0.25 * history["loss"][0]


def test_optimizers_by_name_equal_the_default_objects():
    X, y = _digits(300)
    for name, cls in [("adam", bprop.Adam), ("adamw", bprop.AdamW), ("rmsprop", bprop.RMSprop),
                      ("adagrad", bprop.Adagrad), ("sgd", bprop.SGD)]:
        a = bprop.Sequential([bprop.Dense(16, activation="relu"), bprop.Dense(10)], seed=0)
        b = bprop.Sequential([bprop.Dense(16, activation="relu"), bprop.Dense(10)], seed=0)
        a.fit(X, y, loss="cross_entropy", optimizer=name, epochs=2, seed=0)
        b.fit(X, y, loss="cross_entropy", optimizer=cls(), epochs=2, seed=0)
        assert type(a.optimizer) is cls and repr(a.optimizer) == repr(cls())
        assert all(np.array_equal(u, v) for u, v in zip(a.get_weights(), b.get_weights()))


def test_adam_state_survives_a_round_trip_and_pickling(tmp_path):
    X, y = _digits(300)
    model = bprop.Sequential([bprop.Dense(16, activation="relu"), bprop.Dense(10)], seed=0)
    opt = bprop.AdamW(lr=2e-3, beta2=0.99, clip_norm=2.0, decay_biases=True,
                      schedule=bprop.schedules.StepDecay(3, gamma=0.5))
    model.fit(X, y, loss="cross_entropy", optimizer=opt, epochs=4, batch_size=50, seed=0)
    path = tmp_path / "adamw.bpm"
    model.save(path)
    for back in (bprop.load(path), pickle.loads(pickle.dumps(model))):
        assert repr(back.optimizer) == repr(model.optimizer)
        assert back.optimizer.schedule.interval == 6
        assert back._net.optimizer_step == model._net.optimizer_step == 24
        for i in (0, 1):
            mine, theirs = np.empty(model.n_params, np.float32), np.empty(back.n_params, np.float32)
            model._net.get_state(i, mine)
            back._net.get_state(i, theirs)
            assert np.array_equal(mine, theirs) and np.abs(mine).max() > 0
    assert bprop.load(path).to_bytes() == path.read_bytes()


def _reseal(data: bytes) -> bytes:
    body = bytearray(data)
    body[16:24] = len(body).to_bytes(8, "little")
    body[-8:-4] = zlib.crc32(bytes(body[:-8])).to_bytes(4, "little")
    return bytes(body)


def _optm(data: bytes) -> tuple[int, int]:
    """(offset of OPTM's section header, its payload length)."""
    at = 24
    while data[at : at + 4] != b"OPTM":
        at += 16 + -(-int.from_bytes(data[at + 8 : at + 16], "little") // 8) * 8
    return at, int.from_bytes(data[at + 8 : at + 16], "little")


def test_a_version_one_sgd_section_still_loads():
    """An OPTM that ends after the momentum buffers (as bprop wrote it
    before the optimizer fields were appended) reads as SGD, with the
    update counter taken from STEP."""
    X, y = _digits(200)
    model = bprop.Sequential([bprop.Dense(9, activation="relu"), bprop.Dense(10)], seed=0)
    model.fit(X, y, loss="cross_entropy", optimizer=bprop.SGD(lr=0.05, momentum=0.9, l2=1e-4),
              epochs=2, batch_size=40, seed=0)
    data = model.to_bytes()
    at, length = _optm(data)
    old_length = 32 + 4 * model.n_params
    padded = -(-length // 8) * 8
    old = bytearray(data[: at + 16 + old_length])
    old[at + 8 : at + 16] = old_length.to_bytes(8, "little")
    old += b"\0" * (-old_length % 8) + data[at + 16 + padded :]
    back = bprop.from_bytes(_reseal(bytes(old)))

    assert repr(back.optimizer) == "SGD(lr=0.05, momentum=0.9, nesterov=False, l2=0.0001)"
    assert back._net.optimizer_step == model._steps_done == 10
    mine, theirs = np.empty(model.n_params, np.float32), np.empty(model.n_params, np.float32)
    model._net.get_velocity(mine)
    back._net.get_velocity(theirs)
    assert np.array_equal(mine, theirs)
    a, b = model, back
    for m in (a, b):
        m.fit(X, y, epochs=1, batch_size=40, seed=0)
    assert all(np.array_equal(u, v) for u, v in zip(a.get_weights(), b.get_weights()))


def test_a_damaged_schedule_is_refused_with_its_name():
    X, y = _digits(100)
    model = bprop.Sequential([bprop.Dense(4, activation="relu"), bprop.Dense(10)], seed=0)
    model.fit(X, y, loss="cross_entropy", epochs=1, seed=0,
              optimizer=bprop.Adam(schedule=bprop.schedules.StepDecay(2)))
    data = bytearray(model.to_bytes())
    at, _ = _optm(data)
    slab = 4 * model.n_params + (4 if model.n_params % 2 else 0)
    kind_at = at + 16 + 32 + slab + 40
    assert data[kind_at] == 1  # the step schedule
    data[kind_at] = 77
    with pytest.raises(bprop.ModelFormatError, match="invalid learning-rate schedule"):
        bprop.from_bytes(_reseal(bytes(data)))


# ----------------------------------------------------------------------
# L-BFGS
# ----------------------------------------------------------------------


def test_lbfgs_reaches_a_low_loss_on_a_small_regression():
    pytest.importorskip("scipy")
    rng = np.random.default_rng(0)
    X = rng.uniform(-2, 2, size=(200, 2))
    y = np.sin(X[:, 0]) * np.cos(X[:, 1])
    model = bprop.Sequential([bprop.Dense(16, activation="tanh"), bprop.Dense(1)], seed=0)
    history = model.fit(X, y, loss="mse", optimizer=bprop.LBFGS(max_iter=300), seed=0,
                        validation_data=(X[:50], y[:50]))
    assert history["loss"][0] > 0.05
    assert history["loss"][-1] < 1e-3
    assert 10 < len(history) <= 300 and "val_r2" in history
    assert model.evaluate(X, y)["loss"] == pytest.approx(history["loss"][-1], rel=1e-3)
    assert model._epochs_done == len(history)


def test_lbfgs_weight_decay_shrinks_the_weights_and_not_the_biases():
    pytest.importorskip("scipy")
    X, y = _digits(300)
    norms = []
    for decay in (0.0, 0.1):
        model = bprop.Sequential([bprop.Dense(16, activation="relu"), bprop.Dense(10)], seed=0)
        model.fit(X, y, loss="cross_entropy", optimizer=bprop.LBFGS(max_iter=60,
                                                                    weight_decay=decay))
        norms.append(sum(float(np.sum(w**2)) for w in model.get_weights()[::2]))
    assert norms[1] < 0.5 * norms[0]


def test_lbfgs_without_scipy_says_how_to_install_it(monkeypatch):
    real_import = builtins.__import__

    def no_scipy(name, *args, **kwargs):
        if name.startswith("scipy"):
            raise ImportError("No module named 'scipy'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_scipy)
    X, y = _digits(50)
    model = bprop.Sequential([bprop.Dense(4, activation="relu"), bprop.Dense(10)], seed=0)
    with pytest.raises(ImportError, match=r"optimizer 'lbfgs' needs scipy: pip install scipy"):
        model.fit(X, y, loss="cross_entropy", optimizer="lbfgs", epochs=3)


def test_lbfgs_refuses_callbacks_and_distributed_training():
    X, y = _digits(50)
    model = bprop.Sequential([bprop.Dense(4, activation="relu"), bprop.Dense(10)], seed=0)
    with pytest.raises(ValueError, match="callbacks and diagnostics are not available with L-BFGS"):
        model.fit(X, y, loss="cross_entropy", optimizer="lbfgs", epochs=1, diagnostics=True)
    # Refused before any MPI call, so this needs neither mpi4py nor a job.
    with pytest.raises(ValueError, match="distributed training does not support L-BFGS.*Adam"):
        model.fit(X, y, loss="cross_entropy", optimizer="lbfgs", epochs=1, distributed=True)


# ----------------------------------------------------------------------
# The Python API
# ----------------------------------------------------------------------


def test_every_optimizer_is_exported_and_found_by_name():
    for name in ("sgd", "adam", "adamw", "rmsprop", "adagrad", "lbfgs"):
        obj = bprop.optimizers.get(name)
        cls = type(obj)
        assert cls.__name__.lower() == name and getattr(bprop, cls.__name__) is cls
        assert bprop.optimizers.get(obj) is obj
    assert {"Adam", "AdamW", "RMSprop", "Adagrad", "LBFGS", "SGD"} <= set(bprop.__all__)
    with pytest.raises(ValueError, match="unknown optimizer 'nadam'; use one of sgd, adam"):
        bprop.optimizers.get("nadam")


def test_c_defaults_match_the_python_defaults():
    for cls in (bprop.SGD, bprop.Adam, bprop.AdamW, bprop.RMSprop, bprop.Adagrad):
        mine = cls().config()
        theirs = _core.optimizer_defaults(mine["kind"])
        for key, value in mine.items():
            if isinstance(value, float):
                assert theirs[key] == pytest.approx(value, rel=1e-7), (cls.__name__, key)
            else:
                assert theirs[key] == value, (cls.__name__, key)


@pytest.mark.parametrize(
    "make_bad, message",
    [
        (lambda: bprop.Adam(beta1=1.0), r"beta1 must be in \[0, 1\), got 1.0"),
        (lambda: bprop.Adam(eps=0), "eps must be a finite number > 0, got 0"),
        (lambda: bprop.RMSprop(rho=-0.1), r"rho must be in \[0, 1\)"),
        (lambda: bprop.Adagrad(initial_accumulator=-1), "initial_accumulator must be a finite"),
        (lambda: bprop.AdamW(weight_decay=float("nan")), "weight_decay must be a finite"),
        (lambda: bprop.SGD(clip_norm=0), "clip_norm must be a finite number > 0, got 0"),
        (lambda: bprop.SGD(clip_value=-1.0), "clip_value must be a finite number > 0"),
        (lambda: bprop.SGD(l2=0.1, weight_decay=0.1), "give l2 or weight_decay, not both"),
        (lambda: bprop.Adam(schedule="warp"), "unknown schedule 'warp'"),
        (lambda: bprop.LBFGS(max_iter=0), "max_iter must be an integer >= 1, got 0"),
        (lambda: bprop.LBFGS(tol=-1.0), "tol must be a finite number >= 0"),
    ],
)
def test_bad_settings_name_the_argument(make_bad, message):
    with pytest.raises(ValueError, match=message):
        make_bad()


def test_sgd_weight_decay_is_its_l2_and_reprs_show_what_is_set():
    assert bprop.SGD(weight_decay=0.5).l2 == 0.5
    assert repr(bprop.SGD()) == "SGD(lr=0.01, momentum=0.0, nesterov=False, l2=0.0)"
    text = repr(bprop.Adam(clip_norm=1.0, schedule="cosine"))
    assert text == ("Adam(lr=0.001, beta1=0.9, beta2=0.999, eps=1e-08, weight_decay=0.0, "
                    "clip_norm=1.0, schedule=CosineWarmup(period=None, warmup=0, min_lr=0.0, "
                    "unit='epoch'))")


def test_the_c_core_checks_settings_python_does_not_see():
    net = _small_net()
    with pytest.raises(ValueError, match="bp_net_apply_update: opt->beta2 is 1"):
        net.apply_update({"kind": "adam", "lr": 0.1, "beta1": 0.9, "beta2": 1.0, "eps": 1e-8})
    with pytest.raises(ValueError, match="bp_net_apply_update: sched->period is 3"):
        net.apply_update(bprop.Adam().config(), {"kind": "cosine", "warmup": 3, "period": 3})
    assert net.optimizer_step == 0 and not net.has_state(1)


# ----------------------------------------------------------------------
# The command line
# ----------------------------------------------------------------------


@pytest.mark.parametrize("args", [["--optimizer", "adam"],
                                  ["--optimizer", "adamw", "--schedule", "cosine"],
                                  ["--optimizer", "rmsprop", "--l2", "1e-4"]])
def test_the_command_line_trains_with_other_optimizers(capsys, args):
    from bprop.cli import main

    assert main(["train", "--quiet", *args]) == 0
    accuracy = float(capsys.readouterr().out.split("test accuracy: ")[1].split("%")[0])
    assert accuracy >= 95.0


def test_the_command_line_refuses_a_schedule_for_lbfgs():
    from bprop.cli import main

    with pytest.raises(SystemExit, match="L-BFGS takes no learning-rate schedule"):
        main(["train", "--quiet", "--optimizer", "lbfgs", "--schedule", "step"])

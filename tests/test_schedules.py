"""Learning-rate schedules: each one's sequence of rates against its
formula, per update and per epoch; the rates fit records in the history;
reduce-on-plateau's counters and cuts; names, objects and errors."""

from __future__ import annotations

import math

import bprop
import numpy as np
import pytest
from bprop import datasets, schedules


def f32(value):
    """A setting as the C core holds it: float32."""
    return float(np.float32(value))


def formula(schedule, lr, k):
    """The documented rate at tick k, in float64."""
    if isinstance(schedule, schedules.StepDecay):
        return lr * f32(schedule.gamma) ** (k // schedule.step_size)
    if isinstance(schedule, schedules.ExponentialDecay):
        return lr * f32(schedule.gamma) ** k
    if isinstance(schedule, schedules.InverseScaling):
        return lr / (1 + f32(schedule.gamma) * k) ** f32(schedule.power)
    if isinstance(schedule, schedules.CosineWarmup):
        if k < schedule.warmup:
            return lr * (k + 1) / schedule.warmup
        if k >= schedule.period:
            return f32(schedule.min_lr)
        p = (k - schedule.warmup) / (schedule.period - schedule.warmup)
        low = f32(schedule.min_lr)
        return low + (lr - low) * (1 + math.cos(math.pi * p)) / 2
    return lr


SCHEDULES = [
    schedules.Constant(),
    schedules.StepDecay(step_size=4, gamma=0.5),
    schedules.ExponentialDecay(gamma=0.9),
    schedules.InverseScaling(power=0.5),
    schedules.InverseScaling(power=0.25, gamma=0.1),
    schedules.CosineWarmup(period=30, warmup=5, min_lr=0.001),
    schedules.CosineWarmup(period=12),
]


@pytest.mark.parametrize("schedule", SCHEDULES, ids=repr)
@pytest.mark.parametrize("interval", [1, 7])
def test_rates_follow_the_formula(schedule, interval):
    schedule.interval = interval
    steps = 40 * interval
    got = schedule.rates(0.1, steps)
    want = np.array([formula(schedule, f32(0.1), s // interval) for s in range(steps)])
    np.testing.assert_allclose(got, want.astype(np.float32), rtol=3e-7, atol=0)
    assert got.dtype == np.float32 and len(got) == steps
    if not isinstance(schedule, schedules.Constant):
        assert got.min() < 0.1


def test_inverse_scaling_with_gamma_one_is_scikit_learns_invscaling():
    """scikit-learn's MLP: learning_rate_init / (t + 1) ** power_t."""
    rates = schedules.InverseScaling(power=0.5).rates(0.2, 6)
    np.testing.assert_allclose(rates, [0.2 / (t + 1) ** 0.5 for t in range(6)], rtol=1e-7)


def test_the_optimizer_reports_the_rate_of_any_step():
    opt = bprop.Adam(lr=0.01, schedule=schedules.StepDecay(2, gamma=0.1, unit="step"))
    assert [opt.learning_rate(s) for s in range(5)] == pytest.approx(
        [0.01, 0.01, 0.001, 0.001, 0.0001], rel=1e-6
    )
    assert bprop.SGD(lr=0.3).learning_rate(10**9) == pytest.approx(0.3, rel=1e-7)


def _digits(rows=400):
    X, y = datasets.load_digits()
    X = (X - X.mean(axis=0)) / (X.std(axis=0) + 1e-9)
    return X[:rows], y[:rows]


def _model():
    return bprop.Sequential([bprop.Dense(16, activation="relu"), bprop.Dense(10)], seed=0)


@pytest.mark.parametrize("unit", ["epoch", "step"])
def test_fit_records_the_rate_of_each_epochs_last_update(unit):
    X, y = _digits()
    schedule = schedules.StepDecay(step_size=2 if unit == "epoch" else 10, gamma=0.5, unit=unit)
    history = _model().fit(X, y, loss="cross_entropy", epochs=6, batch_size=50, seed=0,
                           optimizer=bprop.SGD(lr=0.1, momentum=0.9, schedule=schedule))
    per_epoch = 8  # 400 rows in batches of 50
    last = [(e + 1) * per_epoch - 1 for e in range(6)]
    ticks = [s // per_epoch if unit == "epoch" else s for s in last]
    want = [0.1 * 0.5 ** (k // schedule.step_size) for k in ticks]
    assert history["lr"] == pytest.approx(want, rel=1e-6)
    assert schedule.interval == (per_epoch if unit == "epoch" else 1)


def test_a_schedule_changes_training_and_a_constant_one_does_not():
    X, y = _digits()
    runs = {}
    for name, schedule in [("none", None), ("constant", "constant"), ("step", "step")]:
        model = _model()
        model.fit(X, y, loss="cross_entropy", epochs=12, batch_size=40, seed=0,
                  optimizer=bprop.Adam(lr=0.01, schedule=schedule))
        runs[name] = np.concatenate([w.ravel() for w in model.get_weights()])
    assert np.array_equal(runs["none"], runs["constant"])
    assert not np.array_equal(runs["none"], runs["step"])


def test_cosine_without_a_period_ends_with_the_fit():
    X, y = _digits()
    schedule = schedules.CosineWarmup(warmup=2, min_lr=0.0)
    history = _model().fit(X, y, loss="cross_entropy", epochs=10, batch_size=100, seed=0,
                           optimizer=bprop.Adam(lr=0.01, schedule=schedule))
    assert schedule.period == 10
    assert history["lr"][:2] == pytest.approx([0.005, 0.01], rel=1e-6)
    assert history["lr"][-1] == pytest.approx(formula(schedule, 0.01, 9), rel=1e-5)
    assert history["lr"][-1] < 0.001
    assert all(a >= b for a, b in zip(history["lr"][1:], history["lr"][2:]))


def test_a_schedule_continues_across_fits_from_the_update_counter():
    X, y = _digits()
    opt = bprop.SGD(lr=0.1, schedule=schedules.ExponentialDecay(0.5))
    model = _model()
    first = model.fit(X, y, loss="cross_entropy", optimizer=opt, epochs=2, batch_size=100)
    second = model.fit(X, y, epochs=2, batch_size=100)
    assert model.optimizer is opt
    assert first["lr"] + second["lr"] == pytest.approx([0.1, 0.05, 0.025, 0.0125], rel=1e-6)
    assert model._net.optimizer_step == 16


def test_plateau_counts_patience_cooldown_and_the_threshold():
    plateau = schedules.ReduceLROnPlateau(factor=0.5, patience=1, cooldown=1, threshold=0.1)
    seen = []
    for value in [1.0, 0.95, 0.8, 0.79, 0.78, 0.77, 0.7, 0.69, 0.68, 0.67]:
        plateau.observe(value)
        seen.append(plateau.reductions)
    # 0.95 and 0.79.. are within 10% of the best; two misses cut, then one
    # epoch of cooldown.
    assert seen == [0, 0, 0, 0, 1, 1, 1, 1, 2, 2]
    assert plateau.state["best"] == pytest.approx(0.7)
    assert plateau.learning_rate(0.1, 0) == pytest.approx(0.025)
    plateau.reset()
    assert plateau.reductions == 0 and plateau.learning_rate(0.1, 0) == pytest.approx(0.1)


def test_plateau_never_goes_below_min_lr_nor_accepts_nan():
    plateau = schedules.ReduceLROnPlateau(factor=0.1, patience=0, min_lr=0.003)
    for value in [1.0, 1.0, 1.0, 1.0]:
        plateau.observe(value)
    assert plateau.reductions == 3
    assert plateau.learning_rate(0.1, 0) == pytest.approx(0.003)
    with pytest.raises(ValueError, match="'metric' is nan; it must be finite"):
        plateau.observe(float("nan"))


def test_plateau_in_fit_cuts_the_rate_when_the_monitored_metric_stalls():
    X, y = _digits()
    plateau = schedules.ReduceLROnPlateau(factor=0.5, patience=0, monitor="loss", mode="max")
    history = _model().fit(X, y, loss="cross_entropy", epochs=6, batch_size=50, seed=0,
                           validation_split=0.25,
                           optimizer=bprop.SGD(lr=0.05, schedule=plateau))
    # With mode="max" a falling loss never improves: every epoch after the
    # first cuts the rate of the epochs that follow it.
    assert all(a > b for a, b in zip(history["loss"], history["loss"][1:]))
    want = [0.05, 0.05, 0.025, 0.0125, 0.00625, 0.003125]
    assert history["lr"] == pytest.approx(want, rel=1e-6)
    assert plateau.reductions == 5


def test_plateau_resumes_exactly_through_a_model_file(tmp_path):
    X, y = _digits()
    run = dict(loss="cross_entropy", batch_size=50, seed=0, validation_data=(X[:80], y[:80]))

    def optimizer():
        return bprop.RMSprop(lr=0.01, schedule=schedules.ReduceLROnPlateau(factor=0.5,
                                                                          patience=1))

    straight = _model()
    h_straight = straight.fit(X, y, optimizer=optimizer(), epochs=8, **run)
    half = _model()
    h_half = half.fit(X, y, optimizer=optimizer(), epochs=4, **run)
    half.save(tmp_path / "half.bpm")
    resumed = bprop.load(tmp_path / "half.bpm")
    assert resumed.optimizer.schedule.state == half.optimizer.schedule.state
    h_rest = resumed.fit(X, y, epochs=4, **run)

    assert h_half["lr"] + h_rest["lr"] == h_straight["lr"]
    assert all(np.array_equal(u, v)
               for u, v in zip(straight.get_weights(), resumed.get_weights()))


def test_schedules_by_name_and_their_errors():
    assert isinstance(schedules.get("cosine"), schedules.CosineWarmup)
    assert isinstance(schedules.get("invscaling"), schedules.InverseScaling)
    assert schedules.get(None) is None
    step = schedules.StepDecay()
    assert schedules.get(step) is step
    with pytest.raises(ValueError, match="unknown schedule 'linear'; use one of constant"):
        schedules.get("linear")
    with pytest.raises(ValueError, match=r"gamma must be a number in \(0, 1\]"):
        schedules.ExponentialDecay(1.5)
    with pytest.raises(ValueError, match="step_size must be an integer >= 1, got 0"):
        schedules.StepDecay(0)
    with pytest.raises(ValueError, match="period must be an integer >= 4, got 3"):
        schedules.CosineWarmup(period=3, warmup=3)
    with pytest.raises(ValueError, match="unit must be 'epoch' or 'step', got 'batch'"):
        schedules.ExponentialDecay(unit="batch")
    with pytest.raises(ValueError, match=r"factor must be a number in \(0, 1\)"):
        schedules.ReduceLROnPlateau(factor=1.0)
    with pytest.raises(ValueError, match="CosineWarmup\\(period=None\\) takes its period"):
        schedules.CosineWarmup().rates(0.1, 3)


def test_a_plateau_monitoring_a_missing_metric_names_what_there_is():
    X, y = _digits(100)
    opt = bprop.SGD(schedule=schedules.ReduceLROnPlateau(monitor="val_loss"))
    with pytest.raises(ValueError, match="monitors 'val_loss', which this fit does not record"):
        _model().fit(X, y, loss="cross_entropy", optimizer=opt, epochs=1)

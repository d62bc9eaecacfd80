"""Tests of bprop.Sequential: accuracy on real data, the fit/predict/evaluate
API, input validation, divergence handling and concurrent prediction.

Every run is seeded, so each bound below holds on every run, not just on
most of them; the margins were checked over several initialisation seeds.
"""

from __future__ import annotations

import re
import threading

import bprop
import numpy as np
import pytest
from bprop import datasets

# ----------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------


def split_standardised(X, y, seed=0, test_size=0.2):
    """A seeded train/test split with features standardised by the
    training rows' statistics: (X_train, y_train, X_test, y_test)."""
    order = np.random.default_rng(seed).permutation(len(X))
    n_test = int(round(len(X) * test_size))
    test, train = order[:n_test], order[n_test:]
    mean, std = X[train].mean(axis=0), X[train].std(axis=0)
    std[std == 0] = 1.0
    return (X[train] - mean) / std, y[train], (X[test] - mean) / std, y[test]


def same_weights(a, b):
    return len(a) == len(b) and all(np.array_equal(u, v) for u, v in zip(a, b))


def small_classifier(n_inputs=None, seed=0):
    return bprop.Sequential(
        [bprop.Dense(8, activation="tanh"), bprop.Dense(3, activation="softmax")],
        n_inputs=n_inputs, seed=seed,
    )


@pytest.fixture(scope="module")
def blobs():
    """Three separable Gaussian blobs in 4 dimensions: (X, labels)."""
    rng = np.random.default_rng(1)
    centres = np.array([[3, 0, 0, 0], [0, 3, 0, 0], [0, 0, 3, 0]], dtype=float)
    y = rng.integers(0, 3, size=150)
    X = centres[y] + rng.normal(size=(150, 4))
    return X, y


@pytest.fixture(scope="module")
def linear_data():
    """A noisy linear regression problem with two outputs: (X, Y)."""
    rng = np.random.default_rng(2)
    X = rng.normal(size=(120, 5))
    Y = X @ rng.normal(size=(5, 2)) + 0.1 * rng.normal(size=(120, 2))
    return X, Y


# ----------------------------------------------------------------------
# Accuracy on the bundled real data sets
# ----------------------------------------------------------------------


def test_digits_test_accuracy_at_least_97_percent():
    X_train, y_train, X_test, y_test = split_standardised(*datasets.load_digits())
    model = bprop.Sequential([bprop.Dense(128, activation="relu"), bprop.Dense(10)], seed=0)
    model.fit(
        X_train, y_train, loss="cross_entropy",
        optimizer=bprop.SGD(lr=0.02, momentum=0.9, l2=5e-3),
        epochs=40, batch_size=32, seed=0,
    )
    assert model.evaluate(X_test, y_test)["accuracy"] >= 0.97


def test_breast_cancer_test_accuracy_at_least_95_percent():
    X_train, y_train, X_test, y_test = split_standardised(*datasets.load_breast_cancer())
    model = bprop.Sequential([bprop.Dense(32, activation="tanh"), bprop.Dense(2)], seed=0)
    model.fit(
        X_train, y_train, loss="cross_entropy",
        optimizer=bprop.SGD(lr=0.02, momentum=0.9, l2=1e-2),
        epochs=30, batch_size=32, seed=0,
    )
    assert model.evaluate(X_test, y_test)["accuracy"] >= 0.95


def test_diabetes_test_r2_at_least_045():
    X_train, y_train, X_test, y_test = split_standardised(*datasets.load_diabetes())
    # The target is standardised with the training rows' statistics too.
    y_mean, y_std = y_train.mean(), y_train.std()
    y_train, y_test = (y_train - y_mean) / y_std, (y_test - y_mean) / y_std
    model = bprop.Sequential([bprop.Dense(16, activation="tanh"), bprop.Dense(1)], seed=0)
    model.fit(
        X_train, y_train, loss="mse",
        optimizer=bprop.SGD(lr=0.002, momentum=0.9, l2=1e-2),
        epochs=30, batch_size=32, seed=0,
    )
    result = model.evaluate(X_test, y_test)
    assert result["r2"] >= 0.45
    # R^2 does not depend on the target's scale, so the standardisation
    # can be undone without changing the score.
    assert bprop.metrics.r2_score(
        y_test * y_std + y_mean, model.predict(X_test) * y_std + y_mean
    ) == pytest.approx(result["r2"], abs=1e-6)


# ----------------------------------------------------------------------
# XOR with stochastic, mini-batch and full-batch gradient descent
# ----------------------------------------------------------------------

XOR_X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=float)
XOR_Y = np.array([0, 1, 1, 0])


@pytest.mark.parametrize("loss", ["binary_cross_entropy", "mse"])
@pytest.mark.parametrize("batch_size", [1, 2, 4, None])
def test_xor_is_learned_by_a_2_4_1_network(batch_size, loss):
    model = bprop.Sequential(
        [bprop.Dense(4, activation="tanh"), bprop.Dense(1, activation="sigmoid")], seed=0
    )
    epochs = {1: 300, 2: 500}.get(batch_size, 1000)
    history = model.fit(
        XOR_X, XOR_Y, loss=loss, optimizer=bprop.SGD(lr=0.1, momentum=0.9),
        epochs=epochs, batch_size=batch_size, seed=0,
    )
    assert model.get_weights()[0].shape == (2, 4)
    assert history["loss"][-1] < 0.1 * history["loss"][0]
    if loss == "mse":
        predicted = (model.predict(XOR_X) > 0.5).astype(int)
    else:
        predicted = model.predict(XOR_X)
    np.testing.assert_array_equal(predicted, XOR_Y)


# ----------------------------------------------------------------------
# The fit API
# ----------------------------------------------------------------------


def test_history_has_one_loss_per_epoch_and_the_loss_decreases(blobs):
    X, y = blobs
    model = small_classifier()
    history = model.fit(X, y, loss="cross_entropy", epochs=12, seed=0)
    assert isinstance(history, bprop.History)
    assert list(history.history) == ["loss", "accuracy", "lr"]
    assert len(history.history["loss"]) == 12 and len(history) == 12
    losses = history.history["loss"]
    assert all(np.isfinite(losses))
    assert losses[-1] < 0.5 * losses[0]
    assert losses[-1] == min(losses)


def test_epochs_zero_trains_nothing(blobs):
    X, y = blobs
    model = small_classifier(n_inputs=4)
    before = model.get_weights()
    history = model.fit(X, y, epochs=0)
    assert history.history == {} and len(history) == 0
    assert same_weights(before, model.get_weights())


def test_validation_data_records_val_loss_and_val_accuracy(blobs):
    X, y = blobs
    model = small_classifier()
    history = model.fit(
        X[:100], y[:100], optimizer=bprop.SGD(lr=0.05, momentum=0.9), epochs=5, seed=0,
        validation_data=(X[100:], y[100:]),
    )
    assert sorted(history.history) == ["accuracy", "loss", "lr", "val_accuracy", "val_loss"]
    assert all(len(values) == 5 for values in history.history.values())
    # The last epoch's figures are those evaluate() reports afterwards.
    final = model.evaluate(X[100:], y[100:])
    assert history["val_loss"][-1] == pytest.approx(final["loss"], rel=1e-6)
    assert history["val_accuracy"][-1] == final["accuracy"]
    assert history["val_accuracy"][-1] >= 0.9


def test_validation_split_records_val_loss_and_val_r2(linear_data):
    X, Y = linear_data
    model = bprop.Sequential([bprop.Dense(2)], seed=0)
    history = model.fit(
        X, Y, loss="mse", optimizer=bprop.SGD(lr=0.05, momentum=0.5), epochs=8, seed=0,
        validation_split=0.25,
    )
    assert sorted(history.history) == ["loss", "lr", "r2", "val_loss", "val_r2"]
    assert all(len(values) == 8 for values in history.history.values())
    assert history["val_loss"][-1] < history["val_loss"][0]
    assert history["val_r2"][-1] > 0.9


def test_n_inputs_is_inferred_from_the_data(blobs):
    X, y = blobs
    model = small_classifier()
    assert not model.built
    with pytest.raises(RuntimeError, match="no parameters yet"):
        model.get_weights()
    model.fit(X, y, epochs=1, seed=0)
    assert model.built and model.n_inputs == 4
    assert [w.shape for w in model.get_weights()] == [(4, 8), (8,), (8, 3), (3,)]
    assert model.n_params == 4 * 8 + 8 + 8 * 3 + 3


def test_n_inputs_given_builds_the_model_before_fit(blobs):
    X, y = blobs
    model = small_classifier(n_inputs=4)
    assert model.built and model.n_inputs == 4
    assert [w.shape for w in model.get_weights()] == [(4, 8), (8,), (8, 3), (3,)]
    # An untrained model already predicts, with the declared shapes.
    assert model.predict(X).shape == (150,)
    with pytest.raises(ValueError, match="X has 5 features but the model takes 4"):
        model.fit(np.hstack([X, X[:, :1]]), y)


def test_loss_and_optimizer_by_name_equal_the_same_objects(blobs):
    X, y = blobs
    by_name = small_classifier()
    by_name.fit(X, y, loss="cross_entropy", optimizer="sgd", epochs=3, seed=0)
    by_object = small_classifier()
    by_object.fit(
        X, y, loss=bprop.CrossEntropy(), optimizer=bprop.SGD(lr=0.01), epochs=3, seed=0
    )
    # "sgd" is SGD(lr=0.01), so both runs take exactly the same steps.
    assert same_weights(by_name.get_weights(), by_object.get_weights())
    assert isinstance(by_name.loss, bprop.CrossEntropy)
    assert isinstance(by_name.optimizer, bprop.SGD) and by_name.optimizer.lr == 0.01


def test_nesterov_momentum_trains_faster_than_plain_sgd(blobs):
    X, y = blobs
    plain = small_classifier().fit(X, y, optimizer=bprop.SGD(lr=0.01), epochs=5, seed=0)
    nesterov = small_classifier().fit(
        X, y, loss="cross_entropy",
        optimizer=bprop.SGD(lr=0.01, momentum=0.9, nesterov=True), epochs=5, seed=0,
    )
    assert nesterov["loss"][-1] < 0.5 * plain["loss"][-1]


def test_default_loss_follows_the_output_activation(blobs, linear_data):
    X, y = blobs
    softmax = bprop.Sequential([bprop.Dense(3, activation="softmax")], seed=0)
    softmax.fit(X, y, epochs=1)
    assert isinstance(softmax.loss, bprop.CrossEntropy)
    sigmoid = bprop.Sequential([bprop.Dense(1, activation="sigmoid")], seed=0)
    sigmoid.fit(X, (y == 0).astype(float), epochs=1)
    assert isinstance(sigmoid.loss, bprop.BinaryCrossEntropy)
    identity = bprop.Sequential([bprop.Dense(2)], seed=0)
    identity.fit(*linear_data, epochs=1)
    assert isinstance(identity.loss, bprop.MeanSquaredError)


def test_cross_entropy_predict_and_predict_proba(blobs):
    X, y = blobs
    model = small_classifier()
    model.fit(X, y, loss="cross_entropy", epochs=10, seed=0)
    proba = model.predict_proba(X[:17])
    assert proba.shape == (17, 3)
    assert (proba >= 0).all() and (proba <= 1).all()
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-5)
    predicted = model.predict(X[:17])
    assert predicted.shape == (17,)
    np.testing.assert_array_equal(predicted, proba.argmax(axis=1))
    # One row still gives a 1-D prediction of one element.
    assert model.predict(X[:1]).shape == (1,)


def test_binary_cross_entropy_predict_and_predict_proba(blobs):
    X, y = blobs
    target = (y == 0).astype(int)
    model = bprop.Sequential([bprop.Dense(4, "tanh"), bprop.Dense(1, "sigmoid")], seed=0)
    model.fit(X, target, epochs=20, optimizer=bprop.SGD(lr=0.1), seed=0)
    proba = model.predict_proba(X)
    assert proba.shape == (150, 1)
    assert (proba > 0).all() and (proba < 1).all()
    predicted = model.predict(X)
    assert predicted.shape == (150,)
    np.testing.assert_array_equal(predicted, (proba[:, 0] > 0.5).astype(int))
    assert np.mean(predicted == target) >= 0.95


def test_mse_predict_shape_and_no_predict_proba(linear_data):
    X, Y = linear_data
    two = bprop.Sequential([bprop.Dense(2)], seed=0)
    two.fit(X, Y, loss="mse", epochs=2, seed=0)
    assert two.predict(X[:7]).shape == (7, 2)
    one = bprop.Sequential([bprop.Dense(1)], seed=0)
    one.fit(X, Y[:, 0], loss="mse", epochs=2, seed=0)
    assert one.predict(X[:7]).shape == (7,)
    with pytest.raises(ValueError, match="predict_proba needs a classification loss"):
        one.predict_proba(X)


def test_evaluate_returns_loss_and_accuracy(blobs):
    X, y = blobs
    model = small_classifier()
    model.fit(X, y, loss="cross_entropy", epochs=5, seed=0)
    result = model.evaluate(X, y)
    assert sorted(result) == ["accuracy", "loss"]
    assert result["accuracy"] == np.mean(model.predict(X) == y)
    proba = model.predict_proba(X).astype(np.float64)
    expected = -np.mean(np.log(proba[np.arange(len(y)), y]))
    assert result["loss"] == pytest.approx(expected, rel=1e-4)


def test_evaluate_returns_loss_and_r2(linear_data):
    X, Y = linear_data
    model = bprop.Sequential([bprop.Dense(2)], seed=0)
    model.fit(X, Y, loss="mse", optimizer=bprop.SGD(lr=0.05), epochs=10, seed=0)
    result = model.evaluate(X, Y)
    assert sorted(result) == ["loss", "r2"]
    predicted = model.predict(X).astype(np.float64)
    assert result["loss"] == pytest.approx(np.mean((predicted - Y) ** 2), rel=1e-4)
    r2 = 1 - ((Y - predicted) ** 2).sum(axis=0) / ((Y - Y.mean(axis=0)) ** 2).sum(axis=0)
    assert result["r2"] == pytest.approx(r2.mean(), rel=1e-5)
    assert result["r2"] > 0.9


def test_same_seed_gives_identical_weights_after_fit(blobs):
    X, y = blobs
    runs = []
    for seed in (7, 7, 8):
        model = small_classifier(seed=seed)
        model.fit(X, y, optimizer=bprop.SGD(lr=0.05, momentum=0.9), epochs=4, seed=seed)
        runs.append(model.get_weights())
    assert same_weights(runs[0], runs[1])
    assert not same_weights(runs[0], runs[2])


def test_verbose_shows_a_progress_bar_on_stderr(blobs, capsys):
    X, y = blobs
    small_classifier().fit(X, y, epochs=3, seed=0, verbose=True)
    captured = capsys.readouterr()
    assert "3/3" in captured.err
    assert captured.out == ""


def test_quiet_fit_writes_nothing(blobs, capsys):
    X, y = blobs
    small_classifier().fit(X, y, epochs=3, seed=0, validation_split=0.2, verbose=False)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


# ----------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------


def _with(X, row, col, value):
    bad = np.array(X, dtype=float)
    bad[row, col] = value
    return bad


# (id, fit arguments built from (X, y), message pattern)
BAD_FITS = [
    ("nan_in_X", lambda X, y: dict(X=_with(X, 3, 1, np.nan), y=y),
     r"X contains NaN or infinity \(first at index \[3, 1\]\)"),
    ("inf_in_X", lambda X, y: dict(X=_with(X, 5, 0, -np.inf), y=y),
     r"X contains NaN or infinity \(first at index \[5, 0\]\)"),
    ("nan_in_y", lambda X, y: dict(X=X, y=np.where(np.arange(len(y)) == 4, np.nan, y)),
     r"y contains NaN or infinity \(first at index \[4\]\)"),
    ("inf_in_y", lambda X, y: dict(X=X, y=np.where(np.arange(len(y)) == 2, np.inf, y)),
     r"y contains NaN or infinity \(first at index \[2\]\)"),
    ("empty_X", lambda X, y: dict(X=np.empty((0, 4)), y=np.empty(0)),
     r"X is empty: shape \(0, 4\)"),
    ("mismatched_lengths", lambda X, y: dict(X=X, y=y[:-1]),
     "X and y have different numbers of rows: 150 and 149"),
    ("negative_label", lambda X, y: dict(X=X, y=np.where(np.arange(len(y)) == 0, -1, y)),
     r"label -1 outside \[0, 2\]"),
    ("label_equal_to_units", lambda X, y: dict(X=X, y=np.where(np.arange(len(y)) == 0, 3, y)),
     r"label 3 outside \[0, 2\]: the output layer has 3 units"),
    ("fractional_label", lambda X, y: dict(X=X, y=y + 0.5),
     "whole class indices, got fractional values"),
    ("wrong_number_of_features", lambda X, y: dict(X=X[:, :3], y=y),
     "X has 3 features but the model takes 4"),
    ("one_dimensional_X", lambda X, y: dict(X=X[:, 0], y=y),
     r"X must be 2-D, got shape \(150,\) \(use reshape\(-1, 1\)"),
    ("strings_in_X", lambda X, y: dict(X=np.full((150, 4), "a"), y=y),
     "X must be numeric, got an array of dtype <U1"),
    ("non_numeric_object_X",
     lambda X, y: dict(X=np.array([[1.0, "two", 3.0, 4.0]] * 150, dtype=object), y=y),
     "X must hold numbers only: could not convert string to float: 'two'"),
    ("string_labels", lambda X, y: dict(X=X, y=y.astype(str)), "y must be numeric"),
    ("batch_size_zero", lambda X, y: dict(X=X, y=y, batch_size=0),
     "batch_size must be >= 1, got 0"),
    ("epochs_negative", lambda X, y: dict(X=X, y=y, epochs=-1), "epochs must be >= 0, got -1"),
    ("epochs_not_integer", lambda X, y: dict(X=X, y=y, epochs=2.5),
     "epochs must be an integer, got 2.5"),
    ("unknown_loss", lambda X, y: dict(X=X, y=y, loss="hinge"), "unknown loss 'hinge'"),
    ("unknown_optimizer", lambda X, y: dict(X=X, y=y, optimizer="adadelta"),
     "unknown optimizer 'adadelta'; use one of sgd, adam, adamw, rmsprop, adagrad, lbfgs"),
    ("validation_split_negative", lambda X, y: dict(X=X, y=y, validation_split=-0.1),
     r"validation_split must be in \(0, 1\), got -0.1"),
    ("validation_split_one", lambda X, y: dict(X=X, y=y, validation_split=1.0),
     r"validation_split must be in \(0, 1\), got 1.0"),
    ("validation_split_above_one", lambda X, y: dict(X=X, y=y, validation_split=1.5),
     r"validation_split must be in \(0, 1\), got 1.5"),
    ("validation_data_and_split",
     lambda X, y: dict(X=X, y=y, validation_data=(X, y), validation_split=0.2),
     "give validation_data or validation_split, not both"),
    ("validation_labels_out_of_range",
     lambda X, y: dict(X=X, y=y, validation_data=(X, y + 1)), r"y_val has label 3 outside"),
]


@pytest.mark.parametrize(
    "make_args, message", [case[1:] for case in BAD_FITS], ids=[case[0] for case in BAD_FITS]
)
def test_bad_fit_input_raises_and_leaves_the_weights_unchanged(blobs, make_args, message):
    X, y = blobs
    model = small_classifier(n_inputs=4)
    model.fit(X, y, epochs=1, seed=0)
    before = model.get_weights()
    with pytest.raises(ValueError, match=message):
        model.fit(**make_args(X, y))
    assert same_weights(before, model.get_weights())
    # The model still works after the failed call.
    assert model.predict(X).shape == (150,)


def test_binary_cross_entropy_targets_must_lie_in_0_1(blobs):
    X, y = blobs
    model = bprop.Sequential([bprop.Dense(1, activation="sigmoid")], n_inputs=4, seed=0)
    before = model.get_weights()
    with pytest.raises(ValueError, match=r"y must be in \[0, 1\] for binary_cross_entropy"):
        model.fit(X, y)
    assert same_weights(before, model.get_weights())


def test_validation_data_with_other_features_is_refused_before_building(blobs):
    X, y = blobs
    model = small_classifier()
    with pytest.raises(ValueError, match="X_val has 3 features but X has 4"):
        model.fit(X, y, validation_data=(X[:, :3], y))
    assert not model.built


@pytest.mark.parametrize(
    "X, message",
    [
        (np.zeros((5, 3)), "X has 3 features but the model takes 4"),
        (np.zeros(4), r"X must be 2-D, got shape \(4,\)"),
        (np.zeros((0, 4)), r"X is empty: shape \(0, 4\)"),
        (np.full((2, 4), np.nan), "X contains NaN or infinity"),
    ],
    ids=["wrong_features", "one_dimensional", "empty", "nan"],
)
def test_bad_predict_input_raises(blobs, X, message):
    model = small_classifier(n_inputs=4)
    with pytest.raises(ValueError, match=message):
        model.predict(X)
    with pytest.raises(ValueError, match=message):
        model.predict_proba(X)
    with pytest.raises(ValueError, match=message):
        model.evaluate(X, np.zeros(len(X), dtype=int))


def test_unknown_activation_is_refused():
    with pytest.raises(ValueError, match="unknown activation 'mish'; choose one of identity"):
        bprop.Dense(8, activation="mish")


def test_softmax_on_a_hidden_layer_is_refused():
    with pytest.raises(ValueError, match="layer 0: softmax is only allowed on the output"):
        bprop.Sequential([bprop.Dense(8, activation="softmax"), bprop.Dense(2)])


@pytest.mark.parametrize("lr", [0, -0.1, float("nan"), float("inf")])
def test_sgd_learning_rate_must_be_positive_and_finite(lr):
    with pytest.raises(ValueError, match="lr must be a finite number > 0"):
        bprop.SGD(lr=lr)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(momentum=1.0), r"momentum must be in \[0, 1\)"),
        (dict(momentum=-0.5), r"momentum must be in \[0, 1\)"),
        (dict(nesterov=True), "nesterov=True needs momentum > 0"),
        (dict(l2=-1.0), "l2 must be a finite number >= 0"),
    ],
)
def test_sgd_other_settings_are_checked(kwargs, message):
    with pytest.raises(ValueError, match=message):
        bprop.SGD(**kwargs)


# ----------------------------------------------------------------------
# Divergence
# ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def large_targets():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(64, 3))
    return X, 1000.0 * X @ np.array([1.0, -2.0, 0.5]) + 500.0


def _regressor():
    return bprop.Sequential([bprop.Dense(4, activation="tanh"), bprop.Dense(1)], seed=0)


def test_divergence_restores_the_last_good_epoch(large_targets):
    X, y = large_targets
    settings = dict(loss="mse", optimizer=bprop.SGD(lr=1e6, momentum=0.9), batch_size=64,
                    seed=0)
    model = _regressor()
    with pytest.raises(bprop.DivergenceError) as info:
        model.fit(X, y, epochs=10, **settings)
    assert isinstance(info.value, FloatingPointError)
    assert "restored to the end of the previous epoch" in str(info.value)
    epoch = int(re.search(r"diverged in epoch (\d+)", str(info.value)).group(1))
    after = model.get_weights()
    assert all(np.isfinite(w).all() for w in after)

    # A twin trained for the epochs that succeeded ends where the model is.
    twin = _regressor()
    twin.fit(X, y, epochs=epoch - 1, **settings)
    assert same_weights(after, twin.get_weights())


def test_a_diverged_fit_can_be_retried_with_a_smaller_learning_rate(large_targets):
    X, y = large_targets
    model = _regressor()
    model.fit(X, y / 1000, loss="mse", optimizer=bprop.SGD(lr=0.01, momentum=0.9),
              epochs=3, seed=0)
    before = model.get_weights()
    with pytest.raises(bprop.DivergenceError, match="diverged in epoch 1"):
        model.fit(X, y, optimizer=bprop.SGD(lr=1e6, momentum=0.9), epochs=5, batch_size=8)
    assert same_weights(before, model.get_weights())

    # The momentum was restored too, so training goes on from a sane state.
    history = model.fit(X, y / 1000, optimizer=bprop.SGD(lr=0.01, momentum=0.9), epochs=3)
    assert all(np.isfinite(history["loss"]))
    assert history["loss"][-1] < history["loss"][0]


# ----------------------------------------------------------------------
# Threads
# ----------------------------------------------------------------------


def test_predict_from_four_threads_matches_serial_predict():
    X, y = datasets.load_digits()
    X = (X - X.mean(axis=0)) / np.where(X.std(axis=0) > 0, X.std(axis=0), 1.0)
    model = bprop.Sequential([bprop.Dense(32, activation="relu"), bprop.Dense(10)], seed=0)
    model.fit(X, y, loss="cross_entropy", optimizer=bprop.SGD(lr=0.05, momentum=0.9),
              epochs=3, seed=0)
    # 1,797 rows span two of the model's 1,024-row prediction chunks.
    expected_proba = model.predict_proba(X)
    expected = model.predict(X)

    barrier = threading.Barrier(4)
    results: dict[int, list] = {}
    errors: list[BaseException] = []

    def work(index):
        try:
            barrier.wait()
            results[index] = [(model.predict_proba(X), model.predict(X)) for _ in range(5)]
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert sorted(results) == [0, 1, 2, 3]
    for runs in results.values():
        for proba, predicted in runs:
            np.testing.assert_array_equal(proba, expected_proba)
            np.testing.assert_array_equal(predicted, expected)

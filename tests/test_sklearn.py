"""bprop.MLPClassifier and MLPRegressor as scikit-learn estimators.

scikit-learn's own estimator checks run on both when it is installed;
the other tests cover labels, targets, the fitted attributes, the
extensions and the estimators without scikit-learn.
"""

import importlib
import pickle
import sys
import warnings

import bprop
import numpy as np
import pytest
from bprop import MLPClassifier, MLPRegressor
from bprop import sklearn as bsk

#: Settings that fit the small test sets in few epochs.
FAST = {"learning_rate_init": 0.01, "batch_size": 16}


def _blobs(n=120, classes=3, features=4, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    X = rng.normal(size=(n, features)) + 3.0 * y[:, None]
    return (X - X.mean(axis=0)) / X.std(axis=0), y


@pytest.fixture(autouse=True)
def _no_convergence_warnings():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Stochastic Optimizer: Maximum iterations")
        warnings.filterwarnings("ignore", message="L-BFGS reached max_iter")
        yield


# ---------------------------------------------------------------------------
# scikit-learn's estimator checks
# ---------------------------------------------------------------------------

_WEIGHTS = ("minibatch training shuffles and groups the rows, so a row of weight 2 is not "
            "the same as a row given twice; scikit-learn's MLP fails this check too")

EXPECTED_FAILED = {
    "check_sample_weight_equivalence_on_dense_data": _WEIGHTS,
    "check_sample_weight_equivalence_on_sparse_data": _WEIGHTS,
}


def _expected_failed(estimator):
    return EXPECTED_FAILED


if bsk.HAS_SKLEARN:
    from sklearn.utils.estimator_checks import parametrize_with_checks

    @parametrize_with_checks(
        [MLPClassifier(max_iter=50, random_state=0), MLPRegressor(max_iter=50, random_state=0)],
        expected_failed_checks=_expected_failed,
    )
    def test_sklearn_estimator_checks(estimator, check):
        check(estimator)


def test_every_expected_failure_has_a_reason():
    for check, reason in EXPECTED_FAILED.items():
        assert check.startswith("check_")
        assert len(reason) > 40, check


# ---------------------------------------------------------------------------
# Labels and targets
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("labels", [
    np.array(["cat", "dog", "emu"]), np.array([-5, 10, 300]), np.array([1.0, 4.0, 9.0]),
])
def test_labels_of_any_type_come_back_as_given(labels):
    X, y = _blobs()
    clf = MLPClassifier(hidden_layer_sizes=(16,), max_iter=100, **FAST,
                        random_state=0)
    clf.fit(X, labels[y])
    np.testing.assert_array_equal(clf.classes_, np.sort(labels))
    assert clf.score(X, labels[y]) > 0.95
    assert set(clf.predict(X)) <= set(labels)
    proba = clf.predict_proba(X)
    assert proba.shape == (len(X), 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(clf.classes_[proba.argmax(axis=1)], clf.predict(X))


def test_boolean_labels_use_one_logistic_output():
    X, y = _blobs(classes=2)
    clf = MLPClassifier(hidden_layer_sizes=(8,), max_iter=100, random_state=0)
    clf.fit(X, y.astype(bool))
    assert clf.classes_.tolist() == [False, True]
    assert clf.n_outputs_ == 1 and clf.out_activation_ == "logistic"
    assert clf.predict(X).dtype == bool
    proba = clf.predict_proba(X)
    assert proba.shape == (len(X), 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    np.testing.assert_allclose(clf.predict_log_proba(X), np.log(proba))


def test_column_y_behaves_like_flat_y():
    X, y = _blobs()
    flat = MLPClassifier(hidden_layer_sizes=(8,), max_iter=20, random_state=1).fit(X, y)
    column = MLPClassifier(hidden_layer_sizes=(8,), max_iter=20, random_state=1).fit(
        X, y[:, None])
    np.testing.assert_array_equal(flat.predict_proba(X), column.predict_proba(X))
    reg = MLPRegressor(hidden_layer_sizes=(8,), max_iter=20, random_state=1)
    a = reg.fit(X, y.astype(float)).predict(X)
    b = reg.fit(X, y[:, None].astype(float)).predict(X)
    assert a.shape == b.shape == (len(X),)
    np.testing.assert_array_equal(a, b)


def test_single_class_is_a_clear_error():
    X, _ = _blobs()
    with pytest.raises(ValueError, match="one class.*at least two classes"):
        MLPClassifier().fit(X, np.full(len(X), "only"))


def test_continuous_labels_are_refused():
    X, _ = _blobs()
    with pytest.raises(ValueError, match="Unknown label type: continuous"):
        MLPClassifier().fit(X, np.linspace(0, 1, len(X)))


def test_multilabel_targets():
    X, y = _blobs(n=150)
    Y = np.stack([y == 0, y >= 1, y == 2], axis=1).astype(int)
    clf = MLPClassifier(hidden_layer_sizes=(16,), max_iter=200, **FAST,
                        random_state=0).fit(X, Y)
    assert clf.out_activation_ == "logistic"
    np.testing.assert_array_equal(clf.classes_, [0, 1, 2])
    assert clf.predict(X).shape == (150, 3)
    assert clf.score(X, Y) > 0.9
    proba = clf.predict_proba(X)
    assert proba.shape == (150, 3) and proba.min() >= 0 and proba.max() <= 1


def test_multioutput_regression():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 5))
    Y = np.stack([X[:, 0] + X[:, 1], X[:, 2] - 2 * X[:, 3]], axis=1)
    reg = MLPRegressor(hidden_layer_sizes=(32,), max_iter=300, **FAST,
                       random_state=0).fit(X, Y)
    assert reg.n_outputs_ == 2 and reg.out_activation_ == "identity"
    assert reg.predict(X).shape == (200, 2)
    assert reg.score(X, Y) > 0.95


# ---------------------------------------------------------------------------
# Fitted attributes and training rules
# ---------------------------------------------------------------------------

def test_fitted_attributes_have_scikit_learn_shapes():
    X, y = _blobs(features=5)
    clf = MLPClassifier(hidden_layer_sizes=(7, 6), max_iter=30, random_state=0).fit(X, y)
    assert [c.shape for c in clf.coefs_] == [(5, 7), (7, 6), (6, 3)]
    assert [b.shape for b in clf.intercepts_] == [(7,), (6,), (3,)]
    assert clf.n_layers_ == 4 and clf.n_outputs_ == 3 and clf.n_features_in_ == 5
    assert clf.out_activation_ == "softmax"
    assert len(clf.loss_curve_) == clf.n_iter_ and clf.loss_ == clf.loss_curve_[-1]
    assert clf.best_loss_ == min(clf.loss_curve_)
    assert clf.t_ == clf.n_iter_ * len(X)
    assert clf.validation_scores_ is None and clf.best_validation_score_ is None


def test_convergence_stops_before_max_iter_and_warns_otherwise():
    X, y = _blobs()
    clf = MLPClassifier(hidden_layer_sizes=(8,), max_iter=500, tol=1e-2, random_state=0)
    clf.fit(X, y)
    assert clf.n_iter_ < 500
    with pytest.warns(bsk.ConvergenceWarning, match="Maximum iterations \\(3\\)"):
        MLPClassifier(max_iter=3).fit(X, y)


def test_early_stopping_keeps_the_best_validation_score():
    X, y = _blobs(n=300)
    clf = MLPClassifier(hidden_layer_sizes=(8,), early_stopping=True, max_iter=100,
                        **FAST, random_state=0).fit(X, y)
    assert clf.best_loss_ is None
    assert len(clf.validation_scores_) == clf.n_iter_ == len(clf.validation_loss_curve_)
    assert clf.best_validation_score_ == max(clf.validation_scores_)
    assert clf.best_validation_score_ > 0.9


def test_adaptive_rate_divides_by_five():
    X, y = _blobs()
    clf = MLPClassifier(solver="sgd", learning_rate="adaptive", learning_rate_init=0.1,
                        n_iter_no_change=1, tol=10.0, max_iter=20, random_state=0)
    clf.fit(X, y)
    assert clf._opt.lr < 0.1 / 5 + 1e-12
    assert clf.n_iter_ <= 20


def test_lbfgs_solver():
    X, y = _blobs()
    clf = MLPClassifier(solver="lbfgs", hidden_layer_sizes=(8,), max_iter=100,
                        random_state=0).fit(X, y)
    assert clf.score(X, y) > 0.95
    assert 0 < clf.n_iter_ <= 100
    with pytest.raises(AttributeError, match="partial_fit"):
        clf.partial_fit(X, y)


def test_alpha_becomes_the_optimizers_l2_term():
    X, y = _blobs(n=100)
    sgd = MLPRegressor(solver="sgd", alpha=0.5, batch_size=20).fit(X, y)._opt
    assert sgd.l2 == pytest.approx(0.5 / 20 * 2.0)   # mse gradient is twice sklearn's
    assert sgd.lr == pytest.approx(0.001 / 2.0)
    adam = MLPClassifier(alpha=0.5, batch_size=20, max_iter=2).fit(X, y)._opt
    assert adam.weight_decay == pytest.approx(0.5 / 20)
    lbfgs = MLPClassifier(solver="lbfgs", alpha=0.5, max_iter=2).fit(X, y)._opt
    assert lbfgs.weight_decay == pytest.approx(0.5 / 100)


# ---------------------------------------------------------------------------
# warm_start and partial_fit continue the optimizer's state
# ---------------------------------------------------------------------------

def test_partial_fit_continues_like_more_epochs():
    X, y = _blobs()
    params = dict(hidden_layer_sizes=(8,), random_state=3)
    whole = MLPClassifier(max_iter=3, n_iter_no_change=100, **params).fit(X, y)
    steps = MLPClassifier(**params)
    for _ in range(3):
        steps.partial_fit(X, y, classes=[0, 1, 2])
    assert steps.n_iter_ == 3 and steps.t_ == 3 * len(X)
    for a, b in zip(whole.coefs_, steps.coefs_):
        np.testing.assert_array_equal(a, b)


def test_first_partial_fit_needs_classes():
    X, y = _blobs()
    with pytest.raises(ValueError, match="classes="):
        MLPClassifier().partial_fit(X, y)
    clf = MLPClassifier().partial_fit(X[:10], y[:10], classes=[0, 1, 2, 9])
    assert clf.classes_.tolist() == [0, 1, 2, 9]


def test_warm_start_continues_the_same_run():
    X, y = _blobs()
    params = dict(hidden_layer_sizes=(8,), random_state=5, n_iter_no_change=100)
    whole = MLPClassifier(max_iter=4, **params).fit(X, y)
    warm = MLPClassifier(max_iter=2, warm_start=True, **params).fit(X, y).fit(X, y)
    assert warm.n_iter_ == 4
    np.testing.assert_array_equal(whole.coefs_[0], warm.coefs_[0])
    cold = MLPClassifier(max_iter=2, **params).fit(X, y).fit(X, y)
    assert cold.n_iter_ == 2


# ---------------------------------------------------------------------------
# Extensions
# ---------------------------------------------------------------------------

def test_class_weight_shifts_predictions_towards_the_heavy_class():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 2))
    y = (X[:, 0] + 0.8 * rng.normal(size=300) > 0).astype(int)
    params = dict(hidden_layer_sizes=(8,), max_iter=50, **FAST, random_state=0)
    plain = MLPClassifier(**params).fit(X, y).predict(X).mean()
    heavy = MLPClassifier(class_weight={1: 10.0}, **params).fit(X, y).predict(X).mean()
    assert heavy > plain + 0.1
    balanced = MLPClassifier(class_weight="balanced", **params).fit(X, y)
    assert balanced.score(X, y) > 0.7


def test_activation_per_hidden_layer_and_core_optimizers():
    X, y = _blobs()
    clf = MLPClassifier(hidden_layer_sizes=(8, 8), activation=["tanh", "logistic"],
                        solver=bprop.RMSprop(lr=0.01), max_iter=50, random_state=0).fit(X, y)
    assert [layer.activation for layer in clf.model_.layers] == ["tanh", "sigmoid", "softmax"]
    assert clf.score(X, y) > 0.95
    with pytest.raises(ValueError, match="one per hidden layer"):
        MLPClassifier(hidden_layer_sizes=(8, 8), activation=["tanh"]).fit(X, y)
    sched = MLPClassifier(solver="sgd", learning_rate=bprop.schedules.ExponentialDecay(0.9),
                          max_iter=5, random_state=0).fit(X, y)
    assert isinstance(sched._opt.schedule, bprop.schedules.ExponentialDecay)


def test_n_threads_is_restored_after_fit():
    X, y = _blobs()
    before = bprop.get_num_threads()
    clf = MLPClassifier(hidden_layer_sizes=(8,), max_iter=5, n_threads=1).fit(X, y)
    assert clf.predict(X).shape == (len(X),)
    assert bprop.get_num_threads() == before


# ---------------------------------------------------------------------------
# Pickle, clone, GridSearchCV, Pipeline
# ---------------------------------------------------------------------------

def test_pickle_keeps_predictions():
    X, y = _blobs()
    clf = MLPClassifier(hidden_layer_sizes=(8,), max_iter=20, random_state=0).fit(X, y)
    again = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(again.predict_proba(X), clf.predict_proba(X))
    assert again.get_params() == clf.get_params()


@pytest.mark.skipif(not bsk.HAS_SKLEARN, reason="needs scikit-learn")
def test_clone_grid_search_and_pipeline():
    from sklearn.base import clone
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = _blobs(n=150)
    clf = MLPClassifier(hidden_layer_sizes=(8,), max_iter=30, **FAST,
                        random_state=0)
    copy = clone(clf.set_params(alpha=0.01))
    assert copy.get_params()["alpha"] == 0.01 and not hasattr(copy, "model_")
    search = GridSearchCV(make_pipeline(StandardScaler(), clf),
                          {"mlpclassifier__hidden_layer_sizes": [(4,), (16,)]}, cv=3)
    search.fit(X, y)
    assert search.best_params_["mlpclassifier__hidden_layer_sizes"] in [(4,), (16,)]
    assert search.score(X, y) > 0.9


@pytest.mark.skipif(not bsk.HAS_SKLEARN, reason="needs scikit-learn")
def test_close_to_scikit_learn_on_digits():
    from bprop.bench_sklearn import _split
    from sklearn.neural_network import MLPClassifier as Reference

    x_train, y_train, x_test, y_test = _split("digits")
    params = dict(hidden_layer_sizes=(64,), batch_size=64, max_iter=60, random_state=0)
    ours = MLPClassifier(**params).fit(x_train, y_train).score(x_test, y_test)
    theirs = Reference(**params).fit(x_train, y_train).score(x_test, y_test)
    assert abs(ours - theirs) < 0.02


# ---------------------------------------------------------------------------
# Without scikit-learn
# ---------------------------------------------------------------------------

@pytest.fixture
def without_sklearn(monkeypatch):
    for name in [m for m in sys.modules if m == "sklearn" or m.startswith("sklearn.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "sklearn", None)
    module = importlib.reload(bsk)
    yield module
    monkeypatch.undo()
    importlib.reload(bsk)


def test_estimators_work_without_scikit_learn(without_sklearn):
    module = without_sklearn
    assert module.HAS_SKLEARN is False
    X, y = _blobs()
    clf = module.MLPClassifier(hidden_layer_sizes=(8,), max_iter=50, **FAST,
                               random_state=0)
    assert clf.get_params()["hidden_layer_sizes"] == (8,)
    assert clf.set_params(alpha=0.1).alpha == 0.1
    with pytest.raises(ValueError, match="invalid parameter 'nope'"):
        clf.set_params(nope=1)
    assert clf.fit(X, y).score(X, y) > 0.95
    reg = module.MLPRegressor(hidden_layer_sizes=(8,), max_iter=100, **FAST,
                              random_state=0)
    assert reg.fit(X, y.astype(float)).score(X, y.astype(float)) > 0.8
    with pytest.raises(ValueError, match="expecting 4 features"):
        clf.predict(X[:, :3])
    with pytest.raises(AttributeError, match="not fitted"):
        module.MLPRegressor().predict(X)


def test_top_level_names_are_the_estimators():
    assert bprop.MLPClassifier is bsk.MLPClassifier
    assert bprop.MLPRegressor is bsk.MLPRegressor
    with pytest.raises(AttributeError, match="no attribute 'MLPNothing'"):
        _ = bprop.MLPNothing


@pytest.mark.skipif(not bsk.HAS_SKLEARN, reason="needs scikit-learn")
def test_parity_bench_rows():
    from bprop import bench

    rows = bench.run(("sklearn",), quick=True)
    assert [row.name for row in rows] == ["digits", "breast_cancer", "diabetes"]
    for row in rows:
        assert row.figures["bprop"] > 0 and row.figures["sklearn"] > 0
        assert row.ratio("sklearn") == pytest.approx(row.figures["sklearn"] / row.figures["bprop"])
        assert "points" in row.note

"""ONNX export: every layer, activation and loss bprop has, run in
onnxruntime and compared with bprop's own predictions (within 1e-5),
and clear errors for what cannot be exported.
"""

from __future__ import annotations

import sys

import bprop
import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

CASES = {
    "cross_entropy, relu and tanh": (
        [bprop.Dense(16, activation="relu"), bprop.Dense(8, activation="tanh"), bprop.Dense(3)],
        "cross_entropy",
    ),
    "explicit softmax output": (
        [bprop.Dense(6, activation="sigmoid"), bprop.Dense(3, activation="softmax")],
        "cross_entropy",
    ),
    "binary_cross_entropy, one output": (
        [bprop.Dense(5, activation="tanh"), bprop.Dense(1, activation="sigmoid")],
        "binary_cross_entropy",
    ),
    "binary_cross_entropy, two outputs": (
        [bprop.Dense(5, activation="relu"), bprop.Dense(2)],
        "binary_cross_entropy",
    ),
    "mse, identity output": ([bprop.Dense(7, activation="sigmoid"), bprop.Dense(2)], "mse"),
    "mse, tanh output": ([bprop.Dense(4, activation="identity"), bprop.Dense(1, "tanh")], "mse"),
}


def _data(loss, n_out, rng):
    X = rng.normal(size=(200, 6)) * 3 + 1
    if loss == "cross_entropy":
        return X, rng.integers(0, n_out, size=len(X))
    if loss == "binary_cross_entropy":
        return X, rng.integers(0, 2, size=(len(X), n_out)).astype(float)
    return X, rng.normal(size=(len(X), n_out)) * 0.5


def _run_onnx(path, X):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": np.asarray(X, dtype=np.float32)})[0]


@pytest.mark.parametrize("scaled", [False, True], ids=["raw", "input_scaling"])
@pytest.mark.parametrize("case", list(CASES))
def test_onnxruntime_matches_bprop_within_1e_5(tmp_path, case, scaled):
    layers, loss = CASES[case]
    rng = np.random.default_rng(len(case))
    X, y = _data(loss, layers[-1].units, rng)
    model = bprop.Sequential([bprop.Dense(d.units, d.activation) for d in layers], seed=1)
    if scaled:
        model.input_scaling = (X.mean(axis=0), X.std(axis=0))
    else:
        X = (X - X.mean(axis=0)) / X.std(axis=0)
    model.fit(X, y, loss=loss, optimizer=bprop.SGD(0.05, momentum=0.9), epochs=5, seed=0)
    model.to_onnx(tmp_path / "model.onnx")

    # Exactly representable in float32, so both see the same inputs.
    X32 = X.astype(np.float32)
    expected = model._outputs(model._check_x(X32))
    got = _run_onnx(tmp_path / "model.onnx", X32)
    assert got.shape == expected.shape == (len(X), layers[-1].units)
    assert np.abs(got - expected).max() <= 1e-5


def test_the_exported_graph_is_valid_and_names_its_producer(tmp_path):
    model = bprop.Sequential([bprop.Dense(3, activation="relu"), bprop.Dense(2)], n_inputs=4)
    model.metadata = {"purpose": "test"}
    model.to_onnx(tmp_path / "m.onnx")
    proto = onnx.load(str(tmp_path / "m.onnx"))
    onnx.checker.check_model(proto)
    assert proto.producer_name == "bprop"
    assert [n.op_type for n in proto.graph.node] == ["Gemm", "Relu", "Gemm", "Identity"]
    assert {p.key: p.value for p in proto.metadata_props} == {"purpose": "test"}
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert (dims[0].dim_param, dims[1].dim_value) == ("batch", 4)


def test_an_activation_without_an_onnx_operator_is_refused(tmp_path, monkeypatch):
    from bprop import onnx_export

    monkeypatch.delitem(onnx_export.ONNX_ACTIVATIONS, "tanh")
    model = bprop.Sequential([bprop.Dense(3, activation="tanh"), bprop.Dense(2)], n_inputs=4)
    with pytest.raises(ValueError, match="layer 0 uses activation 'tanh'.*no ONNX operator"):
        model.to_onnx(tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


def test_an_unbuilt_model_cannot_be_exported(tmp_path):
    with pytest.raises(RuntimeError, match="no parameters"):
        bprop.Sequential([bprop.Dense(2)]).to_onnx(tmp_path / "m.onnx")


def test_a_missing_onnx_package_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)
    model = bprop.Sequential([bprop.Dense(2)], n_inputs=3)
    with pytest.raises(ImportError, match=r"pip install 'bprop\[onnx\]'"):
        model.to_onnx(tmp_path / "m.onnx")


# ----------------------------------------------------------------------
# Dropout and normalisation layers
# ----------------------------------------------------------------------

LAYER_CASES = {
    "dropout between dense layers": (
        [bprop.Dense(9, "relu"), bprop.Dropout(0.3), bprop.Dense(3)],
        "cross_entropy",
    ),
    "dropout last": ([bprop.Dense(9, "tanh"), bprop.Dense(3), bprop.Dropout(0.5)], "cross_entropy"),
    "batch norm with relu": (
        [bprop.Dense(9), bprop.BatchNorm(activation="relu"), bprop.Dense(3)],
        "cross_entropy",
    ),
    "batch norm without beta, eps 1e-3": (
        [
            bprop.Dense(9),
            bprop.BatchNorm(eps=1e-3, activation="tanh", center=False),
            bprop.Dense(2),
        ],
        "mse",
    ),
    "batch norm last, binary_cross_entropy": (
        [bprop.Dense(7, "elu"), bprop.Dense(2), bprop.BatchNorm(momentum=0.5)],
        "binary_cross_entropy",
    ),
    "layer norm with silu": (
        [bprop.Dense(9), bprop.LayerNorm(activation="silu"), bprop.Dense(3)],
        "cross_entropy",
    ),
    "layer norm without beta, eps 1e-2": (
        [bprop.Dense(9), bprop.LayerNorm(eps=1e-2, center=False), bprop.Dense(2)],
        "mse",
    ),
    "layer norm with gelu": (
        [bprop.Dense(9, "gelu"), bprop.LayerNorm(activation="gelu"), bprop.Dense(3)],
        "cross_entropy",
    ),
    "every kind": (
        [
            bprop.Dense(10),
            bprop.BatchNorm(activation="leaky_relu"),
            bprop.Dropout(0.2),
            bprop.Dense(8),
            bprop.LayerNorm(activation="relu"),
            bprop.Dropout(0.1),
            bprop.Dense(3),
        ],
        "cross_entropy",
    ),
}


def _units(layers):
    return [layer.units for layer in layers if layer.units is not None][-1]


@pytest.mark.parametrize("case", list(LAYER_CASES))
def test_onnxruntime_matches_bprop_for_dropout_and_normalisation(tmp_path, case):
    layers, loss = LAYER_CASES[case]
    rng = np.random.default_rng(len(case))
    X, y = _data(loss, _units(layers), rng)
    model = bprop.Sequential(layers, seed=2)
    model.input_scaling = (X.mean(axis=0), X.std(axis=0))
    model.fit(X, y, loss=loss, optimizer="adam", epochs=4, batch_size=16, seed=0)
    model.to_onnx(tmp_path / "model.onnx")

    X32 = X.astype(np.float32)
    expected = model.predict(X32) if loss == "mse" else model.predict_proba(X32)
    expected = expected.reshape(len(X), -1)
    got = _run_onnx(tmp_path / "model.onnx", X32)
    assert got.shape == expected.shape == (len(X), _units(layers))
    assert np.abs(got - expected).max() <= 1e-5


def test_the_graph_of_each_layer_kind(tmp_path):
    model = bprop.Sequential(
        [
            bprop.Dense(4),
            bprop.Dropout(0.5),
            bprop.BatchNorm(eps=1e-3, activation="relu", center=False),
            bprop.LayerNorm(eps=1e-2, activation="tanh"),
            bprop.Dense(2),
        ],
        n_inputs=3,
        seed=0,
    )
    gamma = np.linspace(0.5, 2.0, 4, dtype=np.float32)
    mean = np.array([0.1, -0.2, 0.3, 0.0], dtype=np.float32)
    var = np.array([1.5, 0.5, 2.0, 1.0], dtype=np.float32)
    weights = model.get_weights()
    weights[2:5] = [gamma, mean, var]
    model.set_weights(weights)
    model.to_onnx(tmp_path / "m.onnx")

    proto = onnx.load(str(tmp_path / "m.onnx"))
    ops = [n.op_type for n in proto.graph.node]
    assert ops == [
        "Gemm",
        "BatchNormalization",
        "Relu",
        "LayerNormalization",
        "Tanh",
        "Gemm",
        "Identity",
    ]
    assert proto.opset_import[0].version >= 17
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in proto.graph.initializer}
    batch_norm, layer_norm = proto.graph.node[1], proto.graph.node[3]
    # Dropout adds nothing: batch norm reads the dense layer's output.
    assert batch_norm.input[0] == proto.graph.node[0].output[0]
    scale, beta, running_mean, running_var = (inits[name] for name in batch_norm.input[1:])
    np.testing.assert_array_equal(scale, gamma)
    np.testing.assert_array_equal(beta, np.zeros(4, np.float32))
    np.testing.assert_array_equal(running_mean, mean)
    np.testing.assert_array_equal(running_var, var)
    attributes = {a.name: onnx.helper.get_attribute_value(a) for a in batch_norm.attribute}
    assert attributes["epsilon"] == pytest.approx(1e-3, rel=1e-6)
    attributes = {a.name: onnx.helper.get_attribute_value(a) for a in layer_norm.attribute}
    assert attributes["epsilon"] == pytest.approx(1e-2, rel=1e-6)
    assert attributes["axis"] == -1

    X = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    got = _run_onnx(tmp_path / "m.onnx", X)
    assert np.abs(got - model.predict(X)).max() <= 1e-5


def test_a_model_without_layer_norm_keeps_opset_13(tmp_path):
    model = bprop.Sequential([bprop.Dense(3), bprop.BatchNorm(), bprop.Dense(2)], n_inputs=4)
    model.to_onnx(tmp_path / "m.onnx")
    proto = onnx.load(str(tmp_path / "m.onnx"))
    assert proto.opset_import[0].version == 13
    assert proto.ir_version == 7

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

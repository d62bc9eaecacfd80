"""Export a Sequential model to ONNX, for inference in other runtimes.

Design decisions:
- Each dense layer is one Gemm node (x @ W + b) followed by its
  activation's node; identity adds none.
- With a fused loss the graph ends as ``predict_proba`` does: Softmax
  after cross-entropy, Sigmoid after binary cross-entropy. The output is
  what bprop's C predict returns, shaped (batch, units).
- A model with ``input_scaling`` starts with (x - mean) / scale in
  double, as bprop computes it, then casts to float.
- Opset 13 and IR version 7: the oldest pair with Softmax over one axis,
  which most runtimes read.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from . import losses

if TYPE_CHECKING:
    from .model import Sequential

OPSET = 13
IR_VERSION = 7

#: The ONNX operator of each activation bprop has; None: no node.
ONNX_ACTIVATIONS: dict[str, str | None] = {
    "identity": None,
    "relu": "Relu",
    "sigmoid": "Sigmoid",
    "tanh": "Tanh",
    "softmax": "Softmax",
}


def _import_onnx() -> Any:
    try:
        import onnx
    except ImportError:
        raise ImportError(
            "to_onnx needs the onnx package: pip install 'bprop[onnx]' (or pip install onnx)"
        ) from None
    return onnx


def _activation_node(helper: Any, name: str, source: str, target: str) -> Any:
    op = ONNX_ACTIVATIONS[name]
    if op == "Softmax":
        return helper.make_node(op, [source], [target], axis=1)
    return helper.make_node(op, [source], [target])


def build(model: Sequential) -> Any:
    """The ONNX ModelProto of `model`; raises ValueError for what ONNX
    cannot express."""
    onnx = _import_onnx()
    helper, numpy_helper = onnx.helper, onnx.numpy_helper

    model._require_built()
    for i, layer in enumerate(model.layers):
        if layer.activation not in ONNX_ACTIVATIONS:
            raise ValueError(
                f"layer {i} uses activation {layer.activation!r}, which has no ONNX "
                f"operator; exportable activations: {', '.join(ONNX_ACTIVATIONS)}"
            )

    nodes, inits = [], []
    x = "input"
    if model.input_scaling is not None:
        mean, scale = model.input_scaling
        inits += [
            numpy_helper.from_array(mean, "scaling_mean"),
            numpy_helper.from_array(scale, "scaling_scale"),
        ]
        nodes += [
            helper.make_node("Cast", [x], ["input_f64"], to=onnx.TensorProto.DOUBLE),
            helper.make_node("Sub", ["input_f64", "scaling_mean"], ["centred"]),
            helper.make_node("Div", ["centred", "scaling_scale"], ["scaled_f64"]),
            helper.make_node("Cast", ["scaled_f64"], ["scaled"], to=onnx.TensorProto.FLOAT),
        ]
        x = "scaled"

    weights = model.get_weights()
    last = len(model.layers) - 1
    for i, layer in enumerate(model.layers):
        w, b = weights[2 * i], weights[2 * i + 1]
        inits += [
            numpy_helper.from_array(w, f"dense{i}_weight"),
            numpy_helper.from_array(b, f"dense{i}_bias"),
        ]
        z = f"dense{i}_linear"
        nodes.append(helper.make_node("Gemm", [x, f"dense{i}_weight", f"dense{i}_bias"], [z]))
        act = layer.activation
        if i == last and isinstance(model.loss, losses.CrossEntropy):
            act = "softmax"
        elif i == last and isinstance(model.loss, losses.BinaryCrossEntropy):
            act = "sigmoid"
        if ONNX_ACTIVATIONS[act] is not None:
            nodes.append(_activation_node(helper, act, z, f"dense{i}_{act}"))
            z = f"dense{i}_{act}"
        x = z
    nodes.append(helper.make_node("Identity", [x], ["output"]))

    graph = helper.make_graph(
        nodes,
        "bprop_sequential",
        [helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, ["batch", model.n_inputs])],
        [
            helper.make_tensor_value_info(
                "output", onnx.TensorProto.FLOAT, ["batch", model.n_outputs]
            )
        ],
        initializer=inits,
    )
    proto = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="bprop"
    )
    proto.ir_version = IR_VERSION
    for key, value in model.metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(proto)
    return proto


def export(model: Sequential, path: str | os.PathLike[str]) -> None:
    """Write `model` to `path` as ONNX; see Sequential.to_onnx."""
    onnx = _import_onnx()
    onnx.save(build(model), os.fspath(path))

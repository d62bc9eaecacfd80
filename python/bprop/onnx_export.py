"""Export a Sequential model to ONNX, for inference in other runtimes.

Design decisions:
- Each dense layer is one Gemm node (x @ W + b, or x @ W without
  biases) followed by its activation's node; identity adds none, and
  silu, which ONNX lacks, is x * Sigmoid(x).
- The graph computes inference: dropout adds no node, batch norm is a
  BatchNormalization node with the running mean and variance, layer
  norm a LayerNormalization node over the last axis; each then has its
  activation's node like a dense layer. A layer without beta
  (center=False) gets a beta of zeros, since both operators take one.
- With a fused loss the graph ends as bprop's C predict does: Softmax
  after cross-entropy (LogSoftmax after a log_softmax output layer),
  Sigmoid after binary cross-entropy, and Exp after poisson, whose
  output is the log of the rate. The output is what bprop's C predict
  returns, shaped (batch, units).
- A model with ``input_scaling`` starts with (x - mean) / scale in
  double, as bprop computes it, then casts to the model's dtype.
- A float64 model's graph takes and returns doubles, with double
  weights; a float32 model's, floats.
- Opset 13 and IR version 7, the oldest pair with Softmax over one axis,
  which most runtimes read; opset 17 and IR version 8 with layer norm,
  whose operator appeared in opset 17; opset 20 and IR version 9 when a
  layer uses gelu, whose operator appeared in opset 20.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import numpy as np

from . import losses

if TYPE_CHECKING:
    from collections.abc import Iterator

    from .layers import Layer
    from .model import Sequential

OPSET = 13
IR_VERSION = 7
#: The opset and IR version of a graph that uses LayerNormalization.
LAYER_NORM_OPSET = 17
LAYER_NORM_IR_VERSION = 8
#: The opset and IR version of a graph that uses Gelu.
GELU_OPSET = 20
GELU_IR_VERSION = 9

#: The ONNX operator of each activation bprop has; None: no node. silu is
#: the pair Sigmoid, Mul.
ONNX_ACTIVATIONS: dict[str, str | None] = {
    "identity": None,
    "relu": "Relu",
    "sigmoid": "Sigmoid",
    "tanh": "Tanh",
    "softmax": "Softmax",
    "leaky_relu": "LeakyRelu",
    "elu": "Elu",
    "gelu": "Gelu",
    "gelu_tanh": "Gelu",
    "silu": "Sigmoid",
    "softplus": "Softplus",
    "log_softmax": "LogSoftmax",
}


def _import_onnx() -> Any:
    try:
        import onnx
    except ImportError:
        raise ImportError(
            "to_onnx needs the onnx package: pip install 'bprop[onnx]' (or pip install onnx)"
        ) from None
    return onnx


def _activation_nodes(helper: Any, name: str, param: float, source: str, target: str) -> list[Any]:
    """The nodes computing activation `name` (with its parameter) from
    `source` into `target`."""
    op = ONNX_ACTIVATIONS[name]
    if op in ("Softmax", "LogSoftmax"):
        return [helper.make_node(op, [source], [target], axis=1)]
    if name in ("leaky_relu", "elu"):
        return [helper.make_node(op, [source], [target], alpha=param)]
    if op == "Gelu":
        approximate = "tanh" if name == "gelu_tanh" else "none"
        return [helper.make_node(op, [source], [target], approximate=approximate)]
    if name == "silu":
        gate = f"{target}_sigmoid"
        return [
            helper.make_node("Sigmoid", [source], [gate]),
            helper.make_node("Mul", [source, gate], [target]),
        ]
    return [helper.make_node(op, [source], [target])]


#: The ONNX operator of each layer kind that computes something at inference.
ONNX_LAYERS = {
    "dense": "Gemm",
    "batch_norm": "BatchNormalization",
    "layer_norm": "LayerNormalization",
}


def _layer_nodes(
    onnx: Any, layer: Layer, i: int, source: str, weights: Iterator[np.ndarray]
) -> tuple[list[Any], list[Any], str]:
    """The nodes and initialisers of layer `i` up to its activation, from
    `source`, with its arrays taken from `weights` (get_weights' order),
    and the name of their output."""
    if layer.kind == "dropout":
        return [], [], source
    name = f"{layer.kind}{i}"

    # In the order the operator takes them: Gemm's W, B; the norms' scale,
    # B, then BatchNormalization's mean and var.
    first = next(weights)
    arrays = {"weight" if layer.kind == "dense" else "scale": first}
    if layer.use_bias:
        arrays["bias"] = next(weights)
    elif layer.kind != "dense":
        arrays["bias"] = np.zeros_like(first)
    if layer.kind == "batch_norm":
        arrays["running_mean"] = next(weights)
        arrays["running_var"] = next(weights)
    inits = [onnx.numpy_helper.from_array(a, f"{name}_{key}") for key, a in arrays.items()]

    attributes: dict[str, Any] = {}
    if layer.kind != "dense":
        attributes["epsilon"] = layer.eps
    if layer.kind == "layer_norm":
        attributes["axis"] = -1
    target = f"{name}_linear" if layer.kind == "dense" else f"{name}_normalised"
    node = onnx.helper.make_node(
        ONNX_LAYERS[layer.kind], [source] + [t.name for t in inits], [target], **attributes
    )
    return [node], inits, target


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

    elem = onnx.TensorProto.DOUBLE if model.dtype.itemsize == 8 else onnx.TensorProto.FLOAT
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
            helper.make_node("Cast", ["scaled_f64"], ["scaled"], to=elem),
        ]
        x = "scaled"

    weights = iter(model.get_weights())
    last = len(model.layers) - 1
    for i, layer in enumerate(model.layers):
        layer_nodes, layer_inits, z = _layer_nodes(onnx, layer, i, x, weights)
        nodes += layer_nodes
        inits += layer_inits
        act = layer.activation
        if i == last and isinstance(model.loss, losses.CrossEntropy):
            act = "log_softmax" if act == "log_softmax" else "softmax"
        elif i == last and isinstance(model.loss, losses.BinaryCrossEntropy):
            act = "sigmoid"
        if ONNX_ACTIVATIONS[act] is not None:
            target = f"{layer.kind}{i}_{act}"
            nodes += _activation_nodes(helper, act, layer.activation_param, z, target)
            z = target
        x = z
    if isinstance(model.loss, losses.Poisson):
        # The network's output is the log of the rate; predict gives the rate.
        nodes.append(helper.make_node("Exp", [x], ["rate"]))
        x = "rate"
    nodes.append(helper.make_node("Identity", [x], ["output"]))
    if any(layer.activation in ("gelu", "gelu_tanh") for layer in model.layers):
        opset, ir_version = GELU_OPSET, GELU_IR_VERSION
    elif any(layer.kind == "layer_norm" for layer in model.layers):
        opset, ir_version = LAYER_NORM_OPSET, LAYER_NORM_IR_VERSION
    else:
        opset, ir_version = OPSET, IR_VERSION

    graph = helper.make_graph(
        nodes,
        "bprop_sequential",
        [helper.make_tensor_value_info("input", elem, ["batch", model.n_inputs])],
        [helper.make_tensor_value_info("output", elem, ["batch", model.n_outputs])],
        initializer=inits,
    )
    proto = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", opset)],
        producer_name="bprop",
    )
    proto.ir_version = ir_version
    for key, value in model.metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(proto)
    return proto


def export(model: Sequential, path: str | os.PathLike[str]) -> None:
    """Write `model` to `path` as ONNX; see Sequential.to_onnx."""
    onnx = _import_onnx()
    onnx.save(build(model), os.fspath(path))

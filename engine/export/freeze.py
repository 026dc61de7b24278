"""Weights as constants: the work a network does on its own parameters is done once, before conversion.

The student's modulated layers rescale their weights on every call (`unit_max`, the squared-weight table for
demodulation: engine/nn/layers.py). Exact and cheap in PyTorch, but the converters keep it in the graph: litert-torch
(0.10) then hands CONV_2D and DEPTHWISE_CONV_2D weights that are computed at run time to the interpreter, which
XNNPACK cannot pack and the int8 quantiser cannot quantise (measured on the 256 student, 1 thread: 43 ms with run-time
weights, 23 ms frozen; ONNX Runtime folds them itself and does not change). `freeze` traces the module with
torch.export and evaluates every node that depends on parameters and buffers alone; the exported graph keeps only
what depends on its inputs. Nothing is re-implemented: the graph is the network's own, minus arithmetic on
constants.
"""

from __future__ import annotations

import operator

import torch
from torch import fx

from engine.export.common import conversion_failed, quiet


def freeze(module: torch.nn.Module, example: dict[str, torch.Tensor]) -> fx.GraphModule:
    """A GraphModule computing module(**example-shaped inputs) with parameter-only subgraphs folded into buffers.

    Inputs are passed positionally in the order of `example`; shapes are fixed to the example's."""
    with quiet(), torch.no_grad():
        try:
            gm = torch.export.export(module.eval(), tuple(example.values())).module()
        except Exception as e:
            raise conversion_failed(f"tracing {type(module).__name__}", e) from e
        gm = _fold(gm)
    return gm


def _attr(gm: torch.nn.Module, target: str):
    obj = gm
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def _deterministic(node: fx.Node) -> bool:
    tags = getattr(node.target, "tags", ())
    return torch.Tag.nondeterministic_seeded not in tags


def _fold(gm: fx.GraphModule) -> fx.GraphModule:
    graph = gm.graph
    values: dict[fx.Node, object] = {}
    for node in graph.nodes:
        if node.op == "get_attr":
            values[node] = _attr(gm, node.target)
        elif node.op == "call_function" and node.all_input_nodes and _deterministic(node) and all(
            n in values for n in node.all_input_nodes
        ):
            args = fx.node.map_arg(node.args, values.__getitem__)
            kwargs = fx.node.map_arg(node.kwargs, values.__getitem__)
            try:
                values[node] = node.target(*args, **kwargs)
            except Exception:  # noqa: BLE001 - not foldable here; it stays in the graph
                continue
    count = 0
    for node in list(graph.nodes):
        if node.op != "call_function" or node not in values or node.target is operator.getitem and not isinstance(
            values[node], torch.Tensor
        ):
            continue
        value = values[node]
        if not isinstance(value, torch.Tensor) or all(u in values for u in node.users):
            continue
        name = f"_frozen{count}"
        count += 1
        gm.register_buffer(name, value.detach().clone().contiguous())
        with graph.inserting_before(node):
            const = graph.get_attr(name)
        node.replace_all_uses_with(const)
    graph.eliminate_dead_code()
    graph.lint()
    # A fresh GraphModule holds only the attributes the graph still uses (the raw weights are gone).
    return fx.GraphModule(gm, graph)

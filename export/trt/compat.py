"""Static TensorRT-compatibility check of an exported ONNX graph against its spec.

Runs without TensorRT (only ``onnx``), before ``fastsam2-export --trt`` builds an engine and in CI on
every exported graph, so that an operator TensorRT's ONNX parser cannot take, a TopK whose K could
reach TensorRT's limit, or a dynamic axis no optimization profile covers fails in seconds with a list
of every problem, instead of deep inside an engine build on the target device.

    report = check_onnx_for_trt("out/memory_attention.onnx", spec, profiles)
    if not report.ok:
        raise SystemExit(report.format())
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from fastsam2.runtime.specs import GraphSpec

from fastsam2.runtime.backends.trt_profiles import Profile, profile_problems

# Operators the TensorRT 10 ONNX parser supports ("Y" rows of the Operator Support Matrix in
# onnx/onnx-tensorrt docs/operators.md, "ONNX-TensorRT 10.1 GA release", commit 96e7811,
# https://github.com/onnx/onnx-tensorrt/blob/96e781103cfc4adf4a6bb557e94bac8e693f6f4c/docs/operators.md).
# Only the default ONNX domain: any other domain (ai.onnx.ml, com.microsoft, custom) is unsupported
# without a plugin.
TRT10_SUPPORTED_OPS = frozenset({
    'Abs', 'Acos', 'Acosh', 'Add', 'And', 'ArgMax', 'ArgMin', 'Asin', 'Asinh', 'Atan', 'Atanh',
    'AveragePool', 'BatchNormalization', 'Cast', 'CastLike', 'Ceil', 'Celu', 'Clip', 'Concat',
    'Constant', 'ConstantOfShape', 'Conv', 'ConvTranspose', 'Cos', 'Cosh', 'CumSum', 'DeformConv',
    'DepthToSpace', 'DequantizeLinear', 'Div', 'Dropout', 'Einsum', 'Elu', 'Equal', 'Erf', 'Exp',
    'Expand', 'EyeLike', 'Flatten', 'Floor', 'Gather', 'GatherElements', 'GatherND', 'Gelu',
    'Gemm', 'GlobalAveragePool', 'GlobalLpPool', 'GlobalMaxPool', 'Greater', 'GreaterOrEqual',
    'GridSample', 'GroupNormalization', 'GRU', 'HardSigmoid', 'HardSwish', 'Hardmax', 'Identity',
    'If', 'ImageScaler', 'InstanceNormalization', 'IsInf', 'IsNaN', 'LayerNormalization',
    'LeakyRelu', 'Less', 'LessOrEqual', 'Log', 'LogSoftmax', 'Loop', 'LRN', 'LSTM',
    'LpNormalization', 'LpPool', 'MatMul', 'Max', 'MaxPool', 'Mean', 'MeanVarianceNormalization',
    'Min', 'Mish', 'Mod', 'Mul', 'Neg', 'NonMaxSuppression', 'NonZero', 'Not', 'OneHot', 'Or',
    'Pad', 'ParametricSoftplus', 'Pow', 'PRelu', 'QuantizeLinear', 'RandomNormal',
    'RandomNormalLike', 'RandomUniform', 'RandomUniformLike', 'Range', 'Reciprocal', 'ReduceL1',
    'ReduceL2', 'ReduceLogSum', 'ReduceLogSumExp', 'ReduceMax', 'ReduceMean', 'ReduceMin',
    'ReduceProd', 'ReduceSum', 'ReduceSumSquare', 'Relu', 'Reshape', 'Resize', 'ReverseSequence',
    'RNN', 'RoiAlign', 'Round', 'ScaledTanh', 'Scan', 'Scatter', 'ScatterElements', 'ScatterND',
    'Selu', 'Shape', 'Shrink', 'Sigmoid', 'Sign', 'Sin', 'Sinh', 'Size', 'Slice', 'Softmax',
    'Softplus', 'Softsign', 'SpaceToDepth', 'Split', 'Sqrt', 'Squeeze', 'Sub', 'Sum', 'Tan',
    'Tanh', 'ThresholdedRelu', 'Tile', 'TopK', 'Transpose', 'Trilu', 'Unsqueeze', 'Upsample',
    'Where', 'Xor',
})  # fmt: skip
# Same page: "TensorRT 10.0 supports operators in the inclusive range of opset 9 to opset 20".
# fastsam2 needs >= 17 (LayerNormalization as one op, which TensorRT maps to its normalization layer).
MIN_OPSET = 17
MAX_OPSET = 20
# Same page, TopK row: "`K` input must be less than 3840".
TOPK_MAX_K = 3840

_DEFAULT_DOMAINS = ("", "ai.onnx")
# TensorProto.DataType numbers (onnx.TensorProto), kept here so the messages name them.
_COMPLEX = {14: "complex64", 15: "complex128"}
_BAD_IO = {11: "float64", 13: "uint64", 8: "string"}
# Ops through which a constant is folded when resolving a TopK K.
_PASS_THROUGH = {"Identity", "Cast", "Reshape", "Unsqueeze", "Squeeze", "Flatten"}
# Ops whose output is derived from a tensor's shape rather than its values.
_SHAPE_SOURCES = {"Shape", "Size"}


@dataclass
class CompatReport:
    """Outcome of :func:`check_onnx_for_trt`: every problem found, and the operators the graph uses."""

    graph: str
    problems: list[str] = field(default_factory=list)
    ops_used: set[str] = field(default_factory=set)

    @property
    def ok(self) -> bool:
        return not self.problems

    def format(self) -> str:
        if self.ok:
            return f"{self.graph}: TensorRT-compatible ({len(self.ops_used)} operator types)"
        lines = [f"{self.graph}: {len(self.problems)} TensorRT compatibility problem(s):"]
        lines += [f"  - {p}" for p in self.problems]
        return "\n".join(lines)


def check_onnx_for_trt(
    model_or_path: Any,
    spec: GraphSpec,
    profiles: list[Profile],
    *,
    min_opset: int = MIN_OPSET,
    max_opset: int = MAX_OPSET,
) -> CompatReport:
    """Check an ONNX model (``onnx.ModelProto`` or path) for the TensorRT 10 ONNX parser and ``spec``.

    Collects every problem: operators outside :data:`TRT10_SUPPORTED_OPS` (or outside the default
    domain), opset outside [min_opset, max_opset], complex tensors anywhere, float64/uint64/string graph
    IO, IO names/dtypes/ranks differing from the spec, dynamic IO axes that are unnamed, not a spec
    symbol, or not covered by ``profiles``, TopK whose K is not a build-time constant < 3840,
    Tile repeats / OneHot depth computed from a tensor's shape, and If/Loop nodes.
    """
    import onnx

    if isinstance(model_or_path, (str, Path)):
        # Weights are not needed; the few constants we fold (TopK K) are small and stored inline.
        model = onnx.load(str(model_or_path), load_external_data=False)
    else:
        model = model_or_path
    report = CompatReport(graph=spec.name)
    problems = report.problems

    _check_opsets(model, min_opset, max_opset, problems)
    functions = {(f.domain, f.name): f for f in model.functions}
    graph = model.graph
    consts = _Constants(graph)

    for node, where, producers in _iter_nodes(graph.node, functions, "graph"):
        domain = node.domain or ""
        op = node.op_type if domain in _DEFAULT_DOMAINS else f"{domain}::{node.op_type}"
        report.ops_used.add(op)
        label = f"{op} node {node.name or '(unnamed)'!r}{where}"
        if domain not in _DEFAULT_DOMAINS or node.op_type not in TRT10_SUPPORTED_OPS:
            problems.append(f"{label}: not supported by the TensorRT 10 ONNX parser")
            continue
        if node.op_type in ("If", "Loop"):
            problems.append(
                f"{label}: control flow; keep data-dependent branches and loops in the runtime"
            )
        elif node.op_type == "TopK":
            _check_topk(node, label, consts, producers, problems)
        elif node.op_type == "Tile" and len(node.input) > 1:
            _check_not_shape_derived(node.input[1], "repeats", label, producers, problems)
        elif node.op_type == "OneHot" and len(node.input) > 1:
            if consts.value(node.input[1], producers) is None:
                problems.append(f"{label}: depth must be a build-time constant (TensorRT 10 parser)")
            _check_not_shape_derived(node.input[1], "depth", label, producers, problems)
        elif node.op_type == "LayerNormalization" and sum(1 for o in node.output[1:] if o):
            problems.append(f"{label}: only the first output (Y) is supported by TensorRT")
        for attr in node.attribute:
            if attr.name == "to" and attr.i in _COMPLEX:
                problems.append(f"{label}: casts to {_COMPLEX[attr.i]} (TensorRT has no complex type)")

    _check_tensor_types(graph, problems)
    _check_io(graph, spec, profiles, problems)
    return report


# -- pieces ----------------------------------------------------------------------------------------
def _check_opsets(model: Any, min_opset: int, max_opset: int, problems: list[str]) -> None:
    versions = {o.domain or "": o.version for o in model.opset_import}
    default = versions.get("", versions.get("ai.onnx"))
    if default is None:
        problems.append("model imports no default-domain opset")
    elif not min_opset <= default <= max_opset:
        problems.append(
            f"opset {default}: need {min_opset} <= opset <= {max_opset} "
            f"(TensorRT 10 parses opsets 9..20; fastsam2 exports need >= {min_opset})"
        )


def _iter_nodes(nodes, functions, where_prefix: str, depth: int = 0) -> Iterator[tuple[Any, str, dict]]:
    """Every node, descending into If/Loop/Scan bodies and model-local functions.

    Yields (node, where, producers): where is "" for top-level nodes, else a " (in ...)" suffix;
    producers maps each tensor name of the node's own scope to the node producing it (values from
    an enclosing scope are not resolved, so constants there count as unknown: conservative).
    """
    producers = {out: node for node in nodes for out in node.output if out}
    for node in nodes:
        where = "" if depth == 0 else f" (in {where_prefix})"
        key = (node.domain or "", node.op_type)
        if key in functions:
            yield from _iter_nodes(functions[key].node, functions, f"function {node.op_type}", depth + 1)
            continue
        yield node, where, producers
        for attr in node.attribute:
            subgraphs = list(attr.graphs) + ([attr.g] if attr.HasField("g") else [])
            for sub in subgraphs:
                yield from _iter_nodes(
                    sub.node, functions, f"{node.op_type} {node.name!r} body", depth + 1
                )


class _Constants:
    """Build-time constant values: initializers and Constant nodes, folded through a few ops."""

    def __init__(self, graph: Any):
        self.initializers = {t.name: t for t in graph.initializer}

    def value(self, name: str, producers: dict[str, Any], depth: int = 0) -> list[int] | None:
        from onnx import numpy_helper

        if depth > 16 or not name:
            return None
        if name in self.initializers:
            tensor = self.initializers[name]
            if tensor.data_location == 1:  # EXTERNAL: not loaded, cannot be resolved here
                return None
            return [int(v) for v in numpy_helper.to_array(tensor).reshape(-1).tolist()]
        node = producers.get(name)
        if node is None:
            return None
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    return [int(v) for v in numpy_helper.to_array(attr.t).reshape(-1).tolist()]
                if attr.name in ("value_int",):
                    return [int(attr.i)]
                if attr.name in ("value_ints",):
                    return [int(v) for v in attr.ints]
            return None
        if node.op_type in _PASS_THROUGH:
            return self.value(node.input[0], producers, depth + 1)
        if node.op_type == "Concat":
            parts = [self.value(i, producers, depth + 1) for i in node.input]
            return None if any(p is None for p in parts) else [v for p in parts for v in p]
        return None

    def upper_bound(self, name: str, producers: dict[str, Any], depth: int = 0) -> int | None:
        """An upper bound of a scalar: its constant value, or the constant operand of a Min."""
        value = self.value(name, producers, depth)
        if value is not None:
            return max(value) if value else None
        node = producers.get(name)
        if node is None or depth > 16:
            return None
        if node.op_type in _PASS_THROUGH:
            return self.upper_bound(node.input[0], producers, depth + 1)
        if node.op_type == "Min":
            bounds = [self.upper_bound(i, producers, depth + 1) for i in node.input]
            known = [b for b in bounds if b is not None]
            return min(known) if known else None
        return None


def _check_topk(node, label, consts: _Constants, producers, problems: list[str]) -> None:
    attrs = {a.name: a for a in node.attribute}
    if "sorted" in attrs and attrs["sorted"].i != 1:
        problems.append(f"{label}: sorted=0 is not supported by TensorRT (must be 1)")
    if len(node.input) > 1 and node.input[1]:
        bound = consts.upper_bound(node.input[1], producers)
        source = f"K input {node.input[1]!r}"
    elif "k" in attrs:  # opset < 10
        bound, source = int(attrs["k"].i), "k attribute"
    else:
        bound, source = None, "K"
    if bound is None:
        k_name = node.input[1] if len(node.input) > 1 else ""
        why = "derived from a tensor shape" if _shape_source(k_name, producers) else "data-dependent"
        problems.append(
            f"{label}: {source} is not a build-time constant ({why}); TensorRT needs K < "
            f"{TOPK_MAX_K} and K here could reach the axis size: do top-K in the runtime"
        )
    elif bound >= TOPK_MAX_K:
        problems.append(f"{label}: K = {bound} but TensorRT's TopK needs K < {TOPK_MAX_K}")


def _shape_source(name: str, producers: dict[str, Any], limit: int = 256) -> str | None:
    """Name of a Shape/Size node that ``name`` is computed from, walking producers backwards."""
    seen, queue = set(), deque([name])
    while queue and len(seen) < limit:
        current = queue.popleft()
        if current in seen or not current:
            continue
        seen.add(current)
        node = producers.get(current)
        if node is None:
            continue
        if node.op_type in _SHAPE_SOURCES:
            return node.name or f"{node.op_type} -> {current}"
        queue.extend(node.input)
    return None


def _check_not_shape_derived(name, what, label, producers, problems: list[str]) -> None:
    source = _shape_source(name, producers)
    if source is not None:
        problems.append(
            f"{label}: {what} is computed from a tensor shape (via {source!r}); TensorRT needs it "
            "fixed at build time: export with static sizes or restructure (e.g. Expand)"
        )


def _elem_type(value_info: Any) -> int:
    t = value_info.type
    return t.tensor_type.elem_type if t.HasField("tensor_type") else 0


def _check_tensor_types(graph: Any, problems: list[str]) -> None:
    for vi in (*graph.input, *graph.output, *graph.value_info):
        et = _elem_type(vi)
        if et in _COMPLEX:
            problems.append(f"tensor {vi.name!r} is {_COMPLEX[et]} (TensorRT has no complex type)")
    for init in graph.initializer:
        if init.data_type in _COMPLEX:
            problems.append(f"initializer {init.name!r} is {_COMPLEX[init.data_type]}")
    for vi in (*graph.input, *graph.output):
        et = _elem_type(vi)
        if et in _BAD_IO:
            problems.append(f"graph IO {vi.name!r} is {_BAD_IO[et]}; TensorRT engine IO cannot be")


def _check_io(graph: Any, spec: GraphSpec, profiles: list[Profile], problems: list[str]) -> None:
    from onnx import helper

    def dtype(vi) -> str:
        et = _elem_type(vi)
        return helper.tensor_dtype_to_np_dtype(et).name if et else "undefined"

    initializers = {t.name for t in graph.initializer}
    inputs = [vi for vi in graph.input if vi.name not in initializers]
    io = {vi.name: ("input", dtype(vi)) for vi in inputs}
    io.update({vi.name: ("output", dtype(vi)) for vi in graph.output})
    problems.extend(spec.io_problems(io, "graph"))
    for got, want in ((inputs, spec.inputs), (list(graph.output), spec.outputs)):
        by_name = {t.name: t for t in want}
        for vi in got:
            t = by_name.get(vi.name)
            if t is None:
                continue
            dims = list(vi.type.tensor_type.shape.dim) if vi.type.HasField("tensor_type") else []
            if len(dims) != len(t.shape):
                problems.append(f"{vi.name}: rank {len(dims)}, spec shape {t.shape}")
                continue
            for axis, (dim, want_dim) in enumerate(zip(dims, t.shape)):
                if dim.HasField("dim_value"):
                    if isinstance(want_dim, str):
                        problems.append(
                            f"{vi.name}: axis {axis} is fixed at {dim.dim_value} in the graph but "
                            f"the spec declares it dynamic ({want_dim}): the export froze it"
                        )
                    elif dim.dim_value != want_dim:
                        problems.append(f"{vi.name}: axis {axis} is {dim.dim_value}, spec says {want_dim}")
                elif dim.HasField("dim_param") and dim.dim_param:
                    if dim.dim_param not in spec.symbols():
                        problems.append(
                            f"{vi.name}: axis {axis} is named {dim.dim_param!r}, not a declared "
                            f"symbol {sorted(spec.symbols())}"
                        )
                    elif dim.dim_param != want_dim:
                        problems.append(
                            f"{vi.name}: axis {axis} is {dim.dim_param!r}, spec says {want_dim!r}"
                        )
                else:
                    problems.append(f"{vi.name}: axis {axis} is dynamic but unnamed (no dim_param)")
    # Coverage of the spec's dynamic inputs by the optimization profiles (the graph's dynamic inputs
    # were matched against the spec above).
    problems.extend(profile_problems(spec, profiles))

"""Mixed-precision ONNX graphs for strongly typed TensorRT engines (and ONNX Runtime).

TensorRT 10.12 deprecated and TensorRT 11 removed weak typing (``BuilderFlag.FP16``,
``layer.precision``): precision must be in the graph. :func:`to_fp16` rewrites an fp32 graph so that
every node computes in FP16 except the **FP32 set** below, with an explicit ``Cast`` on every edge
where the precision changes; graph inputs and outputs keep their spec dtype (float32), so runtimes,
specs and engines see the same interface.

The FP32 set (:func:`fp32_nodes`; the rules are structural, by op type and neighbourhood, so they find
the same parts in every SAM2 config and in the router):

``norm``
    LayerNormalization, and SAM2's LayerNorm2d written out (``mask_downscaling``, ``output_upscaling``,
    ``mask_downsampler``): its ReduceMean -> Sub -> Pow -> ReduceMean -> Add -> Sqrt -> Div chain.
    Means and variances of 256-channel maps overflow or lose every bit in FP16.
``reduce``
    every other reduction (ReduceMean/Sum/L2/Max, Pow, Sqrt, Reciprocal): sums over thousands of tokens.
``softmax``
    Softmax (scores of up to 41k keys: FP16 exp/sum underflows rows).
``rope``
    RoPE and position tables: Sin/Cos, Range, and every Gather from a constant float table by a
    position index (RoPE cos/sin, sine position encodings, temporal encodings), plus the Mul/Add/Sub
    that combine those table rows with activations (the rotation itself).
``mask_logits``
    the ops producing the mask-logit outputs (``low_res_masks``, ``low_res_multimasks``, and the
    memory encoder's mask input path stays fp32 through its graph input): walking back from the output
    through data-movement ops to the first MatMul/Conv/Gemm, inclusive. Mask logits are thresholded at
    0 and fed back as prompts, so their rounding changes the mask outline.

Everything else (convolutions, matmuls, GELU, elementwise) runs FP16.

INT8 graphs (:func:`to_qdq_fp16`) are the QDQ graphs of :mod:`fastsam2.calibration.qdq` put through
the same rewrite: the quantized convolutions and matmuls take INT8 inputs, every unquantized layer
computes FP16 except the FP32 set, and the Quantize/DequantizeLinear pairs carry FP16 scales (opset
19, where QuantizeLinear takes FP16), so a strongly typed TensorRT build fuses each pair into an INT8
kernel with FP16 output instead of running the rest of the network in FP32. The effect against fp32
on real frames is in bench/RESULTS.md ("TensorRT graphs").

FP8 graphs are the same in FP8 E4M3 (``quantize_qdq(..., fmt="fp8")``), for the image encoder only
(:data:`FP8_GRAPHS`; :func:`quantizes` says which graphs a build quantizes, the rest are FP16).

Written with onnx graph surgery rather than ``onnxconverter-common``'s converter: with LayerNorm pieces
blocked, its graphs left a ``Sub`` of Half and Float that TensorRT's parser refuses. NVIDIA ModelOpt's
AutoCast has not been evaluated.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fastsam2.calibration.qdq import QDQ_OPSET, at_qdq_opset, toposort

F32, F16 = 1, 10  # onnx.TensorProto.FLOAT / FLOAT16

REDUCE_OPS = {"ReduceMean", "ReduceSum", "ReduceL2", "ReduceMax", "ReduceMin", "ReduceSumSquare",
              "ReduceLogSumExp", "Pow", "Sqrt", "Reciprocal"}
TABLE_OPS = {"Sin", "Cos", "Range"}
# Ops that only move data: the mask-logit walk passes through them.
MOVE_OPS = {"Reshape", "Slice", "Gather", "GatherElements", "Where", "Concat", "Transpose", "Squeeze",
            "Unsqueeze", "Identity", "Expand", "Flatten", "Split", "Cast", "Add", "Mul"}
COMPUTE_OPS = {"MatMul", "Conv", "Gemm", "ConvTranspose"}
MASK_OUTPUTS = ("low_res_masks", "low_res_multimasks")
# Inputs that must stay float32 whatever the node's precision (ONNX type constraints).
FLOAT32_ONLY_INPUTS = {"Resize": {1, 2}, "Upsample": {1}}
# Ops whose float inputs may be of any type (they read only shapes).
TYPE_AGNOSTIC = {"Shape", "Size"}


@dataclass
class Fp16Report:
    """What :func:`to_fp16` kept in FP32: {rule: [node names]} and the casts it added."""

    fp32: dict[str, list[str]] = field(default_factory=dict)
    casts_added: int = 0
    fp16_nodes: int = 0

    @property
    def fp32_count(self) -> int:
        return sum(len(v) for v in self.fp32.values())

    def to_json(self) -> dict:
        return {"fp32_nodes": {k: len(v) for k, v in self.fp32.items()}, "fp32_total": self.fp32_count,
                "fp16_nodes": self.fp16_nodes, "casts_added": self.casts_added}


def _float_types(model) -> dict[str, int]:
    """{tensor name: elem type} for every typed tensor (shape inference fills intermediates)."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    types = {}
    for vi in (*inferred.graph.input, *inferred.graph.output, *inferred.graph.value_info):
        types[vi.name] = vi.type.tensor_type.elem_type
    for init in model.graph.initializer:
        types[init.name] = init.data_type
    for node in model.graph.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    types[node.output[0]] = a.t.data_type
    return types


def fp32_nodes(model) -> dict[str, set[str]]:
    """{rule: node names} of the FP32 set (module docstring). Nodes are named by the exporter."""
    graph = model.graph
    nodes = {n.name: n for n in graph.node}
    producer = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list] = defaultdict(list)
    for n in graph.node:
        for i in n.input:
            consumers[i].append(n)
    constants = {i.name for i in graph.initializer} | {n.output[0] for n in graph.node if n.op_type == "Constant"}
    rules: dict[str, set[str]] = {k: set() for k in ("norm", "reduce", "softmax", "rope", "mask_logits")}
    for n in graph.node:
        if n.op_type == "LayerNormalization":
            rules["norm"].add(n.name)
        elif n.op_type == "Softmax":
            rules["softmax"].add(n.name)
        elif n.op_type in REDUCE_OPS:
            rules["reduce"].add(n.name)
        elif n.op_type in TABLE_OPS:
            rules["rope"].add(n.name)
        elif n.op_type == "Gather" and n.input[0] in constants and n.input[1] not in constants:
            rules["rope"].add(n.name)
    # LayerNorm2d: x - mean(x) and the division by the standard deviation.
    for n in graph.node:
        if n.op_type == "Sub" and any(
            producer.get(i) is not None and producer[i].op_type == "ReduceMean" for i in n.input
        ):
            rules["norm"].add(n.name)
        if n.op_type in ("Div", "Add") and any(
            producer.get(i) is not None and producer[i].op_type in ("Sqrt", "ReduceMean") for i in n.input
        ):
            rules["norm"].add(n.name)
    # The rotation: elementwise ops that combine table rows with activations (x*cos, x*sin), and
    # the Add/Sub that combine those products: two hops from a table lookup, no further (residual
    # streams stay FP16).
    hop1 = {c.name for g in rules["rope"] for o in nodes[g].output for c in consumers.get(o, ())
            if c.op_type in ("Mul", "Add", "Sub", "Neg")}
    hop2 = {c.name for m in hop1 for o in nodes[m].output for c in consumers.get(o, ())
            if c.op_type in ("Add", "Sub") and nodes[m].op_type == "Mul"}
    rules["rope"] |= hop1 | hop2
    # Mask logits: back from each mask output to the first compute op.
    for out in MASK_OUTPUTS:
        stack = [out]
        visited = set()
        while stack:
            t = stack.pop()
            n = producer.get(t)
            if n is None or n.name in visited:
                continue
            visited.add(n.name)
            if n.op_type in COMPUTE_OPS:
                rules["mask_logits"].add(n.name)
                continue
            if n.op_type in MOVE_OPS:
                rules["mask_logits"].add(n.name)
                stack.extend(i for i in n.input if i and i not in constants)
    # A node in several rules is reported under the first.
    claimed: set[str] = set()
    for k in rules:
        rules[k] -= claimed
        claimed |= rules[k]
    return rules


def to_fp16(src: str | Path, dst: str | Path, *, keep: dict[str, set[str]] | None = None) -> Fp16Report:
    """Write ``dst``: ``src`` with every float node in FP16 except :func:`fp32_nodes` (or ``keep``),
    explicit Casts at precision changes, graph IO unchanged (float32). Returns what was kept."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(src))
    graph = model.graph
    rules = fp32_nodes(model) if keep is None else keep
    keep_names = set().union(*rules.values()) if rules else set()
    types = _float_types(model)
    inits = {i.name: i for i in graph.initializer}
    report = Fp16Report(fp32={k: sorted(v) for k, v in rules.items()})

    # Which precision each float tensor ends up in: produced by an fp16 node -> F16.
    def is_float(name: str) -> bool:
        return types.get(name) == F32

    fp16_node = {}
    for n in graph.node:
        touches_float = any(is_float(t) for t in (*n.input, *n.output) if t)
        fp16_node[n.name] = touches_float and n.name not in keep_names and n.op_type not in TYPE_AGNOSTIC
    tensor_type: dict[str, int] = {}
    for vi in graph.input:
        tensor_type[vi.name] = vi.type.tensor_type.elem_type
    for name, init in inits.items():
        tensor_type[name] = init.data_type

    new_nodes = []
    cast_cache: dict[tuple[str, int], str] = {}
    init_copies: dict[str, str] = {}
    init_users: dict[str, list[bool]] = defaultdict(list)
    for n in graph.node:
        for i in n.input:
            if i in inits and is_float(i):
                init_users[i].append(fp16_node[n.name])

    def cast(name: str, to: int) -> str:
        key = (name, to)
        if key not in cast_cache:
            out = f"{name}__to_{'fp16' if to == F16 else 'fp32'}"
            new_nodes.append(helper.make_node("Cast", [name], [out], name=out, to=to))
            report.casts_added += 1
            cast_cache[key] = out
        return cast_cache[key]

    def fp16_initializer(name: str) -> str:
        if all(init_users[name]):  # only fp16 users: convert in place
            if inits[name].data_type == F32:
                arr = numpy_helper.to_array(inits[name]).astype(np.float16)
                inits[name].CopyFrom(numpy_helper.from_array(arr, name))
            return name
        if name not in init_copies:
            arr = numpy_helper.to_array(inits[name]).astype(np.float16)
            copy = numpy_helper.from_array(arr, name + "__fp16")
            graph.initializer.append(copy)
            init_copies[name] = copy.name
        return init_copies[name]

    for n in graph.node:
        want = F16 if fp16_node[n.name] else F32
        only32 = FLOAT32_ONLY_INPUTS.get(n.op_type, set())
        if n.op_type not in TYPE_AGNOSTIC:
            for idx, i in enumerate(n.input):
                if not i or not is_float(i):
                    continue
                target = F32 if idx in only32 else want
                have = tensor_type.get(i, F32)
                if have == target:
                    continue
                if i in inits and target == F16 and idx not in only32:
                    n.input[idx] = fp16_initializer(i)
                else:
                    n.input[idx] = cast(i, target)
        if want == F16:
            report.fp16_nodes += 1
            if n.op_type == "Cast":
                for a in n.attribute:
                    if a.name == "to" and a.i == F32:
                        a.i = F16
            elif n.op_type in ("Constant", "ConstantOfShape"):
                for a in n.attribute:
                    if a.name == "value" and a.t.data_type == F32:
                        arr = numpy_helper.to_array(a.t).astype(np.float16)
                        a.t.CopyFrom(numpy_helper.from_array(arr, a.t.name))
        for o in n.output:
            if o and is_float(o):
                tensor_type[o] = want
            elif o:
                tensor_type[o] = types.get(o, 0)
        new_nodes.append(n)

    # Graph outputs keep float32: rename an fp16 producer's output and cast back under the old name.
    outputs = {o.name for o in graph.output}
    for o in graph.output:
        if o.type.tensor_type.elem_type == F32 and tensor_type.get(o.name) == F16:
            inner = o.name + "__fp16"
            for n in new_nodes:
                for idx, out in enumerate(n.output):
                    if out == o.name:
                        n.output[idx] = inner
                for idx, i in enumerate(n.input):
                    if i == o.name:
                        n.input[idx] = inner
            new_nodes.append(helper.make_node("Cast", [inner], [o.name], name=o.name + "__to_fp32", to=F32))
            report.casts_added += 1
    del outputs
    # Topological order: casts right after their producers is not guaranteed, so sort.
    graph.ClearField("node")
    graph.node.extend(toposort(new_nodes, {i.name for i in graph.input} | set(inits) | set(init_copies.values())))
    graph.ClearField("value_info")  # stale fp32 types; shape inference recomputes them
    tmp = Path(str(dst) + ".tmp")
    onnx.save(model, str(tmp))
    onnx.checker.check_model(str(tmp))
    tmp.replace(dst)
    return report




QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
# Smallest positive FP16 (a subnormal): an FP32 scale below it would round to a zero scale.
FP16_TINY = float(np.finfo(np.float16).smallest_subnormal)


def qdq_fp16_keep(model) -> dict[str, set[str]]:
    """The FP32 set of a QDQ graph: :func:`fp32_nodes`, plus ("qdq") the Quantize/DequantizeLinear
    nodes whose every consumer computes FP32, so that a kept layer gets its INT8 input dequantized
    straight to FP32 (no FP16 detour between the pair and the layer)."""
    rules = fp32_nodes(model)
    keep = set().union(*rules.values())
    consumers: dict[str, list] = defaultdict(list)
    for n in model.graph.node:
        for i in n.input:
            consumers[i].append(n)
    qdq: set[str] = set()
    # DequantizeLinear first, then the QuantizeLinear feeding only kept DequantizeLinear nodes.
    for op in ("DequantizeLinear", "QuantizeLinear"):
        for n in model.graph.node:
            if n.op_type != op:
                continue
            users = [c for o in n.output for c in consumers.get(o, ())]
            if users and all(c.name in keep or c.name in qdq for c in users):
                qdq.add(n.name)
    rules["qdq"] = qdq - keep
    return rules


def to_qdq_fp16(src: str | Path, dst: str | Path) -> Fp16Report:
    """Write ``dst``: the QDQ INT8 or FP8 graph ``src`` (:func:`~fastsam2.calibration.qdq.quantize_qdq`)
    with its unquantized layers in FP16 except the FP32 set (:func:`qdq_fp16_keep`), at opset
    :data:`QDQ_OPSET`; graph IO stays float32. Returns what was kept FP32."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(src))
    if not any(n.op_type in QDQ_OPS for n in model.graph.node):
        raise ValueError(f"{src}: no QuantizeLinear/DequantizeLinear nodes (not a QDQ graph)")
    model = at_qdq_opset(model)
    # Scales become FP16 below: keep every one representable (never a zero scale).
    scales = {n.input[1] for n in model.graph.node if n.op_type in QDQ_OPS}
    for init in model.graph.initializer:
        if init.name in scales and init.data_type == F32:
            arr = numpy_helper.to_array(init)
            init.CopyFrom(numpy_helper.from_array(np.maximum(arr, FP16_TINY).astype(np.float32), init.name))
    tmp = Path(str(dst) + ".qdq.tmp")
    onnx.save(model, str(tmp))
    try:
        return to_fp16(tmp, dst, keep=qdq_fp16_keep(model))
    finally:
        tmp.unlink(missing_ok=True)


# FP8 (E4M3) goes where the FLOPs are: the image encoder's matmuls and convolutions; the other graphs
# of an fp8 build are FP16.
FP8_GRAPHS = ("image_encoder",)


def quantizes(precision: str, graph: str) -> bool:
    """Whether a ``precision`` build quantizes ``graph`` (a QDQ graph calibrated on recorded feeds);
    the other graphs of an int8 / fp8 build are FP16. The encoder-region graphs are not quantized:
    the feeds are recorded on whole frames, which never run them."""
    from fastsam2.runtime.specs import REGION_GRAPHS

    if precision == "int8":
        return graph not in REGION_GRAPHS
    return precision == "fp8" and graph in FP8_GRAPHS


def write_precision_dir(
    export_dir: str | Path,
    precision: str,
    *,
    calib_dir: str | Path | None = None,
    graphs: list[str] | None = None,
    log=print,
) -> dict:
    """Write ``<export_dir>/<precision>/<graph>.onnx`` and ``<precision>/report.json``, what
    ``load_ort_backend(export_dir, precision=...)`` loads: the graphs a TensorRT engine of that
    precision is built from, made from the plain (standard-ONNX) graphs. ``"fp16"``: :func:`to_fp16`
    of every graph. ``"int8"``: :func:`~fastsam2.calibration.qdq.quantize_qdq` on the feeds recorded in
    ``calib_dir/<graph>/*.npz`` then :func:`to_qdq_fp16`, accepted where
    :func:`~fastsam2.calibration.qdq.accuracy_check` keeps INT8; a graph without feeds stays fp32.
    ``"fp8"``: the same in FP8 for the :data:`FP8_GRAPHS`; the graphs ``precision`` does not quantize
    (:func:`quantizes`) get :func:`to_fp16`. Returns the report."""
    import json

    from fastsam2.calibration.qdq import accuracy_check, quantize_qdq
    from fastsam2.calibration.reader import DirectoryCalibrationReader
    from fastsam2.runtime.manifest import ExportDir, file_sha256
    from fastsam2.runtime.outdir import write_text_atomic

    if precision not in ("fp16", "int8", "fp8"):
        raise ValueError(f"precision must be fp16, int8 or fp8, got {precision!r}")
    if precision != "fp16" and calib_dir is None:
        raise ValueError(f"{precision} needs calib_dir (recorded feeds, fastsam2.calibration.ort_quant.record_feeds)")
    export_dir = Path(export_dir)
    export = ExportDir.open(export_dir)
    out = export_dir / precision
    out.mkdir(exist_ok=True)
    report: dict = {"manifest_sha256": export.manifest_sha256(), "precision": precision, "graphs": {}}
    for name in graphs or list(export.manifest.graphs):
        src = export_dir / export.entry(name).file_for(None)[0]
        dst = out / f"{name}.onnx"
        entry: dict = {"file": dst.name}
        if not quantizes(precision, name):
            entry["conversion"] = to_fp16(src, dst).to_json()
            entry["accepted"] = True
            entry["precision"] = "fp16"
        else:
            if not any((Path(calib_dir) / name).glob("[0-9]*.npz")):
                log(f"[{name}] no recorded feeds in {calib_dir}: stays fp32")
                continue
            reader = DirectoryCalibrationReader(calib_dir, name)
            qdq = out / f"{name}.qdq_fp32.onnx"
            q = quantize_qdq(src, qdq, reader, fmt=precision)
            try:
                entry["conversion"] = to_qdq_fp16(qdq, dst).to_json()
            finally:
                qdq.unlink(missing_ok=True)
            q = accuracy_check(src, dst, reader, q, fallback="fp32")
            entry[precision] = q.to_json()
            entry["accepted"] = q.kept == precision
            entry["precision"] = precision
            log(f"[{name}] {precision.upper()}+FP16: {q.quantized_nodes} conv/matmul quantized, max relative "
                f"error vs fp32 {q.max_rel_error:.4f} -> {q.kept}")
        entry["sha256"] = file_sha256(dst)
        report["graphs"][name] = entry
    write_text_atomic(out / "report.json", json.dumps(report, indent=2) + "\n")
    return report

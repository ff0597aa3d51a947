"""Explicit INT8 / FP8 quantization (QDQ graphs) for TensorRT and ONNX Runtime, calibrated on recorded feeds.

TensorRT 11 removed implicit INT8 calibration; explicit quantization puts QuantizeLinear /
DequantizeLinear pairs in the graph and TensorRT fuses them into INT8 kernels. What TensorRT accepts
(TensorRT developer guide, "Explicit Quantization"; and what TensorRT refuses in ONNX Runtime's
quantizer's graphs): zero points 0 (symmetric), weights per output channel, biases NOT quantized (an int32
bias DequantizeLinear is refused). :func:`quantize_qdq` writes exactly that:

- activations entering a Conv / MatMul / Gemm with a constant weight: per-tensor, scale = amax / 127
  from the calibration feeds (max |x| over every feed: simple and deterministic);
- that weight: int8 initializer + per-output-channel DequantizeLinear (Conv axis 0; MatMul [K, N]
  axis 1; Gemm axis 0 with transB, else 1);
- everything else (activation-activation matmuls in attention, norms, softmax) stays as it is.

``fmt="fp8"`` writes the same pairs in FP8 E4M3 (``FLOAT8E4M3FN``, opset 19; scale = amax / 448, the
format's largest finite value; weights rounded to nearest even): the scaled matmuls of Hopper and
Ada tensor cores, per-tensor activation and per-channel weight scales. ONNX Runtime's CPU provider
runs these pairs too (exact FP8 rounding, matmuls in FP32), so the accuracy of an FP8 engine is
measured on any machine.

The base graph is the fp32 graph, so the graph written here computes its non-quantized layers in
FP32; an INT8 engine is built from it after ``fastsam2.export.trt.precision.to_qdq_fp16`` put
those layers in FP16 (except the FP32 set) with FP16 scales at opset 19.

The feeds are the ones ``fastsam2.calibration.ort_quant.record_feeds`` records for the ONNX Runtime
INT8 path (``DIR/<graph>/*.npz``, read by ``calibration.reader.DirectoryCalibrationReader``). The
graphs run on ONNX Runtime's CPU provider as well, so one calibration serves both runtimes.

:func:`accuracy_check` compares a quantized graph with its fp32 graph (ONNX Runtime, CPU) on the feeds
and decides per graph whether INT8 is kept, or the graph falls back to FP16/FP32.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fastsam2.runtime.errors import UserError

QUANT_OPS = {"Conv": 1, "MatMul": 1, "Gemm": 1}  # op -> index of the weight input
QMAX = 127.0  # INT8 (symmetric)
FP8_MAX = 448.0  # largest finite FLOAT8E4M3FN
FORMATS = ("int8", "fp8")
QDQ_OPSET = 19  # first opset whose QuantizeLinear/DequantizeLinear take FP16 inputs and scales, and FP8
# Largest relative error (max |int8 - fp32| / max |fp32| over any output, worst feed) at which a
# graph keeps INT8; above it the graph falls back (to FP16 if given, else FP32).
DEFAULT_MAX_REL_ERROR = 0.1
# FP8 E4M3 keeps 3 mantissa bits: each value is rounded by up to 2^-4 of itself (INT8 at full scale: 1/254
# of the range). Its threshold is four times that step; J&F judges the result (bench/RESULTS.md).
FP8_MAX_REL_ERROR = 4 * 2.0**-4
MAX_REL_ERROR = {"int8": DEFAULT_MAX_REL_ERROR, "fp8": FP8_MAX_REL_ERROR}


class QuantizeError(UserError, ValueError):
    """The graph or the calibration data cannot be quantized (one-line message)."""


@dataclass
class QuantReport:
    """One graph's INT8 result: what was quantized, how far it is from fp32, which precision it keeps."""

    graph: str
    quantized_nodes: int = 0
    calibration_feeds: int = 0
    max_abs_error: dict[str, float] = field(default_factory=dict)
    max_rel_error: float = 0.0
    threshold: float = DEFAULT_MAX_REL_ERROR
    fmt: str = "int8"  # the format quantized to: "int8" or "fp8"
    kept: str = "int8"  # ``fmt``, or the fallback precision

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _session(path: Path | str, model_bytes: bytes | None = None):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(model_bytes if model_bytes is not None else str(path), so,
                                providers=["CPUExecutionProvider"])


def _feeds(reader: Any) -> list[dict[str, np.ndarray]]:
    reader.rewind()
    feeds = []
    while (feed := reader.get_next()) is not None:
        feeds.append(feed)
    reader.rewind()
    return feeds


def at_qdq_opset(model):
    """``model`` converted to opset :data:`QDQ_OPSET` where it is below (FP16 scales and FP8 types
    need it), every node named (the converter adds unnamed ones, e.g. ReduceMean axes as Constant
    inputs; the FP16 rewrite keys nodes by name)."""
    from onnx import version_converter

    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < QDQ_OPSET:
        model = version_converter.convert_version(model, QDQ_OPSET)
    names = {n.name for n in model.graph.node}
    for i, n in enumerate(model.graph.node):
        if not n.name:
            n.name = f"{n.op_type}_opset{QDQ_OPSET}_{i}"
            assert n.name not in names
            names.add(n.name)
    return model


def quant_targets(model) -> list[tuple[Any, str, str]]:
    """(node, activation input, weight initializer) of every Conv/MatMul/Gemm with a constant 2-D+
    float weight and a non-constant activation."""
    inits = {i.name: i for i in model.graph.initializer}
    out = []
    for n in model.graph.node:
        w_idx = QUANT_OPS.get(n.op_type)
        if w_idx is None or len(n.input) <= w_idx:
            continue
        act, w = n.input[0], n.input[w_idx]
        if w in inits and act not in inits and inits[w].data_type == 1 and len(inits[w].dims) >= 2:
            out.append((n, act, w))
    return out


def collect_amax(onnx_path: Path, tensors: list[str], feeds: list[dict[str, np.ndarray]]) -> dict[str, float]:
    """max |x| of each named float tensor over ``feeds`` (ONNX Runtime CPU, tensors as extra outputs)."""
    import onnx

    model = onnx.load(str(onnx_path))
    existing = {o.name for o in model.graph.output}
    for t in tensors:
        if t not in existing:
            model.graph.output.append(onnx.helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None))
    sess = _session(None, model.SerializeToString())
    names = [o.name for o in sess.get_outputs()]
    wanted = [names.index(t) for t in tensors]
    amax = {t: 0.0 for t in tensors}
    for feed in feeds:
        values = sess.run(None, feed)
        for t, i in zip(tensors, wanted):
            amax[t] = max(amax[t], float(np.abs(values[i]).max()) if values[i].size else 0.0)
    return amax


def _weight_axis(node, weight: np.ndarray) -> int:
    if node.op_type == "Conv":
        return 0
    if node.op_type == "Gemm":
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        return 0 if trans_b else 1
    return weight.ndim - 1  # MatMul [.., K, N]: per output column


def _quantized_tensor(values: np.ndarray, fmt: str, name: str):
    """An initializer holding ``values`` (already scaled) as INT8 (rounded, clipped) or FP8 E4M3."""
    from onnx import TensorProto, numpy_helper

    if fmt == "int8":
        return numpy_helper.from_array(np.clip(np.round(values), -QMAX, QMAX).astype(np.int8), name)
    import ml_dtypes  # onnx's own dependency: numpy's float8 types

    raw = np.clip(values, -FP8_MAX, FP8_MAX).astype(ml_dtypes.float8_e4m3fn)
    t = TensorProto(name=name, data_type=TensorProto.FLOAT8E4M3FN, dims=list(values.shape))
    t.raw_data = raw.view(np.uint8).tobytes()
    return t


def quantize_qdq(src: str | Path, dst: str | Path, reader: Any, *, fmt: str = "int8") -> QuantReport:
    """Write the QDQ graph of ``src`` in ``fmt`` ("int8" or "fp8") to ``dst`` (module docstring),
    calibrated on ``reader``."""
    import onnx
    from onnx import helper, numpy_helper

    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {FORMATS}, got {fmt!r}")
    qmax = QMAX if fmt == "int8" else FP8_MAX
    src, dst = Path(src), Path(dst)
    model = onnx.load(str(src))
    if fmt == "fp8":  # FP8 Quantize/DequantizeLinear exist from opset 19
        model = at_qdq_opset(model)
    feeds = _feeds(reader)
    if not feeds:
        raise QuantizeError(f"No data is collected for {src.stem} calibration: the reader is empty")
    targets = quant_targets(model)
    report = QuantReport(graph=src.stem, quantized_nodes=len(targets), calibration_feeds=len(feeds), fmt=fmt, kept=fmt)
    if not targets:
        onnx.save(model, str(dst))
        return report
    acts = sorted({a for _, a, _ in targets})
    amax = collect_amax(src, acts, feeds)
    inits = {i.name: i for i in model.graph.initializer}
    new_inits, q_nodes = [], []
    act_dq: dict[str, str] = {}
    zero = _quantized_tensor(np.zeros((), np.float32), fmt, "qdq_zero_point")
    new_inits.append(zero)
    for a in acts:
        scale = max(amax[a], 1e-8) / qmax
        s = numpy_helper.from_array(np.array(scale, np.float32), f"{a}__scale")
        new_inits.append(s)
        q, dq = f"{a}__q", f"{a}__dq"
        q_nodes.append(helper.make_node("QuantizeLinear", [a, s.name, zero.name], [q], name=q))
        q_nodes.append(helper.make_node("DequantizeLinear", [q, s.name, zero.name], [dq], name=dq))
        act_dq[a] = dq
    weight_dq: dict[str, str] = {}
    producers = {o: n for n in model.graph.node for o in n.output}
    for node, a, w in targets:
        if w not in weight_dq:
            weight = numpy_helper.to_array(inits[w]).astype(np.float32)
            axis = _weight_axis(node, weight)
            other = tuple(i for i in range(weight.ndim) if i != axis)
            scale = np.maximum(np.abs(weight).max(axis=other), 1e-8) / qmax
            shape = [1] * weight.ndim
            shape[axis] = -1
            wq_init = _quantized_tensor(weight / scale.reshape(shape), fmt, f"{w}__{fmt}")
            ws = numpy_helper.from_array(scale.astype(np.float32), f"{w}__scale")
            wz = _quantized_tensor(np.zeros(scale.shape, np.float32), fmt, f"{w}__zero_point")
            new_inits += [wq_init, ws, wz]
            out = f"{w}__dq"
            q_nodes.append(helper.make_node("DequantizeLinear", [wq_init.name, ws.name, wz.name], [out],
                                            name=out, axis=axis))
            weight_dq[w] = out
        node.input[0] = act_dq[a]
        node.input[QUANT_OPS[node.op_type]] = weight_dq[w]
    used = {i for n in model.graph.node for i in n.input}
    keep_inits = [i for i in model.graph.initializer if i.name in used]
    model.graph.ClearField("initializer")
    model.graph.initializer.extend(keep_inits + new_inits)
    # Q/DQ nodes go right after their producers: a stable topological order.

    nodes = list(q_nodes) + list(model.graph.node)
    model.graph.ClearField("node")
    model.graph.node.extend(toposort(nodes, {i.name for i in model.graph.input} | {i.name for i in model.graph.initializer}))
    del producers
    tmp = Path(str(dst) + ".tmp")
    onnx.save(model, str(tmp))
    onnx.checker.check_model(str(tmp))
    tmp.replace(dst)
    return report


def accuracy_check(
    fp32_path: Path, quant_path: Path, reader: Any, report: QuantReport, *, fallback: str = "fp32",
    threshold: float | None = None,
) -> QuantReport:
    """Fill ``report``'s errors: every output of ``quant_path`` vs ``fp32_path`` on every feed (ONNX
    Runtime CPU); ``report.kept`` becomes ``fallback`` when the worst relative error exceeds
    ``threshold`` (default: :data:`MAX_REL_ERROR` of the report's format), else the format."""
    threshold = MAX_REL_ERROR[report.fmt] if threshold is None else threshold
    feeds = _feeds(reader)
    ref, got = _session(fp32_path), _session(quant_path)
    names = [o.name for o in ref.get_outputs()]
    worst_rel = 0.0
    abs_err = {n: 0.0 for n in names}
    for feed in feeds:
        for n, a, b in zip(names, ref.run(None, feed), got.run(None, feed)):
            if a.size == 0:
                continue
            d = float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max())
            abs_err[n] = max(abs_err[n], d)
            worst_rel = max(worst_rel, d / max(float(np.abs(a).max()), 1e-6))
    report.max_abs_error = {n: round(v, 6) for n, v in abs_err.items()}
    report.max_rel_error = round(worst_rel, 6)
    report.threshold = threshold
    report.kept = report.fmt if worst_rel <= threshold else fallback
    return report


def toposort(nodes: list, available: set[str]) -> list:
    """ONNX nodes in an order where each one's inputs are ``available`` or made by an earlier node."""
    ready = set(available) | {""}
    pending = list(nodes)
    out = []
    while pending:
        rest = []
        for n in pending:
            if all(i in ready for i in n.input):
                out.append(n)
                ready.update(n.output)
            else:
                rest.append(n)
        if len(rest) == len(pending):
            missing = sorted({i for n in rest for i in n.input if i not in ready})[:5]
            raise ValueError(f"graph has inputs nobody produces: {missing}")
        pending = rest
    return out

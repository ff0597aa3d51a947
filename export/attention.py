"""Attention in the exported graphs: one trace, a graph for ONNX Runtime and one for TensorRT.

Every attention of the stages (Hiera's, the two-way transformer's, fastsam2's memory attention) goes
through ``torch.nn.functional.scaled_dot_product_attention``. The exporter traces it, inside
:func:`ort_attention`, as one ``com.microsoft.MultiHeadAttention`` node: ONNX Runtime runs that node
with its fused (flash) CPU kernel, which never materializes the [B, heads, Nq, Nk] score matrix
(470 MB per memory-attention call at 1024 px) that MatMul -> Softmax -> MatMul holds. That is the
ONNX Runtime graph. :func:`decompose_attention` then writes each such node out in standard ONNX
operators (what torch's own exporter emits for SDPA at opset 17: both operands scaled by
sqrt(scale), MatMul, Softmax, MatMul): the graph TensorRT parses. Both come from the same trace, so
they differ in the attention operator only.
"""

from __future__ import annotations

import contextlib
import functools
import math
from typing import Any, Iterator

MHA_OP = "MultiHeadAttention"
MS_DOMAIN = "com.microsoft"


class _OrtAttention:
    """A stand-in for ``F.scaled_dot_product_attention`` whose trace is one MultiHeadAttention node
    (eager calls run torch's own SDPA, so tracing computes the same values)."""

    def __init__(self):
        import torch

        self.sdpa = torch.nn.functional.scaled_dot_product_attention
        self.calls = 0
        sdpa = self.sdpa

        class MultiHeadAttention(torch.autograd.Function):
            @staticmethod
            def forward(ctx, q, k, v, heads: int, scale: float):
                return sdpa(q, k, v, scale=scale)

            @staticmethod
            def symbolic(g, q, k, v, heads: int, scale: float):
                # [B, heads, N, d] -> [B, N, heads*d] (the op's layout) and back
                def bsd(x):
                    x = g.op("Transpose", x, perm_i=[0, 2, 1, 3])
                    return g.op("Reshape", x, g.op("Constant", value_t=torch.tensor([0, 0, -1])))

                out = g.op(f"{MS_DOMAIN}::{MHA_OP}", bsd(q), bsd(k), bsd(v), num_heads_i=heads, scale_f=scale)
                out.setType(q.type().with_dtype(torch.float32).with_sizes([None] * 3))
                out = g.op("Reshape", out, g.op("Constant", value_t=torch.tensor([0, 0, heads, -1])))
                return g.op("Transpose", out, perm_i=[0, 2, 1, 3])

        self.function = MultiHeadAttention

    def __call__(self, q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, **kw):
        if attn_mask is not None or dropout_p or is_causal or kw.get("enable_gqa") or q.dim() != 4:
            return self.sdpa(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal,
                             scale=scale, **kw)
        self.calls += 1
        scale = 1.0 / math.sqrt(int(q.shape[-1])) if scale is None else float(scale)  # SDPA's default
        return self.function.apply(q, k, v, int(q.shape[1]), scale)


@contextlib.contextmanager
def ort_attention() -> Iterator[_OrtAttention]:
    """Within the block every plain SDPA call (no mask, no dropout, not causal) traces as
    MultiHeadAttention; yields the stand-in, whose ``calls`` counts them."""
    import torch.nn.functional as F

    patch = _OrtAttention()
    F.scaled_dot_product_attention = patch
    try:
        yield patch
    finally:
        F.scaled_dot_product_attention = patch.sdpa


def has_fused_attention(model: Any) -> bool:
    return any(n.op_type == MHA_OP and n.domain == MS_DOMAIN for n in model.graph.node)


def decompose_attention(model: Any) -> Any:
    """Rewrite, in place, every MultiHeadAttention node of ``model`` that :func:`ort_attention` traced
    (q [B,Nq,h*d], k [B,Nk,h*d], v [B,Nk,h*dv], explicit scale → [B,Nq,h*dv]) into standard ONNX: per-head Reshape/Transpose, q and k each scaled
    by sqrt(scale), MatMul, Softmax, MatMul, back to [B,Nq,h*dv]. Returns ``model``; drops the
    com.microsoft opset import when no such node is left."""
    import numpy as np
    from onnx import helper, numpy_helper

    graph = model.graph
    nodes = list(graph.node)
    out_nodes = []
    consts: dict[tuple, str] = {}

    def const(name: str, value: np.ndarray) -> str:
        key = (value.dtype.str, value.shape, value.tobytes())
        if key not in consts:
            consts[key] = f"fastsam2_attention_{name}_{len(consts)}"
            graph.initializer.append(numpy_helper.from_array(value, consts[key]))
        return consts[key]

    for node in nodes:
        if node.op_type != MHA_OP or node.domain != MS_DOMAIN:
            out_nodes.append(node)
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        unsupported = [i for i, name in enumerate(node.input) if i >= 3 and name]
        if len(node.input) < 3 or unsupported or set(attrs) != {"num_heads", "scale"}:
            raise ValueError(f"{node.name}: only q/k/v MultiHeadAttention without bias/mask/past is "
                             f"decomposed (inputs {list(node.input)}, attributes {sorted(attrs)})")
        heads = int(attrs["num_heads"])
        q, k, v = node.input[:3]
        p = node.name or node.output[0]
        split = const("heads", np.asarray([0, 0, heads, -1], np.int64))

        def n(op, inputs, suffix, **kw):
            out = f"{p}/{suffix}"
            out_nodes.append(helper.make_node(op, inputs, [out], name=out, **kw))
            return out

        qh = n("Transpose", [n("Reshape", [q, split], "q_heads")], "q_bhnd", perm=[0, 2, 1, 3])
        kh = n("Transpose", [n("Reshape", [k, split], "k_heads")], "k_bhdn", perm=[0, 2, 3, 1])
        vh = n("Transpose", [n("Reshape", [v, split], "v_heads")], "v_bhnd", perm=[0, 2, 1, 3])
        root = const("sqrt_scale", np.asarray(math.sqrt(float(attrs["scale"])), np.float32))
        qs = n("Mul", [qh, root], "q_scaled")
        ks = n("Mul", [kh, root], "k_scaled")
        probs = n("Softmax", [n("MatMul", [qs, ks], "scores")], "probs", axis=-1)
        o = n("Transpose", [n("MatMul", [probs, vh], "heads_out")], "o_bnhd", perm=[0, 2, 1, 3])
        out_nodes.append(helper.make_node(
            "Reshape", [o, const("merge", np.asarray([0, 0, -1], np.int64))], [node.output[0]],
            name=f"{p}/merge_heads",
        ))
    del graph.node[:]
    graph.node.extend(out_nodes)
    if not has_fused_attention(model):
        keep = [o for o in model.opset_import if o.domain != MS_DOMAIN]
        del model.opset_import[:]
        model.opset_import.extend(keep)
    return model


# -- the torch backend on a GPU: a kernel per attention shape -------------------------------------

FLASH_MAX_TILES = 64  # batch * heads * ceil(Nq / 128) at or below which flash beats PyTorch's choice
WINDOW_MIN_ROWS = 1024  # batch * heads at or above which tiny windows go through two matmuls
WINDOW_MAX_Q, WINDOW_MAX_K = 16, 64


def gpu_attention_kernel(batch: int, heads: int, nq: int, nk: int) -> str:
    """The kernel for a half-precision attention of these sizes on the GPU: "flash" (FlashAttention-2)
    when the call has few query tiles to spread over the SMs, "explicit" (``softmax(q kᵀ·scale) v``
    as two batched matmuls) for many tiny windows, else "default" (PyTorch's SDPA choice: cuDNN on
    Hopper).

    cuDNN's fused kernel splits work over batch × heads × query tiles only, so a call with few tiles
    (memory attention of one object: one head, 1280 queries) leaves most SMs idle, where
    FlashAttention-2 does not; thousands of tiny windows (Hiera's, several frames in a batch) run
    faster as two matmuls. The thresholds come from timing every attention shape of a tracking step
    (``bench/attention_shapes.py``; figures in bench/RESULTS.md).
    """
    if batch * heads * -(-nq // 128) <= FLASH_MAX_TILES:
        return "flash"
    if batch * heads >= WINDOW_MIN_ROWS and nq <= WINDOW_MAX_Q and nk <= WINDOW_MAX_K:
        return "explicit"
    return "default"


def explicit_attention(q, k, v, scale: float | None = None):
    """``softmax(q kᵀ · scale) v`` for q [..., Nq, d], k [..., Nk, d], v [..., Nk, dv] → [..., Nq, dv]:
    scores in q's dtype, the softmax in float32 (as SDPA's kernels accumulate)."""
    scale = 1.0 / math.sqrt(int(q.shape[-1])) if scale is None else scale
    scores = (q @ k.transpose(-1, -2)) * scale
    return scores.float().softmax(-1).to(v.dtype) @ v


@functools.lru_cache(maxsize=None)
def _by_shape(sdpa):
    """``F.scaled_dot_product_attention`` with :func:`gpu_attention_kernel`'s choice for plain
    (no mask, no dropout, not causal) half-precision CUDA calls; everything else goes to ``sdpa``.
    One function object per ``sdpa`` (torch.compile guards on its identity; it also looks
    functions up by name)."""
    import torch

    @functools.wraps(sdpa)
    def attention(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, **kw):
        if (attn_mask is not None or dropout_p or is_causal or kw or q.dim() != 4 or not q.is_cuda
                or q.dtype not in (torch.float16, torch.bfloat16) or k.dtype != q.dtype or v.dtype != q.dtype
                or q.shape[-1] > 256 or q.shape[-1] % 8 or v.shape[-1] != q.shape[-1]):
            return sdpa(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal, scale=scale, **kw)
        kernel = gpu_attention_kernel(q.shape[0], q.shape[1], q.shape[2], k.shape[2])
        if kernel == "flash":
            return torch.ops.aten._scaled_dot_product_flash_attention(q, k, v, 0.0, False, False, scale=scale)[0]
        if kernel == "explicit":
            return explicit_attention(q, k, v, scale)
        return sdpa(q, k, v, scale=scale)

    return attention


@contextlib.contextmanager
def gpu_attention() -> Iterator[None]:
    """Within the block, plain half-precision SDPA calls on CUDA use :func:`gpu_attention_kernel`'s
    kernel (the torch backend wraps its GPU stages in this; traced by torch.compile like any call)."""
    import torch.nn.functional as F

    sdpa = F.scaled_dot_product_attention
    F.scaled_dot_product_attention = _by_shape(sdpa)
    try:
        yield
    finally:
        F.scaled_dot_product_attention = sdpa


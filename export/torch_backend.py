"""The torch backend: the reference implementation of the stage/runner interface.

Runs the torch stages of :mod:`fastsam2.export.stages` (which wrap the official sam2 modules) on CPU
or CUDA, optionally under bf16/fp16 autocast. Imports torch and sam2, so it is loaded only when asked
for; the rest of the runtime never imports it.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, Mapping


from fastsam2.runtime.backends.torch_device import DeviceTorchOps, ShapeBuckets
from fastsam2.runtime.backends.torch_ops import TorchOps
from fastsam2.runtime.encoder_region import RegionEncoder
from fastsam2.runtime.specs import ENCODER_TRUNK, IMAGE_ENCODER, ROUTER, GraphSpec
from fastsam2.runtime.backends.base import Backend, StageRunner

from .attention import gpu_attention


ATTENTION_KERNELS = ("by-shape", "sdpa")  # half-precision GPU attention: per-shape choice, or SDPA's own
_WARMUP_STREAM = None  # the side stream CUDA-graph captures warm up on (created on first use)


class TorchStageRunner(StageRunner):
    """Runs one torch stage module; feeds and outputs are torch tensors on the module's device.

    ``cuda_graphs`` (CUDA only): the first call with a new set of input shapes captures the stage in
    a CUDA graph (one per shape bucket, all sharing ``graph_pool``); later calls with those shapes
    copy the feed into the graph's static inputs, replay it and return clones of its outputs, so a
    stage costs one launch instead of hundreds. The feed's values may differ freely between calls,
    its shapes select the graph: keep them to a few buckets (see ``TrackerOptions.k_multiple``).

    ``compile``: run the stage through ``torch.compile`` (TorchInductor: elementwise chains, layout
    changes and RoPE fused into few kernels), shapes dynamic after the first change so that the
    kept/memory/pointer counts do not each recompile; with ``cuda_graphs`` the compiled stage is what
    each bucket's graph captures (compilation happens in the warm-up runs before the capture).
    ``freeze`` (with ``compile``): Inductor treats the weights as constants (its ``freezing``), so
    the casts autocast makes of every weight at every call are folded into half-precision copies
    made once; the stage must then be called without autograd (as it is) and its weights not
    changed afterwards. Not yet timed on a GPU: off by default.

    ``attention`` (CUDA, half precision): "by-shape" runs each attention with the kernel
    :func:`~fastsam2.export.attention.gpu_attention_kernel` picks for its sizes, and Hiera's patch
    embedding as one matmul (:func:`patch_embed_matmul`); "sdpa" leaves both to PyTorch. fp32 and
    CPU calls always run PyTorch's SDPA and sam2's convolution.
    """

    def __init__(
        self,
        module,
        spec: GraphSpec,
        *,
        autocast_dtype: str | None = None,
        check_inputs: bool = True,
        cuda_graphs: bool = False,
        graph_pool: Any = None,
        compile: bool = False,
        attention: str = "by-shape",
        freeze: bool = False,
    ):
        super().__init__(spec, check_inputs=check_inputs)
        if attention not in ATTENTION_KERNELS:
            raise ValueError(f"attention must be one of {ATTENTION_KERNELS}, got {attention!r}")
        import torch

        self.torch = torch
        self.module = module
        # dynamic shapes after the first change, unless the stage asks for one graph per shape
        self.call = torch.compile(module, dynamic=getattr(module, "compile_dynamic", None)) if compile else module
        self.freeze = bool(compile and freeze)
        if compile and getattr(module, "compile_dynamic", None) is False:
            torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
        self.autocast_dtype = getattr(torch, autocast_dtype) if autocast_dtype else None
        self.device_type = next(iter(module.parameters())).device.type
        # half-precision attention on the GPU: a kernel per shape (export/attention.py)
        self.gpu_attention = attention == "by-shape" and self.device_type == "cuda"
        self.cuda_graphs = bool(cuda_graphs) and self.device_type == "cuda"
        self.graph_pool = graph_pool
        self.graphs: ShapeBuckets[tuple[Any, dict[str, Any], tuple[Any, ...]]] = ShapeBuckets()
        self._inputs: dict[tuple, Any] = {}

    @contextlib.contextmanager
    def context(self) -> Iterator[None]:
        """What every call of this stage runs under: its autocast and GPU kernel choices."""
        torch = self.torch
        with contextlib.ExitStack() as ctx:
            if self.autocast_dtype is not None:
                # no weight-cast cache: a captured graph must redo the casts it recorded
                ctx.enter_context(torch.autocast(self.device_type, dtype=self.autocast_dtype,
                                                 cache_enabled=not self.cuda_graphs))
            if self.freeze:  # Inductor reads it when it compiles, inside the call (torch.compile's
                # options= does not reach its freezing pass)
                import torch._inductor.config as inductor_config

                ctx.enter_context(inductor_config.patch(freezing=True))
            if self.gpu_attention:
                ctx.enter_context(gpu_attention())
                ctx.enter_context(gpu_patch_embed())
            yield

    def _forward(self, feed: Mapping[str, Any]) -> tuple[Any, ...]:
        torch = self.torch
        with self.context():
            outs = self.call(**feed)
        if isinstance(outs, torch.Tensor):
            outs = (outs,)
        if self.autocast_dtype is not None:
            outs = tuple(o.float() if o.is_floating_point() else o for o in outs)
        return tuple(outs)

    def _capture(self, feed: Mapping[str, Any]) -> tuple[Any, dict[str, Any], tuple[Any, ...]]:
        torch = self.torch
        # graphs of one runner share their input buffers (one per name, shape and dtype): every call
        # refills all of its inputs before its replay
        static_in = {}
        for k, v in feed.items():
            key = (k, tuple(v.shape), v.dtype)
            buf = self._inputs.get(key)
            if buf is None:
                buf = self._inputs[key] = v.clone()
            static_in[k] = buf
        # one warm-up stream for all captures: each new stream gets its own cuBLAS workspace
        global _WARMUP_STREAM
        if _WARMUP_STREAM is None:
            _WARMUP_STREAM = torch.cuda.Stream()
        side = _WARMUP_STREAM
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):  # warm-up outside the graph: library handles, workspaces, caches
                self._forward(static_in)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.graph_pool):
            static_out = self._forward(static_in)
        return graph, static_in, static_out

    def infer_impl(self, feed: Mapping[str, Any]) -> dict[str, Any]:
        torch = self.torch
        with torch.inference_mode():
            key = tuple((k, tuple(v.shape), v.dtype) for k, v in feed.items()) if self.cuda_graphs else None
            if key is None or self.graphs.eager(key):
                outs = self._forward(feed)  # no graphs, or over the budget: eager
            else:
                entry = self.graphs.get(key)
                if entry is None:
                    entry = self._capture(feed)
                    self.graphs.add(key, entry)
                graph, static_in, static_out = entry
                for k, v in feed.items():
                    static_in[k].copy_(v)
                graph.replay()
                # the graph's outputs are overwritten by its next replay (and by other graphs of the
                # shared pool): hand out copies
                outs = tuple(o.clone() for o in static_out)
        return dict(zip(self.spec.output_names, outs))


def build_torch_backend(
    model,
    *,
    fill: str = "norm",
    autocast_dtype: str | None = None,
    check_inputs: bool = True,
    extra_stages: dict[str, Any] | None = None,
    cuda_graphs: bool = False,
    router_weights: str | None = None,
    compile: bool = False,
    attention: str = "by-shape",
    precision: str = "fp32",
    freeze_weights: bool = False,
) -> Backend:
    """A :class:`Backend` over the torch stages of a built SAM2 ``model`` (on its device), the token
    router included (``router_weights``: a router .safetensors; default: the built-in weights).

    On CUDA, ``cuda_graphs`` captures each stage per input-shape bucket (see
    :class:`TorchStageRunner`); all graphs share one memory pool. ``compile``: every stage through
    ``torch.compile`` (the eager stages stay the reference: parity tests run them). ``attention``:
    see :class:`TorchStageRunner`. ``precision`` "fp8": the linear layers of Hiera's later stages as
    FP8 scaled matmuls (:mod:`fastsam2.export.fp8`; converts ``model``'s trunk in place).
    ``freeze_weights``: compiled stages on CUDA under autocast take their weights as constants
    (:class:`TorchStageRunner` ``freeze``): each weight is cast once, not at every call.
    """
    from .models import model_config
    from .router import TokenRouter, load_router
    from .stages import build_stages, model_constants

    device = str(next(model.parameters()).device)
    on_cuda = device.startswith("cuda")
    from .encoder_region import region_stages

    precisions = {}
    if precision == "fp8":
        from .fp8 import FP8_STAGES, check_fp8_device, fp8_trunk

        check_fp8_device(device)
        fp8_trunk(model.image_encoder.trunk)
        what = f"fp8 (Hiera stages {', '.join(map(str, FP8_STAGES))})"
        precisions = {IMAGE_ENCODER: what, ENCODER_TRUNK: what}
    elif precision != "fp32":
        raise ValueError(f"torch backend precision: fp32 or fp8, got {precision!r}")
    else:
        from .fp8 import Fp8Linear

        if any(isinstance(m, Fp8Linear) for m in model.image_encoder.trunk.modules()):
            raise ValueError("this model's trunk was converted to FP8 in place (precision='fp8'): build it again")

    stages = build_stages(model, fill=fill)
    stages.update(region_stages(model))
    stages.update(extra_stages or {})
    if ROUTER not in stages:
        stages[ROUTER] = load_router(router_weights, model) if router_weights else TokenRouter.for_model(model)
    for stage in stages.values():
        stage.to(device)  # the stages' own tables (RoPE, position encodings) are built on the CPU
    pool = None
    if cuda_graphs and on_cuda:
        import torch

        pool = torch.cuda.graph_pool_handle()
    runners = {
        name: TorchStageRunner(
            m, m.spec, autocast_dtype=autocast_dtype, check_inputs=check_inputs,
            cuda_graphs=cuda_graphs, graph_pool=pool, compile=compile, attention=attention,
            freeze=freeze_weights and on_cuda and autocast_dtype is not None,
        )
        for name, m in stages.items()
    }
    ops = DeviceTorchOps(device, compile=compile) if on_cuda else TorchOps(device)
    config = model_config(model)
    return Backend(
        name="torch",
        runners=runners,
        ops=ops,
        config=config,
        constants=model_constants(model),
        description=f"torch {device}" + (f" autocast {autocast_dtype}" if autocast_dtype else "")
        + (" cuda-graphs" if pool is not None else "") + (" compiled" if compile else "")
        + (" sdpa-attention" if on_cuda and attention == "sdpa" else "") + (" fp8-trunk" if precisions else ""),
        precisions=precisions,
        weights=getattr(model, "fastsam2_weights", None),
        router_weights=getattr(stages[ROUTER], "fastsam2_weights", None),
        region_encoder=RegionEncoder(runners, ops, config),
    )


# -- the patch embedding on a GPU --------------------------------------------------------------------

def patch_embed_matmul(x: Any, conv: Any) -> Any:
    """Hiera's patch embedding ``conv`` (a stride-s k×k convolution, 3 → C channels) of x [B,3,H,W]
    as im2col + one matmul → [B,Ho,Wo,C], channels last as Hiera wants them (sam2 runs the conv,
    whose 3 input channels suit no tensor-core kernel, then permutes). Under autocast the columns
    are built in its dtype."""
    import torch
    import torch.nn.functional as F

    dtype = torch.get_autocast_dtype(x.device.type) if torch.is_autocast_enabled(x.device.type) else x.dtype
    b, (kh, kw), (sh, sw), (ph, pw) = x.shape[0], conv.kernel_size, conv.stride, conv.padding
    ho, wo = (x.shape[2] + 2 * ph - kh) // sh + 1, (x.shape[3] + 2 * pw - kw) // sw + 1
    cols = F.unfold(x.to(dtype), (kh, kw), padding=(ph, pw), stride=(sh, sw))  # [B, 3*kh*kw, Ho*Wo]
    out = torch.matmul(cols.transpose(1, 2), conv.weight.reshape(conv.out_channels, -1).to(dtype).T)
    if conv.bias is not None:
        out = out + conv.bias.to(dtype)
    return out.reshape(b, ho, wo, conv.out_channels)


@contextlib.contextmanager
def gpu_patch_embed() -> Iterator[None]:
    """Within the block, sam2's PatchEmbed on CUDA under autocast runs :func:`patch_embed_matmul`
    (every other call: sam2's own forward)."""
    import torch
    from sam2.modeling.backbones.utils import PatchEmbed

    original = PatchEmbed.forward

    def forward(self, x):
        conv = self.proj
        if (not x.is_cuda or not torch.is_autocast_enabled("cuda") or conv.groups != 1
                or conv.dilation != (1, 1) or conv.padding_mode != "zeros" or isinstance(conv.padding, str)):
            return original(self, x)
        return patch_embed_matmul(x, conv)

    PatchEmbed.forward = forward
    try:
        yield
    finally:
        PatchEmbed.forward = original

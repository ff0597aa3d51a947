"""The torch backend: the reference implementation of the stage/runner interface.

Runs the torch stages of :mod:`fastsam2.export.stages` (which wrap the official sam2 modules) on CPU
or CUDA, optionally under bf16/fp16 autocast. Imports torch and sam2, so it is loaded only when asked
for; the rest of the runtime never imports it.
"""

from __future__ import annotations

from typing import Any, Mapping

from ..specs import GraphSpec
from .base import Backend, StageRunner


class TorchStageRunner(StageRunner):
    """Runs one torch stage module; feeds and outputs are torch tensors on the module's device."""

    def __init__(self, module, spec: GraphSpec, *, autocast_dtype: str | None = None, check_inputs: bool = True):
        super().__init__(spec, check_inputs=check_inputs)
        import torch

        self.torch = torch
        self.module = module
        self.autocast_dtype = getattr(torch, autocast_dtype) if autocast_dtype else None
        self.device_type = next(iter(module.parameters())).device.type

    def infer_impl(self, feed: Mapping[str, Any]) -> dict[str, Any]:
        torch = self.torch
        with torch.inference_mode():
            if self.autocast_dtype is not None:
                with torch.autocast(self.device_type, dtype=self.autocast_dtype):
                    outs = self.module(**feed)
            else:
                outs = self.module(**feed)
        if isinstance(outs, torch.Tensor):
            outs = (outs,)
        if self.autocast_dtype is not None:
            outs = tuple(o.float() if o.is_floating_point() else o for o in outs)
        return dict(zip(self.spec.output_names, outs))


def build_torch_backend(
    model,
    *,
    fill: str = "norm",
    autocast_dtype: str | None = None,
    check_inputs: bool = True,
    extra_stages: dict[str, Any] | None = None,
) -> Backend:
    """A :class:`Backend` over the torch stages of a built SAM2 ``model`` (on its device)."""
    from fastsam2.export.models import model_config
    from fastsam2.export.stages import build_stages, model_constants

    from ..ops import TorchOps

    device = str(next(model.parameters()).device)
    stages = build_stages(model, fill=fill)
    stages.update(extra_stages or {})
    runners = {
        name: TorchStageRunner(m, m.spec, autocast_dtype=autocast_dtype, check_inputs=check_inputs)
        for name, m in stages.items()
    }
    ops = TorchOps(device)
    if device.startswith("cuda"):
        ops.synchronize = lambda: ops.torch.cuda.synchronize()
    return Backend(
        name="torch",
        runners=runners,
        ops=ops,
        config=model_config(model),
        constants=model_constants(model),
        description=f"torch {device}" + (f" autocast {autocast_dtype}" if autocast_dtype else ""),
    )

"""FP8 (E4M3) matmuls in Hiera's later stages, for the torch backend (``--backend torch --precision fp8``).

Hiera's last two stages hold most of the image encoder's FLOPs in linear layers with K >= 384 (tiny:
qkv, attention projection, the 4x MLP, the stage-change projection); there an FP8 scaled matmul
(``torch._scaled_mm``) does the work at twice bf16's tensor-core rate on Hopper and Ada GPUs. The
first two stages (K = 96 or 192 for tiny) are bound by memory traffic, which quantizing would add to,
so they stay in the backend's dtype.

* weights: per output channel, ``scale = amax / 448`` (E4M3's largest finite value), quantized once;
* activations: per row (token), dynamic: each call scales every token by its own ``amax / 448``, so no
  calibration is needed and an outlier token costs only its own precision;
* the product is accumulated in fp32 by the kernel and returned in the caller's dtype (bf16 under
  autocast; fp32 on the CPU, whose ``_scaled_mm`` runs the same E4M3 arithmetic, so J&F measured
  there is the GPU path's).

The exported graphs reach the same idea through Q/DQ nodes (``fastsam2-export --trt --fp8``,
``calibration/qdq.py``). :func:`fp8_trunk` converts a trunk in place, like ``module.half()``.
"""

from __future__ import annotations

import torch
from torch import nn

from fastsam2.calibration.qdq import FP8_MAX
from fastsam2.runtime.errors import UsageError

FP8_STAGES = (3, 4)  # Hiera's stages (1-based) whose linear layers run in FP8
_ALIGN = 16  # _scaled_mm needs K and N multiples of 16


def channel_scales(w: torch.Tensor) -> torch.Tensor:
    """w [N,K] → the E4M3 scale of each output channel [N] (its amax over 448)."""
    return w.abs().amax(dim=1).clamp(min=torch.finfo(torch.float32).tiny) / FP8_MAX


class Fp8Linear(nn.Module):
    """``linear`` as an FP8 (E4M3) scaled matmul: x [..., K] → [..., N] in x's compute dtype."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        w = linear.weight.detach().float()
        scale = channel_scales(w)
        self.register_buffer("weight_fp8", (w / scale[:, None]).to(torch.float8_e4m3fn))
        self.register_buffer("weight_scale", scale[None, :].contiguous())  # [1, N]
        self.bias = linear.bias
        self.in_features, self.out_features = linear.in_features, linear.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = torch.get_autocast_dtype(x.device.type) if torch.is_autocast_enabled(x.device.type) else x.dtype
        rows = x.reshape(-1, self.in_features).float()
        scale = rows.abs().amax(dim=1, keepdim=True).clamp(min=torch.finfo(torch.float32).tiny) / FP8_MAX
        q = (rows / scale).to(torch.float8_e4m3fn)
        # CUDA's row-wise scaled matmul writes bf16 only; the CPU's writes any dtype
        out_dtype = torch.bfloat16 if x.is_cuda else dtype
        bias = None if self.bias is None else self.bias.to(out_dtype)
        y = torch._scaled_mm(q, self.weight_fp8.t(), scale_a=scale, scale_b=self.weight_scale,
                             bias=bias, out_dtype=out_dtype)
        return y.to(dtype).reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, e4m3"


def check_fp8_device(device: str) -> None:
    """Refuse a CUDA device without FP8 tensor cores (compute capability below 8.9) in one line;
    the CPU computes the same arithmetic."""
    if not str(device).startswith("cuda"):
        return
    major, minor = torch.cuda.get_device_capability(torch.device(device))
    if (major, minor) < (8, 9):
        raise UsageError(f"--precision fp8: {torch.cuda.get_device_name(torch.device(device))} (compute capability "
                         f"{major}.{minor}) has no FP8 tensor cores; they start at 8.9 (Ada, Hopper)")


def block_stages(trunk: nn.Module) -> list[int]:
    """The stage (1-based) of each of Hiera ``trunk``'s blocks, from its ``stage_ends``."""
    ends = list(trunk.stage_ends)
    return [1 + sum(i > e for e in ends) for i in range(len(trunk.blocks))]


def fp8_trunk(trunk: nn.Module, stages: tuple[int, ...] = FP8_STAGES) -> int:
    """Replace, in place, every ``nn.Linear`` of ``trunk``'s blocks in ``stages`` whose sizes the FP8
    kernel takes with an :class:`Fp8Linear`; returns how many were replaced (0 when already done)."""
    count = 0
    for blk, stage in zip(trunk.blocks, block_stages(trunk)):
        if stage not in stages:
            continue
        for parent in list(blk.modules()):
            for name, child in list(parent.named_children()):
                if (isinstance(child, nn.Linear) and child.in_features % _ALIGN == 0
                        and child.out_features % _ALIGN == 0):
                    setattr(parent, name, Fp8Linear(child))
                    count += 1
    return count

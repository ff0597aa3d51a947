"""The token router of "Fast SAM2 with Text-Driven Token Pruning" (arXiv 2512.21333), as a torch
module exportable like the other stages (graph ``router``).

For each of the H*W tokens of the lowest-resolution encoder map it computes seven cues from three
signals and fuses them with a 2-layer MLP into a logit; the output is softmax-normalized over the
tokens. Selection (top-K) happens in the runtime, not in the graph (TensorRT's TopK needs K < 3840).

Cues, per token (all computable from the current frame + the object's previous mask):

1. local visual context — ``contrast``: mean over channels of |f - avg3x3(f)| (how much a token differs
   from its 3x3 neighbourhood), ``edge``: Sobel gradient magnitude of the channel-mean feature map; both
   divided by their mean over the frame (scale-free);
2. semantic relevance — ``relevance``: cosine between the token and the projected text embedding
   (zero when no text: the projected vector is all zeros);
3. uncertainty — from the previous frame's low-res mask logits average-pooled to the token grid:
   ``ambiguity`` = 1 - |2·sigmoid(logit) - 1| (1 where the mask is undecided), ``band`` = dilation minus
   erosion of the binary mask with a 3x3 window (the boundary band, ±1 token), ``near`` = the binary
   mask dilated by ``radius`` tokens (where the object can be on this frame), and ``variance`` = the
   channel-mean local feature variance in a 3x3 window (bounded like contrast).

Default weights, by construction (no training): the first layer passes each cue through its own ReLU
unit, the second sums them with weights near=4, band=3, ambiguity=2, relevance=2, contrast=0.5,
edge=0.5, variance=0.5. So the kept tokens are, in order: the previous mask dilated by two tokens,
its boundary band and undecided pixels, then tokens resembling the text, then salient tokens.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fastsam2.runtime.router import CUES, DEFAULT_ROUTER, ROUTER_FORMAT
from fastsam2.runtime.specs import ROUTER, graph_specs

DEFAULT_CUE_WEIGHTS = {
    "contrast": 0.5,
    "edge": 0.5,
    "relevance": 2.0,
    "ambiguity": 2.0,
    "band": 3.0,
    "near": 4.0,
    "variance": 0.5,
}


class TokenRouter(nn.Module):
    """vision_feats [B,C,H,W], projected_text [B,C], prev_mask_logits [B,1,4H,4W] → token_scores
    [B,H*W] (softmax over tokens). ``cues()`` returns the raw cue maps [B,7,H*W] for inspection.
    ``fastsam2_weights``: which weights it holds (``DEFAULT_ROUTER`` or the sha256 of the router file
    :func:`load_router` read), what an export's manifest and a torch backend record."""

    spec_name = ROUTER

    def __init__(self, hidden: int = 16, radius: int = 2, image_size: int = 1024, backbone_stride: int = 16,
                 hidden_dim: int = 256, mem_dim: int = 64):
        super().__init__()
        from fastsam2.runtime.specs import SpecDims

        self.radius = radius
        self.mlp = nn.Sequential(nn.Linear(len(CUES), hidden), nn.ReLU(), nn.Linear(hidden, 1))
        self.spec = graph_specs(SpecDims(image_size, backbone_stride, hidden_dim, mem_dim))[ROUTER]
        sobel = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 8.0
        self.register_buffer("sobel", torch.stack([sobel, sobel.t()]).unsqueeze(1), persistent=False)
        self.reset_to_default()

    @classmethod
    def for_model(cls, model, **kw) -> "TokenRouter":
        return cls(image_size=model.image_size, backbone_stride=model.backbone_stride,
                   hidden_dim=model.hidden_dim, mem_dim=model.mem_dim, **kw)

    @torch.no_grad()
    def reset_to_default(self) -> None:
        """The hand-set weights described in the module docstring."""
        self.fastsam2_weights = DEFAULT_ROUTER
        first, last = self.mlp[0], self.mlp[2]
        first.weight.zero_()
        first.bias.zero_()
        for i in range(len(CUES)):
            first.weight[i, i] = 1.0
        last.weight.zero_()
        last.bias.zero_()
        for i, cue in enumerate(CUES):
            last.weight[0, i] = DEFAULT_CUE_WEIGHTS[cue]

    def cues(self, vision_feats: torch.Tensor, projected_text: torch.Tensor, prev_mask_logits: torch.Tensor) -> torch.Tensor:
        B, C, H, W = vision_feats.shape
        f = vision_feats.float()
        eps = 1e-6
        local_mean = F.avg_pool2d(f, 3, stride=1, padding=1, count_include_pad=False)
        contrast = (f - local_mean).abs().mean(dim=1, keepdim=True)
        grad = F.conv2d(f.mean(dim=1, keepdim=True), self.sobel, padding=1)
        edge = grad.pow(2).sum(dim=1, keepdim=True).sqrt()
        local_sq = F.avg_pool2d(f * f, 3, stride=1, padding=1, count_include_pad=False)
        variance = (local_sq - local_mean * local_mean).clamp_min(0.0).mean(dim=1, keepdim=True)

        def frame_normalized(x):
            # bounded in [0, 1), 0.5 at the frame's mean: saliency never outweighs the mask cues
            return x / (x + x.mean(dim=(2, 3), keepdim=True) + eps)

        text = projected_text.float()
        f_unit = f / (f.norm(dim=1, keepdim=True) + eps)
        t_unit = text / (text.norm(dim=1, keepdim=True) + eps)
        relevance = (f_unit * t_unit[:, :, None, None]).sum(dim=1, keepdim=True)

        scale = prev_mask_logits.shape[-1] // W
        logits = F.avg_pool2d(prev_mask_logits.float(), scale)  # [B,1,H,W]
        prob = torch.sigmoid(logits)
        ambiguity = 1.0 - (2.0 * prob - 1.0).abs()
        mask = (logits > 0).float()
        dilated = F.max_pool2d(mask, 3, stride=1, padding=1)
        eroded = -F.max_pool2d(-mask, 3, stride=1, padding=1)
        band = dilated - eroded
        k = 2 * self.radius + 1
        near = F.max_pool2d(mask, k, stride=1, padding=self.radius)
        maps = [
            frame_normalized(contrast),
            frame_normalized(edge),
            relevance,
            ambiguity,
            band,
            near,
            frame_normalized(variance),
        ]
        return torch.cat(maps, dim=1).flatten(2)  # [B,7,HW]

    def logits(self, vision_feats, projected_text, prev_mask_logits) -> torch.Tensor:
        cues = self.cues(vision_feats, projected_text, prev_mask_logits)
        return self.mlp(cues.transpose(1, 2)).squeeze(-1)  # [B,HW]

    def forward(self, vision_feats, projected_text, prev_mask_logits) -> torch.Tensor:
        return torch.softmax(self.logits(vision_feats, projected_text, prev_mask_logits), dim=-1)


def router_state(router: TokenRouter, text_proj=None) -> tuple[dict, dict]:
    """(tensors, metadata) of a router (+ optional TextProjection) for a safetensors file."""
    import numpy as np

    tensors = {f"router.{k}": v.detach().cpu().float().numpy() for k, v in router.mlp.state_dict().items()}
    meta = {"format": ROUTER_FORMAT, "cues": ",".join(CUES), "radius": str(router.radius),
            "hidden": str(router.mlp[0].out_features)}
    if text_proj is not None:
        tensors.update({k: np.asarray(v, np.float32) for k, v in text_proj.to_state_dict().items()})
        meta.update(text_proj.metadata())
    return tensors, meta


def save_router(path, router: TokenRouter, text_proj=None) -> None:
    """Write router (+ text projection) weights as safetensors, atomically."""
    import os

    from safetensors.numpy import save_file

    tensors, meta = router_state(router, text_proj)
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        save_file(tensors, tmp, metadata=meta)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def load_router(path, model) -> TokenRouter:
    """A TokenRouter for ``model`` with the MLP weights of a router safetensors file (validated by
    :func:`~fastsam2.runtime.router.read_router_file`: a broken file is one ``RouterError`` line)."""
    from fastsam2.runtime.router import read_router_file

    weights = read_router_file(path)
    router = TokenRouter.for_model(model, hidden=weights.hidden, radius=weights.radius)
    state = {k.removeprefix("router."): torch.from_numpy(v) for k, v in weights.mlp.items()}
    router.mlp.load_state_dict(state)
    router.fastsam2_weights = weights.sha256
    return router.eval()


def token_targets(teacher_logits: torch.Tensor, feat_size: int, radius: int = 1) -> torch.Tensor:
    """Self-distillation targets [B,HW] in {0,1}: the tokens the teacher's mask depends on — inside the
    teacher mask (any pixel of the token's cell), dilated by ``radius`` tokens, which includes its
    boundary band. teacher_logits: [B,1,4H,4W] low-res mask logits of the unpruned tracker."""
    scale = teacher_logits.shape[-1] // feat_size
    inside = F.max_pool2d((teacher_logits > 0).float(), scale)
    k = 2 * radius + 1
    return F.max_pool2d(inside, k, stride=1, padding=radius).flatten(1)


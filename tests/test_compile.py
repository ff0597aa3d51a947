"""The torch backend with ``compile=True`` (TorchInductor per stage) tracks like the eager stages.

Slow: Inductor compiles every stage, and recompiles memory attention and the memory encoder once
their token counts change (about 3 minutes on 2 CPU cores at 256 px). On a GPU the same comparison
runs in bf16 (``bench/gpu_smoke.py``), where fused kernels round differently and only the masks are
compared; here in fp32 the compiled stages must agree to rounding.
"""

from __future__ import annotations

import numpy as np
import pytest
from tolerances import network_atol

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("single_thread")]


def test_compiled_stages_track_like_eager(bedroom):
    from fastsam2.export.models import build_sam2
    from fastsam2.export.torch_backend import build_torch_backend
    from fastsam2.runtime.frames import open_frames
    from fastsam2.runtime.router import make_router
    from fastsam2.runtime.tracker import Prompt, SAM2Tracker, TrackerOptions

    model = build_sam2("tiny", image_size=256, object_score_bias=5.0, quiet=True, seed=0)
    with open_frames(str(bedroom)) as src:
        frames = [f.image for f, _ in zip(src, range(5))]
    prompts = {1: Prompt(points=[[480, 300]], labels=[1]), 2: Prompt(box=[100, 100, 300, 400])}
    runs = []
    for compile in (False, True):
        backend = build_torch_backend(model, compile=compile)
        assert ("compiled" in backend.description) == compile
        tracker = SAM2Tracker(backend, TrackerOptions(keep_ratio=0.5, fill_hole_area=0), router=make_router(backend))
        runs.append([tracker.track(image, prompts if t == 0 else None).logits for t, image in enumerate(frames)])
    for t, (eager, compiled) in enumerate(zip(*runs)):
        for i in range(eager.shape[0]):
            assert 0.001 < (eager[i] > 0).mean() < 0.999, f"frame {t} object {i}: trivial mask"
        assert np.abs(eager - compiled).max() <= network_atol(eager), (t, float(np.abs(eager - compiled).max()))


def test_frozen_weights_give_the_same_outputs_and_are_constants():
    """``freeze`` (``build_torch_backend(freeze_weights=True)``): under bf16 autocast the compiled
    stage with its weights as Inductor constants gives the outputs of the compiled stage without,
    and a cast weight changed afterwards is not seen (its bf16 copy was made once: freezing is on)."""
    import torch

    from fastsam2.export.models import build_sam2
    from fastsam2.export.stages import build_stages
    from fastsam2.export.torch_backend import TorchStageRunner

    model = build_sam2("tiny", image_size=256, quiet=True, seed=0)
    feed = {"image": torch.randn(1, 3, 256, 256, generator=torch.Generator().manual_seed(0))}
    runners = {}
    for freeze in (False, True):  # a stage module each (sharing the weights): compiled apart
        stage = build_stages(model)["image_encoder"]
        runners[freeze] = TorchStageRunner(stage, stage.spec, autocast_dtype="bfloat16", check_inputs=False,
                                           compile=True, freeze=freeze)
    before = {freeze: r.infer(feed) for freeze, r in runners.items()}
    for name, plain in before[False].items():
        # bf16 rounding of the values at their magnitude: the two compilations may fuse differently
        tol = 4 * 2.0**-8 * float(plain.abs().max())
        assert float((plain - before[True][name]).abs().max()) <= tol, name
    with torch.no_grad():
        # the linear layers' weights: autocast casts them, so frozen they are bf16 copies (weights used
        # as they are, as LayerNorm's, stay the same tensors even frozen)
        for m in model.image_encoder.modules():
            if isinstance(m, torch.nn.Linear):
                m.weight.mul_(1.5)
    after = {freeze: r.infer(feed) for freeze, r in runners.items()}
    name = "vision_feats"
    assert not torch.allclose(after[False][name], before[False][name])
    assert torch.equal(after[True][name], before[True][name])

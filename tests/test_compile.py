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

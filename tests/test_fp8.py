"""FP8 (E4M3) matmuls in Hiera's later stages (``export/fp8.py``, ``--backend torch --precision fp8``):
the layer computes E4M3 arithmetic (scaled per output channel and per token), only stages 3-4 are
converted, the torch backend runs it and says so, and the tracker follows the object with it. J&F on
held-out clips, and a broken FP8 path falling below it, are in tests/test_accuracy.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tolerances import reduction_atol

from fastsam2.calibration.qdq import FP8_MAX, FP8_MAX_REL_ERROR
from fastsam2.export.fp8 import FP8_STAGES, Fp8Linear, block_stages, fp8_trunk
from fastsam2.export.models import build_sam2
from fastsam2.export.torch_backend import build_torch_backend
from fastsam2.runtime.specs import ENCODER_TRUNK, IMAGE_ENCODER

E4M3_STEP = 2.0**-4  # E4M3 keeps 3 mantissa bits: a rounded value is within 2^-4 of itself


def _e4m3(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x rounded to E4M3 at ``scale`` (broadcast), back in float64."""
    return (x / scale).to(torch.float8_e4m3fn).double() * scale.double()


def test_fp8_linear_computes_e4m3_products():
    g = torch.Generator().manual_seed(0)
    lin = torch.nn.Linear(64, 32)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(32, 64, generator=g) * torch.logspace(-2, 1, 32)[:, None])
    # tokens of very different magnitudes: each is scaled on its own
    x = torch.randn(5, 7, 64, generator=g) * torch.logspace(-3, 2, 7)[None, :, None]
    y = Fp8Linear(lin)(x)
    assert y.shape == (5, 7, 32) and y.dtype == torch.float32
    w = lin.weight.detach()
    rows = x.reshape(-1, 64)
    wq = _e4m3(w, w.abs().amax(1, keepdim=True) / FP8_MAX)
    xq = _e4m3(rows, rows.abs().amax(1, keepdim=True) / FP8_MAX)
    ref = (xq @ wq.T + lin.bias.detach().double()).reshape(5, 7, 32)
    # the same E4M3 values, accumulated in fp32: a 64-term dot product of each row's size
    mag = float((xq.abs() @ wq.abs().T).max())
    assert torch.allclose(y.double(), ref, rtol=0, atol=reduction_atol(mag, 64))
    # against fp32: each product moves by at most (1 + 2^-4)^2 - 1 of itself
    exact = (rows.double() @ w.double().T).reshape(5, 7, 32) + lin.bias.detach().double()
    bound = ((1 + E4M3_STEP) ** 2 - 1) * (rows.double().abs() @ w.double().abs().T).reshape(5, 7, 32)
    err = (y.double() - exact).abs()
    assert (err <= bound + 1e-6).all()
    assert err.max() > 0, "FP8 rounds: an exact result means the layer did not quantize"


def test_fp8_linear_keeps_the_autocast_dtype():
    lin = torch.nn.Linear(32, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = Fp8Linear(lin)(torch.randn(3, 32))
    assert y.dtype == torch.bfloat16


def test_fp8_trunk_converts_the_later_stages_once():
    model = build_sam2("tiny", None, image_size=256, quiet=True)
    trunk = model.image_encoder.trunk
    stages = block_stages(trunk)
    assert stages == [1, 2, 2, 3, 3, 3, 3, 3, 3, 3, 4, 4]  # tiny: [1, 2, 7, 2] blocks
    expected = sum(isinstance(m, torch.nn.Linear) for blk, s in zip(trunk.blocks, stages) if s in FP8_STAGES
                   for m in blk.modules())
    assert fp8_trunk(trunk) == expected > 0
    for blk, s in zip(trunk.blocks, stages):
        kinds = {type(m) for m in blk.modules()}
        assert (Fp8Linear in kinds) == (s in FP8_STAGES)
        assert (torch.nn.Linear in kinds) == (s not in FP8_STAGES)
    assert fp8_trunk(trunk) == 0  # already converted


def test_the_torch_backend_runs_an_fp8_trunk():
    model = build_sam2("synthetic", "synthetic", quiet=True)
    image = torch.randn(1, 3, model.image_size, model.image_size, generator=torch.Generator().manual_seed(1))
    ref = build_torch_backend(model).runners[IMAGE_ENCODER].infer({"image": image})["vision_feats"]
    backend = build_torch_backend(model, precision="fp8")
    assert set(backend.precisions) == {IMAGE_ENCODER, ENCODER_TRUNK} and "fp8-trunk" in backend.description
    out = backend.runners[IMAGE_ENCODER].infer({"image": image})["vision_feats"]
    rel = float((out - ref).abs().max() / ref.abs().max())
    assert 0 < rel <= FP8_MAX_REL_ERROR, rel
    with pytest.raises(ValueError, match="converted to FP8"):
        build_torch_backend(model)  # the trunk was converted in place: no silent fp8 "fp32" backend
    with pytest.raises(ValueError, match="fp32 or fp8"):
        build_torch_backend(build_sam2("synthetic", "synthetic", quiet=True), precision="int8")


def test_gpus_without_fp8_tensor_cores_are_refused(monkeypatch):
    from fastsam2.export.fp8 import check_fp8_device
    from fastsam2.runtime.errors import UsageError

    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: "NVIDIA A100")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None: (8, 0))
    with pytest.raises(UsageError, match="compute capability 8.0"):
        check_fp8_device("cuda:0")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None: (9, 0))
    check_fp8_device("cuda:0")
    check_fp8_device("cpu")


def test_track_with_an_fp8_trunk_from_the_command_line(tmp_path):
    import json

    from PIL import Image

    from fastsam2.runtime.synth import make_clip, write_clip
    from fastsam2.tools import cli

    clip = make_clip(4, split="hard", frames=4, size=512, index=2)
    write_clip(clip, tmp_path)
    frames = tmp_path / "JPEGImages" / clip.name
    ys, xs = np.nonzero(clip.masks[0] == 1)
    masks = {}
    for precision in ("fp32", "fp8"):
        out = tmp_path / precision
        assert cli.main(["track", "--checkpoint", "synthetic", "--video", str(frames), "--point",
                         f"{int(xs.mean())},{int(ys.mean())}", "--precision", precision, "--no-overlay",
                         "--threads", "1", "--out", str(out)]) == 0
        report = json.loads((out / "report.json").read_text())
        assert ("precisions" in report) == (precision == "fp8")
        masks[precision] = [np.asarray(Image.open(p)) > 0 for p in sorted((out / "masks").rglob("*.png"))]
    assert len(masks["fp8"]) == 4
    for a, b in zip(masks["fp32"], masks["fp8"]):
        assert a.any() and b.any()
        assert (a & b).sum() / (a | b).sum() >= 0.9, "an FP8 trunk moves the trained model's masks little"

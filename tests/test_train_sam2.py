"""tools/train_sam2.py: SAM2's loss terms, the prompt samplers, and one end-to-end step on CPU."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from fastsam2.tools import train_sam2 as ts  # noqa: E402


def _disk(n: int, cx: float, cy: float, r: float) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    return ((xx + 0.5 - cx) ** 2 + (yy + 0.5 - cy) ** 2) < r * r


def test_best_of_k_picks_the_matching_mask_and_iou_targets_are_real_ious():
    gt = _disk(32, 16, 16, 8)[None, None].float()  # [1, 1, H, W]
    right = (gt[0, 0] * 2 - 1) * 20  # confident and correct
    wrong = -right
    masks = torch.stack([wrong, right, torch.zeros_like(right)])[None]  # [1, 3, H, W]
    loss, terms = ts.prediction_loss(masks, torch.tensor([[0.0, 1.0, 0.5]]), torch.tensor([[5.0]]), gt)
    # best of k = the correct mask: focal and dice near 0
    assert terms["focal"] < 1e-6 and terms["dice"] < 1e-2
    # real IoUs are (0, 1, 0): the predicted (0, 1, 0.5) are off by 0.5 on one mask -> mean L1 = 1/6
    assert abs(float(terms["iou"]) - 0.5 / 3) < 1e-6
    swapped, terms2 = ts.prediction_loss(masks.flip(1), torch.tensor([[0.5, 1.0, 0.0]]), torch.tensor([[5.0]]), gt)
    assert abs(float(swapped) - float(loss)) < 1e-5  # order of the k masks does not matter


def test_absent_object_gets_only_the_object_score_loss():
    gt = torch.zeros(2, 1, 16, 16)
    masks = torch.randn(2, 3, 16, 16) * 5
    loss, terms = ts.prediction_loss(masks, torch.rand(2, 3), torch.tensor([[-4.0], [4.0]]), gt)
    assert float(terms["focal"]) == float(terms["dice"]) == float(terms["iou"]) == 0.0
    expected = float(torch.nn.functional.binary_cross_entropy_with_logits(torch.tensor([-4.0, 4.0]), torch.zeros(2)))
    assert abs(float(loss) - expected) < 1e-6


def test_prompts_fall_where_they_should():
    gen = torch.Generator().manual_seed(0)
    gt = torch.stack([_disk(64, 20, 30, 6), _disk(64, 40, 40, 10)])
    xy, found = ts.sample_points(gt, gen)
    assert found.all()
    assert all(gt[i, int(xy[i, 1]), int(xy[i, 0])] for i in range(2))
    coords, labels = ts.box_prompt(gt, gen)
    assert labels.tolist() == [[2, 3], [2, 3]]
    # the true boxes are [14, 24, 26, 36] and [30, 30, 50, 50]; noise is at most 10 % of the side
    true = torch.tensor([[14.0, 24, 26, 36], [30, 30, 50, 50]])
    side = torch.tensor([[12.0, 12, 12, 12], [20, 20, 20, 20]])
    assert ((coords.view(2, 4) - true).abs() <= 0.1 * side + 1).all()
    # a prediction missing the object gets a positive click inside it, a false alarm a negative one
    miss, alarm = torch.zeros_like(gt[0]), gt[1] | _disk(64, 10, 10, 5)
    xy, lab = ts.corrective_click(torch.stack([miss, alarm]), gt, gen)
    assert lab[0, 0] == 1 and gt[0, int(xy[0, 0, 1]), int(xy[0, 0, 0])]
    assert lab[1, 0] == 0 and not gt[1, int(xy[1, 0, 1]), int(xy[1, 0, 0])]


@pytest.mark.slow
def test_two_steps_on_cpu_write_weights_that_load(tmp_path):
    """The whole script at 256 px: two optimizer steps (every prompt kind is reachable), the fp16
    safetensors load back through --checkpoint, the log has the held-out evaluation."""
    from fastsam2.export.models import build_sam2

    out = tmp_path / "run"
    argv = ["--out", str(out), "--steps", "2", "--batch", "1", "--frames", "3", "--image-size", "256",
            "--workers", "0", "--log-every", "1", "--eval-clips", "1", "--eval-frames", "3", "--p-correct", "1"]
    assert ts.main(argv) == 0
    log = json.loads((out / "train_log.json").read_text())
    assert log["steps"] == 2 and len(log["log"]) == 2
    assert all(np.isfinite(r["loss"]) for r in log["log"])
    assert 0.0 <= log["eval"]["jf_mean"] <= 1.0
    model = build_sam2("synthetic", str(out / "model.safetensors"), image_size=256)
    assert model.image_size == 256
    assert ts.main(argv) == 1  # --out exists

"""The ONNX Runtime backend: tracker parity with the torch tracker, streaming input, load errors,
and a torch-free import.

The torch reference is the torch tracker (proven equal to SAM2VideoPredictor by test_parity.py) on
the first 20 bedroom frames, two objects (a point and a box). The ORT tracker runs the same clip
through the streaming API (``track(frame)``) and, shorter, the SAM2-style offline API.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from tolerances import network_atol

from fastsam2.runtime.backends.ort import GraphLoadError, load_ort_backend
from fastsam2.runtime.manifest import ManifestError
from fastsam2.runtime.tracker import Prompt, SAM2Tracker, TrackerOptions

# ORT (CPU, fp32) vs torch (CPU, fp32): rounding-level differences, bounded relative to the logits'
# magnitude (tests/tolerances.py; measured max |Δ| ~1e-6 on this clip). IoU guards the masks.
MIN_IOU = 0.99
N_FRAMES = 20
POINT = [[480.0, 300.0]]
BOX = [100.0, 100.0, 300.0, 400.0]


pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def export_dir(onnx_tiny512) -> Path:
    return onnx_tiny512


def offline_run(tracker: SAM2Tracker, video: str, n: int) -> dict[int, np.ndarray]:
    state = tracker.init_state(video)
    tracker.add_new_points_or_box(state, 0, 1, points=POINT, labels=[1])
    tracker.add_new_points_or_box(state, 0, 2, box=BOX)
    return {t: m[:, 0] for t, _, m in tracker.propagate_in_video(state, max_frame_num_to_track=n - 1)}


def streaming_run(tracker: SAM2Tracker, video: str, n: int) -> dict[int, np.ndarray]:
    from fastsam2.runtime.frames import open_frames

    out = {}
    tracker.reset()
    with open_frames(video) as source:
        for frame in source:
            if frame.index >= n:
                break
            prompts = {1: Prompt(points=POINT, labels=[1]), 2: Prompt(box=BOX)} if frame.index == 0 else None
            out[frame.index] = tracker.track(frame.image, prompts).logits
    return out


def compare(ref: dict, ours: dict) -> tuple[float, float]:
    """(max |Δ| of logits, min mask IoU) over every frame and object; checks non-trivial masks and
    every frame's |Δ| against its tolerance (tests/tolerances.py)."""
    assert sorted(ref) == sorted(ours)
    worst, min_iou = 0.0, 1.0
    for t in ref:
        a, b = ref[t], ours[t]
        assert a.shape == b.shape, (t, a.shape, b.shape)
        assert np.abs(a - b).max() <= network_atol(a), (t, float(np.abs(a - b).max()), network_atol(a))
        worst = max(worst, float(np.abs(a - b).max()))
        for i in range(a.shape[0]):
            ma, mb = a[i] > 0, b[i] > 0
            assert 0.001 < ma.mean() < 0.999, f"frame {t} object {i}: trivial reference mask"
            min_iou = min(min_iou, float((ma & mb).sum() / max(1, (ma | mb).sum())))
    return worst, min_iou


@pytest.fixture(scope="module")
def torch_reference(tiny512, clip25) -> dict[int, np.ndarray]:
    from fastsam2.export.torch_backend import build_torch_backend

    tracker = SAM2Tracker(build_torch_backend(tiny512), TrackerOptions(fill_hole_area=0))
    return offline_run(tracker, str(clip25), N_FRAMES)


@pytest.fixture(scope="module")
def torch_streaming_05(tiny512, clip25) -> dict[int, np.ndarray]:
    """The torch tracker pruned at keep 0.5 with the default router (the weights router.onnx has)."""
    from fastsam2.export.torch_backend import build_torch_backend
    from fastsam2.runtime.router import make_router

    backend = build_torch_backend(tiny512)
    tracker = SAM2Tracker(backend, TrackerOptions(fill_hole_area=0, keep_ratio=0.5), router=make_router(backend))
    return streaming_run(tracker, str(clip25), N_FRAMES)


@pytest.mark.parametrize("keep_ratio", [1.0, 0.5])
def test_ort_tracker_equals_torch_streaming(export_dir, torch_reference, torch_streaming_05, clip25, keep_ratio):
    from fastsam2.runtime.router import make_router

    backend = load_ort_backend(export_dir, expect_config="tiny", intra_op_threads=1)
    assert backend.ops.name == "numpy"
    router = make_router(backend) if keep_ratio < 1 else None
    tracker = SAM2Tracker(backend, TrackerOptions(fill_hole_area=0, keep_ratio=keep_ratio), router=router)
    ours = streaming_run(tracker, str(clip25), N_FRAMES)
    ref = torch_reference if keep_ratio == 1.0 else torch_streaming_05
    worst, min_iou = compare(ref, ours)
    ms = {k: v / max(1, tracker.times.calls[k]) for k, v in tracker.times.ms.items()}
    print(f"\nORT streaming vs torch at keep {keep_ratio}, {N_FRAMES} frames x 2 objects: max |Δ| {worst:.2e}, "
          f"min IoU {min_iou:.5f}; ms/call {ms}")
    assert min_iou >= MIN_IOU


def test_ort_tracker_offline_api(export_dir, torch_reference, clip25):
    tracker = SAM2Tracker(load_ort_backend(export_dir, intra_op_threads=1), TrackerOptions(fill_hole_area=0))
    ours = offline_run(tracker, str(clip25), 5)
    worst, min_iou = compare({t: torch_reference[t] for t in range(5)}, ours)
    assert min_iou >= MIN_IOU


# -- load errors -----------------------------------------------------------------------------------


def linked_copy(src: Path, dst: Path) -> Path:
    """A copy of an export directory whose graph files are symlinks (cheap to tamper with)."""
    dst.mkdir()
    for f in src.iterdir():
        if f.suffix == ".onnx":
            os.symlink(f, dst / f.name)
        else:
            shutil.copy(f, dst / f.name)
    return dst


def test_manifest_of_another_config(export_dir, tmp_path):
    with pytest.raises(ManifestError, match="export is for config 'tiny', expected 'large'"):
        load_ort_backend(export_dir, expect_config="large")
    d = linked_copy(export_dir, tmp_path / "v")
    data = json.loads((d / "manifest.json").read_text())
    data["fastsam2_version"] = "0.0.1"
    (d / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ManifestError, match="written by fastsam2 0.0.1"):
        load_ort_backend(d)


def test_missing_manifest_and_graph(export_dir, tmp_path):
    with pytest.raises(ManifestError, match="no manifest.json in"):
        load_ort_backend(tmp_path)
    d = linked_copy(export_dir, tmp_path / "m")
    (d / "memory_encoder.onnx").unlink()
    with pytest.raises(GraphLoadError, match=r"graph file missing: .*memory_encoder\.onnx"):
        load_ort_backend(d)


@pytest.mark.parametrize("file,attention", [("mask_decoder.ort.onnx", "fused"), ("mask_decoder.onnx", "plain")])
def test_truncated_graph(export_dir, tmp_path, file, attention):
    d = linked_copy(export_dir, tmp_path / "t")
    (d / file).unlink()
    (d / file).write_bytes((export_dir / file).read_bytes()[:4096])
    name = file.replace(".", r"\.")
    with pytest.raises(GraphLoadError, match=rf"{name} does not match the manifest"):
        load_ort_backend(d, attention=attention)
    with pytest.raises(GraphLoadError, match=rf"cannot load .*{name} \(truncated or corrupt\?\)") as e:
        load_ort_backend(d, check=False, attention=attention)
    assert "\n" not in str(e.value)


def test_ort_backend_imports_without_torch(export_dir):
    """The runtime a Jetson gets: load the export and run a graph with torch and sam2 unimportable."""
    code = textwrap.dedent(
        f"""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("torch", "sam2", "torchvision"):
                    raise ImportError("blocked: " + name)
        sys.meta_path.insert(0, Block())
        import numpy as np
        from fastsam2.runtime.backends.ort import load_ort_backend
        from fastsam2.runtime.tracker import SAM2Tracker
        b = load_ort_backend({str(export_dir)!r}, graphs=["memory_encoder"])
        out = b.runners["memory_encoder"].infer(dict(
            vision_feats=np.zeros((1, 256, 32, 32), np.float32),
            mask_logits=np.zeros((1, 1, 128, 128), np.float32),
            object_score_logits=np.ones((1, 1), np.float32),
            binarize=np.zeros((1,), np.float32),
            kept_idx=np.arange(10, dtype=np.int64)[None]))
        assert out["memory"].shape == (1, 10, 64), out["memory"].shape
        assert not any(m.split(".")[0] in ("torch", "sam2") for m in sys.modules)
        print("ok")
        """
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip().endswith("ok")

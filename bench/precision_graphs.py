"""The ``fp16/``, ``int8/`` and ``fp8/`` graph folders of an export, which ``--backend ort --precision``
loads: the graphs TensorRT engines of that precision are built from, run by ONNX Runtime (FP8 is
emulated exactly on the CPU: E4M3 rounding, FP32 matmuls).

Calibration feeds are recorded by the torch backend over ``--frames`` (default: a generated "hard"
clip for the ``synthetic`` model, prompted with its first object's mask centre; else the bedroom
frames) in the pruned loop at ``CALIB_KEEP_RATIO`` (as ``fastsam2-export --int8``), then
``export/trt/precision.py: write_precision_dir`` writes each folder and its ``report.json``.

    fastsam2-export --checkpoint synthetic --out g512
    python bench/precision_graphs.py --graphs g512 --checkpoint synthetic --precisions fp8,int8
    fastsam2 eval --run --dataset hard --keeps 1.0 --backend ort --graphs g512 --precision fp8 --out run_fp8
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

BEDROOM = Path(__file__).resolve().parents[2] / "shared" / "data" / "bedroom"
CALIB_CLIP_SEED = 101  # not a seed of the held-out sets the J&F figures use (7, 11)


def make_precision_dirs(graphs: Path, torch_backend: Any, frames: Any, precisions: Sequence[str], calib_dir: Path,
                        point: tuple[float, float] | None = None, n_frames: int = 12, log=print) -> dict[str, dict]:
    """Record calibration feeds of ``torch_backend`` on ``n_frames`` of ``frames`` (a folder or a list
    of RGB arrays) into ``calib_dir`` where a precision needs them, then write ``graphs/<precision>/``
    for each of ``precisions``; returns {precision: its report}."""
    from fastsam2.calibration.ort_quant import CALIB_KEEP_RATIO, DEFAULT_POINT, record_feeds
    from fastsam2.export.trt.precision import write_precision_dir

    if any(p != "fp16" for p in precisions) and not any(Path(calib_dir).glob("*/*.npz")):
        record_feeds(torch_backend, frames, calib_dir, n_frames=n_frames, keep_ratio=CALIB_KEEP_RATIO,
                     point=point or DEFAULT_POINT)
    reports = {}
    for precision in precisions:
        shutil.rmtree(graphs / precision, ignore_errors=True)
        reports[precision] = write_precision_dir(graphs, precision, calib_dir=None if precision == "fp16" else calib_dir,
                                                 log=log)
    return reports


def main(argv: list[str] | None = None) -> int:
    import numpy as np
    import torch

    from fastsam2.export.models import build_sam2
    from fastsam2.export.torch_backend import build_torch_backend

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--graphs", required=True, help="an export directory (fastsam2-export --out)")
    p.add_argument("--checkpoint", default=None, help="the weights the graphs were exported from (e.g. synthetic)")
    p.add_argument("--config", default=None)
    p.add_argument("--precisions", default="fp16,int8,fp8")
    p.add_argument("--frames", default=None, help="calibration frames (default: see the module docstring)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    from fastsam2.runtime.manifest import Manifest

    size = Manifest.read(args.graphs).model_config.image_size
    model = build_sam2(args.config, args.checkpoint, image_size=size, quiet=True)
    frames, point = args.frames, None
    if frames is None and args.checkpoint == "synthetic":
        from fastsam2.runtime.synth import make_clip

        clip = make_clip(CALIB_CLIP_SEED, split="hard", frames=12, size=size, index=0)
        ys, xs = np.nonzero(clip.masks[0] == 1)
        frames, point = list(clip.frames), (float(xs.mean()), float(ys.mean()))
    with tempfile.TemporaryDirectory(prefix="fastsam2_calib_") as calib:
        make_precision_dirs(Path(args.graphs), build_torch_backend(model), frames or str(BEDROOM),
                            [s for s in args.precisions.split(",") if s], Path(calib), point)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""J&F of the shipped synthetic model on the demo's candidate clips, to pick a representative one.

    python bench/demo_clip_seeds.py [--seeds 0 1 2 3 4 5 6 7] [--keeps 1.0 0.3] [--device cpu]

Each seed is ``make_clip(seed, split="train", frames=24, size=512)`` (the clip ``fastsam2 demo``
generates), every object prompted with its first-frame ground-truth box, tracked with the torch backend
as the demo tracks it; J&F as ``fastsam2 eval`` scores it (frames 1..T-2). The demo's clip is the
median seed by keep-1.0 J&F.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def _as_jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=quality)
    return np.asarray(Image.open(buf).convert("RGB"))


def main() -> None:
    from fastsam2.runtime.evaluation import evaluate_sequence
    from fastsam2.runtime.output import labels_from_masks
    from fastsam2.runtime.synth import JPEG_QUALITY, make_clip
    from fastsam2.tools.api import open_backend
    from fastsam2.runtime.tracker import SAM2Tracker
    from fastsam2.tools.demo import DEMO_FRAMES, DEMO_SIZE, DEMO_SPLIT, first_frame_boxes

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=list(range(8)))
    ap.add_argument("--keeps", type=float, nargs="+", default=[1.0, 0.3])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default=None, help="write the table as JSON here")
    args = ap.parse_args()
    backend = open_backend("torch", checkpoint="synthetic", device=args.device, quiet=True)
    rows = []
    for seed in args.seeds:
        clip = make_clip(seed, split=DEMO_SPLIT, frames=DEMO_FRAMES, size=DEMO_SIZE)
        prompts = first_frame_boxes(clip.masks[0])
        row = {"seed": seed, "objects": len(prompts)}
        for keep in args.keeps:
            tracker = SAM2Tracker.from_backend(backend, keep=keep)
            preds = []
            for t, raw in enumerate(clip.frames):
                frame = _as_jpeg(raw, JPEG_QUALITY)  # the demo tracks the clip's JPEG frames
                res = tracker.track(frame, prompts if t == 0 else None)
                preds.append(labels_from_masks(res.masks, shape=frame.shape[:2]))
            pred = np.stack(preds)
            ids = sorted(prompts)
            scores = evaluate_sequence({o: clip.masks == o for o in ids}, {o: pred == o for o in ids})
            row[f"jf_{keep:g}"] = round(float(np.mean([s.jf_mean for s in scores])), 3)
        rows.append(row)
        print(json.dumps(row), flush=True)
    key = f"jf_{args.keeps[0]:g}"
    ranked = sorted(rows, key=lambda r: r[key])
    print("median seed by", key, ":", ranked[(len(ranked) - 1) // 2]["seed"],
          " mean", round(float(np.mean([r[key] for r in rows])), 3))
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()

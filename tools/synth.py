"""``fastsam2 synth``: generated videos with exact ground truth, in the DAVIS layout ``fastsam2 eval``
reads.

    fastsam2 synth --out data/synth_hard --videos 50 --seed 1 --split hard

writes ``OUT/JPEGImages/<video>/00000.jpg ...`` (JPEG quality 95), ``OUT/Annotations/<video>/00000.png
...`` (indexed PNGs, DAVIS palette, pixel = object id; exact, not lossy), ``OUT/labels.json`` ({video:
{object id: "red star"}}) and ``OUT/meta.json`` (generator version and arguments). Videos are
``<split>_00000``, ``<split>_00001`` ...; a seed fixes every pixel. Splits: ``train`` and the held-out
``hard`` (more look-alike distractors, faster motion, more occlusion, longer clips). What is drawn:
docs/synthetic-data.md.
"""

from __future__ import annotations

import argparse
import time


def add_parser(sub) -> None:
    from fastsam2.runtime.args import bounded, non_negative_int, positive
    from fastsam2.runtime.synth import DEFAULT_FRAMES, MAX_SIZE, MIN_SIZE, SPLITS

    p = sub.add_parser("synth", help="generate videos of moving shapes with exact masks (DAVIS layout)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="output folder (written whole or not at all)")
    p.add_argument("--videos", type=positive(int), default=16, help="number of videos (default 16)")
    p.add_argument("--frames", type=bounded(int, low=3), default=None,
                   help="frames per video, >= 3 since eval scores frames 1..T-2 (default: "
                        + ", ".join(f"{k} {v}" for k, v in DEFAULT_FRAMES.items()) + ")")
    p.add_argument("--seed", type=non_negative_int, default=0, help="fixes every pixel (default 0)")
    p.add_argument("--split", choices=SPLITS, default="train", help="train (default) or the held-out hard split")
    p.add_argument("--size", type=bounded(int, low=MIN_SIZE, high=MAX_SIZE), default=512,
                   help="frame side in pixels, square (default 512)")
    p.add_argument("--overwrite", action="store_true", help="replace a previous fastsam2 output at --out")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fastsam2.runtime.synth import DEFAULT_FRAMES, write_dataset

    start = time.perf_counter()
    out = write_dataset(args.out, videos=args.videos, frames=args.frames, seed=args.seed, split=args.split,
                        size=args.size, overwrite=args.overwrite)
    seconds = time.perf_counter() - start
    frames = args.frames or DEFAULT_FRAMES[args.split]
    print(f"{out}: {args.videos} {args.split} videos x {frames} frames of {args.size}x{args.size} "
          f"(seed {args.seed}) in {seconds:.1f} s")
    return 0

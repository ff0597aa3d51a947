"""fastsam2 demo: export, then track unpruned and pruned side by side.

Without model options it runs the shipped ``synthetic`` model (a SAM2 trained by fastsam2 on generated
shapes) on a generated clip with exact ground truth: each annotated object is prompted with its
first-frame box, tracked at keep 1.0 and at ``--keep`` from one ONNX export, and scored (J&F). With
``--checkpoint``/``--config`` (a real SAM2) it tracks ``--video`` (default: the bundled sample clip)
with fixed prompts at ``--keep``, as ``fastsam2 track`` would.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from fastsam2.runtime.args import (MAX_IMAGE_SIZE, MIN_IMAGE_SIZE, finite_float, image_size, import_deferring_signals,
                                   non_negative_int, positive)
from fastsam2.runtime.config import CHECKPOINT_HELP, resolve_model
from fastsam2.runtime.errors import UsageError, out_of_memory_as_error
from fastsam2.runtime.outdir import atomic_output_dir, check_output_dir

from .cli import SAMPLE_CLIP, add_track_parser, export_in_subprocess, run_track, track_inputs, track_video

DEMO_MODEL = "synthetic"
# The demo clip: make_clip(DEMO_SEED, split="train", frames=DEMO_FRAMES, size=DEMO_SIZE). Of seeds
# 0..8 (bench/demo_clip_seeds.py, keep-1.0 J&F 0.10 to 0.94, mean 0.43) seed 8 is the median (0.32,
# three objects): typical of the model on 24 frames, neither its best clip nor a lost one.
DEMO_SEED = 8
DEMO_SPLIT = "train"
DEMO_FRAMES = 24
DEMO_SIZE = 512
SIDE_GAP = 8  # white columns between the two halves of the side-by-side frames
SAMPLE_PROMPTS = [("point", [480.0, 300.0]), ("box", [100.0, 100.0, 300.0, 400.0])]


def add_parser(sub) -> None:
    p = sub.add_parser(
        "demo",
        help=f"track a generated clip with the shipped {DEMO_MODEL!r} model, unpruned and pruned side by side "
             "(ONNX Runtime, no download); with --checkpoint/--config a real SAM2 on the sample clip",
        description=(
            f"Without --checkpoint and --config: the shipped {DEMO_MODEL!r} model (a SAM2 trained by fastsam2 on "
            f"generated shapes, not Meta's weights) on the generated clip make_clip({DEMO_SEED}, "
            f"split={DEMO_SPLIT!r}, frames={DEMO_FRAMES}, size={DEMO_SIZE}) of fastsam2.runtime.synth "
            "(--seed picks another), each object prompted with its first-frame ground-truth box, tracked at "
            "keep 1.0 and at --keep; writes OUT/keep_1/ and OUT/keep_<K>/ (masks, overlay, report), "
            "OUT/side_by_side.mp4 (JPEG frames in OUT/side_by_side/ without OpenCV), OUT/side_by_side.jpg, "
            "OUT/clip/ (the clip, DAVIS layout) and OUT/report.json, and prints J&F and ms/frame of both. "
            "With --checkpoint or --config: that model tracks --video (default: the bundled sample clip) with "
            "fixed prompts at --keep."
        ),
    )
    p.add_argument("--checkpoint", help=f"{CHECKPOINT_HELP.split('; default')[0]}; default: {DEMO_MODEL} "
                   "(random weights when only --config is given)")
    p.add_argument("--config", default=None, help="SAM2 config name or .yaml (default: the --checkpoint model's)")
    p.add_argument("--out", default="fastsam2_demo", help="output directory (default ./fastsam2_demo; replaced)")
    p.add_argument("--backend", choices=["ort", "torch"], default="ort",
                   help="ort: export ONNX graphs into OUT/graphs and run them (default); torch: no export")
    p.add_argument("--keep", type=finite_float, default=0.3,
                   help="router keep ratio of the pruned run (default 0.3; 1.0 = plain SAM2)")
    p.add_argument("--image-size", type=image_size, default=None,
                   help=f"model input size, a multiple of 64 in {MIN_IMAGE_SIZE}..{MAX_IMAGE_SIZE} "
                   "(default: the model's, 512 for synthetic, else 1024)")
    p.add_argument("--max-frames", type=positive(int), default=None)
    p.add_argument("--video", default=None,
                   help="frames to track (default: the generated clip for synthetic, else the bundled sample clip)")
    p.add_argument("--seed", type=non_negative_int, default=None, metavar="N",
                   help=f"seed of the generated clip (default {DEMO_SEED}; synthetic model without --video only)")
    p.add_argument("--threads", type=positive(int), default=None, metavar="N",
                   help="intra-op threads of torch / ONNX Runtime (default: the CPU cores idle right now)")
    p.set_defaults(func=run_demo)


def _track_args(args: argparse.Namespace, **over: Any) -> argparse.Namespace:
    """The ``fastsam2 track`` arguments the demo runs with: the track parser's defaults (so every
    option track reads is present), the demo's model options, the sample prompts and ``over``."""
    sub = argparse.ArgumentParser(add_help=False).add_subparsers()
    add_track_parser(sub)
    ns = sub.choices["track"].parse_args(["--video", str(args.video), "--out", str(args.out)])
    vars(ns).update(
        config=args.config, checkpoint=args.checkpoint, backend=args.backend, image_size=args.image_size,
        keep=args.keep, threads=args.threads, prompts=list(SAMPLE_PROMPTS), overwrite=True,
        max_frames=args.max_frames,
    )
    vars(ns).update(over)
    return ns


def _check_common(args: argparse.Namespace) -> None:
    if not 0.0 < args.keep <= 1.0:
        raise UsageError(f"--keep must be in (0, 1], got {args.keep:g}")
    resolve_model(args.config, args.checkpoint)
    if args.threads is not None:
        from fastsam2.runtime.threads import plan_threads

        plan_threads(args.threads)


def run_demo(args: argparse.Namespace) -> int:
    """The synthetic side-by-side demo (no model options), else export + track with the sample prompts."""
    synthetic = args.checkpoint in (None, DEMO_MODEL) and args.config in (None, DEMO_MODEL)
    if args.checkpoint is None and args.config is None:
        args.checkpoint = DEMO_MODEL
    if args.seed is not None and not (synthetic and args.video is None):
        raise UsageError("--seed picks the generated clip: it goes with the synthetic model and no --video")
    if synthetic and args.video is None:
        return run_synthetic_demo(args)
    if synthetic:
        print(f"fastsam2 demo: the {DEMO_MODEL!r} model was trained on generated shapes, not real scenes: "
              f"expect poor masks on {args.video}", file=sys.stderr)
    args.video = args.video or str(SAMPLE_CLIP)
    return run_prompted_demo(args)


def run_prompted_demo(args: argparse.Namespace) -> int:
    """fastsam2-export + fastsam2 track in one command, with the sample clip's prompts."""
    ns = _track_args(args)
    check_output_dir(args.out, overwrite=True, protect=track_inputs(ns))  # before the export
    if args.backend == "torch":
        return run_track(ns)
    _check_common(args)
    with tempfile.TemporaryDirectory(prefix="fastsam2_demo_graphs_") as tmp:
        graphs = _export(args, Path(tmp))
        # the graphs now fix the config, size and weights
        ns.graphs, ns.config, ns.image_size, ns.checkpoint = str(graphs), None, None, None
        code = run_track(ns, extra_dirs={"graphs": graphs})
        if args.checkpoint is None:
            print("fastsam2 demo: RANDOM weights (no --checkpoint): masks are meaningless, timings are real",
                  file=sys.stderr)
        return code


def _export(args: argparse.Namespace, scratch: Path) -> Path:
    graphs = scratch / "graphs"
    t0 = time.perf_counter()
    print(f"exporting {args.config or args.checkpoint or 'tiny'} to ONNX (in a separate process) ...", file=sys.stderr)
    export_in_subprocess(
        export_demo_graphs, args.config, args.checkpoint, args.image_size, str(graphs), args.threads,
        scratch=scratch,
    )
    print(f"exported in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return graphs


def export_demo_graphs(config: str | None, checkpoint: str | None, image_size: int | None, out: str,
                       threads: int | None) -> None:
    """The demo's export: ``config`` (random weights with the object-score bias +5 when no
    checkpoint, so that masks show) and the default router, to ``out``."""
    from fastsam2.runtime.metrics import mmap_large_allocations

    mmap_large_allocations()  # the trace's freed activations leave the process instead of staying resident
    try:
        import_deferring_signals("torch", "onnx", "sam2")
        import torch

        from fastsam2.export.models import build_sam2
        from fastsam2.export.onnx_export import export_graphs
        from fastsam2.export.router import TokenRouter
    except ImportError as e:
        raise UsageError(f"demo exports ONNX first and needs fastsam2[export]: {e}") from None
    from fastsam2.runtime.threads import plan_threads

    torch.set_num_threads(plan_threads(threads).threads)
    with out_of_memory_as_error(f"exporting {config or checkpoint!r} at image size {image_size or 'the default'}"):
        model = build_sam2(config, checkpoint, image_size=image_size,
                           object_score_bias=5.0 if checkpoint is None else None)
        router = TokenRouter.for_model(model)
        # the onnxscript clean-up is skipped: 10 s of the demo, and ONNX Runtime folds the same at start
        export_graphs(model, out, router_stage=router, validate=False, optimize=False)


# ------------------------------------------------------------------------------------------------
# the synthetic side-by-side demo
def keep_dir_name(keep: float) -> str:
    """``keep_1``, ``keep_0.3``: the folder of one keep ratio's run."""
    return f"keep_{keep:g}"


def first_frame_boxes(mask: np.ndarray) -> dict[int, Any]:
    """{object id: Prompt(box=(x0, y0, x1, y1))}: the pixel bounds of each object of ``mask`` (uint8
    HxW object ids, 0 background), x1/y1 exclusive."""
    from fastsam2.runtime.tracker import Prompt

    prompts = {}
    for oid in np.unique(mask):
        if oid == 0:
            continue
        ys, xs = np.nonzero(mask == oid)
        prompts[int(oid)] = Prompt(box=[float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)])
    return prompts


def side_by_side(left: np.ndarray, right: np.ndarray, left_text: str, right_text: str) -> np.ndarray:
    """Two uint8 HxWx3 RGB frames, each labelled on a band across its top, joined with a white
    gap: uint8 Hx(2W + SIDE_GAP)x3."""
    from fastsam2.runtime.output import stamp

    if left.shape != right.shape:
        raise ValueError(f"side by side needs equal frames, got {left.shape} and {right.shape}")
    gap = np.full((left.shape[0], SIDE_GAP, 3), 255, dtype=np.uint8)
    return np.concatenate([stamp(left, left_text), gap, stamp(right, right_text)], axis=1)


def write_side_by_side(out: Path, frames_dir: Path, masks: tuple[Path, Path], texts: tuple[str, str],
                       fps: float) -> tuple[Path, Path]:
    """Compose the overlays of two runs' ``masks`` folders over the frames of ``frames_dir`` into
    ``out/side_by_side.mp4`` (``out/side_by_side/`` JPEG frames without OpenCV) and the middle frame
    into ``out/side_by_side.jpg``; returns both paths."""
    from PIL import Image

    from fastsam2.runtime.evaluation import mask_files, read_object_ids
    from fastsam2.runtime.output import OVERLAY_VIDEO, OverlayFramesWriter, OverlayVideoWriter, overlay, overlay_name

    names = [p.stem for p in mask_files(masks[0])]
    video = out / "side_by_side.mp4" if overlay_name() == OVERLAY_VIDEO else out / "side_by_side"
    writer = OverlayVideoWriter(video, fps=fps) if video.suffix else OverlayFramesWriter(video)
    picture = out / "side_by_side.jpg"
    try:
        for i, name in enumerate(names):
            image = np.asarray(Image.open(frames_dir / f"{name}.jpg").convert("RGB"))
            halves = [overlay(image, read_object_ids(m / f"{name}.png")) for m in masks]
            frame = side_by_side(halves[0], halves[1], *texts)
            writer.write(frame)
            if i == len(names) // 2:
                Image.fromarray(frame).save(picture, quality=85)
    finally:
        writer.close()
    return video, picture


def _demo_clip(args: argparse.Namespace):
    from fastsam2.runtime.synth import make_clip

    seed = DEMO_SEED if args.seed is None else args.seed
    frames = DEMO_FRAMES if args.max_frames is None else min(DEMO_FRAMES, args.max_frames)
    if frames < 3:
        raise UsageError(f"--max-frames {args.max_frames}: J&F needs at least 3 frames (the first and last are "
                         "not scored)")
    clip = make_clip(seed, split=DEMO_SPLIT, frames=DEMO_FRAMES, size=DEMO_SIZE)
    # the first frames of the demo clip (a shorter make_clip is another clip: motion spans its length)
    return dataclasses.replace(clip, frames=clip.frames[:frames], masks=clip.masks[:frames])


def run_synthetic_demo(args: argparse.Namespace) -> int:
    """The shipped synthetic model on a generated clip, keep 1.0 and ``--keep`` from one backend."""
    from fastsam2.runtime.evaluation import evaluate_dirs
    from fastsam2.runtime.frames import open_frames
    from fastsam2.runtime.synth import write_clip

    _check_common(args)
    out = check_output_dir(args.out, overwrite=True, protect=[])
    clip = _demo_clip(args)
    prompts = first_frame_boxes(clip.masks[0])
    keeps = [1.0] if args.keep == 1.0 else [1.0, args.keep]
    with tempfile.TemporaryDirectory(prefix="fastsam2_demo_graphs_") as scratch:
        scratch = Path(scratch)
        clip_root = scratch / "clip"
        write_clip(clip, clip_root)
        frames_dir = clip_root / "JPEGImages" / clip.name
        gt_dir = clip_root / "Annotations" / clip.name
        ns = _track_args(args, video=str(frames_dir), checkpoint=DEMO_MODEL, config=None)
        if args.backend == "ort":
            graphs = _export(args, scratch)
            ns.graphs, ns.image_size, ns.checkpoint = str(graphs), None, None
        from .api import open_backend_from_args, tracker_from_args

        backend, info = open_backend_from_args(ns)
        runs: dict[float, dict] = {}
        with atomic_output_dir(out, overwrite=True, kind="demo") as tmp:
            for keep in keeps:
                tracker = tracker_from_args(backend, ns, keep)
                run_info = {**info, "keep_ratio": keep, "fill_hole_area": tracker.fill_hole_area}
                run_dir = tmp / keep_dir_name(keep)
                print(f"tracking {clip.name} ({len(clip.frames)} frames, {len(prompts)} objects) at keep {keep:g} "
                      f"with {args.backend}", file=sys.stderr)
                with open_frames(str(frames_dir)) as source, \
                        out_of_memory_as_error(f"tracking at image size {info['image_size']}"):
                    report = track_video(tracker, source, prompts, run_dir, ns, run_info)
                scores = evaluate_dirs(run_dir / "masks", gt_dir)
                runs[keep] = {"jf": scores.jf_mean, "j": scores.j_mean, "f": scores.f_mean,
                              "ms_per_frame": report["ms_per_frame_after_first"]["mean_ms"],
                              "kept_tokens_mean": report["kept_tokens_mean"]}
                (run_dir / "scores.json").write_text(scores.to_json() + "\n")
            texts = tuple(f"keep {k:g}{' (unpruned)' if k == 1.0 else ''}: J&F {runs[k]['jf']:.2f}, "
                          f"{runs[k]['ms_per_frame']:.0f} ms/frame" for k in (1.0, keeps[-1]))
            video, picture = write_side_by_side(
                tmp, frames_dir, (tmp / keep_dir_name(1.0) / "masks", tmp / keep_dir_name(keeps[-1]) / "masks"),
                texts, fps=ns.fps or 24.0)
            write_clip(clip, tmp / "clip")
            if args.backend == "ort":
                import shutil

                shutil.copytree(graphs, tmp / "graphs")
            summary = {
                "model": DEMO_MODEL, "backend": args.backend,
                "clip": {"generator": "fastsam2.runtime.synth.make_clip", "seed": DEMO_SEED if args.seed is None
                         else args.seed, "split": DEMO_SPLIT, "frames": len(clip.frames), "size": DEMO_SIZE,
                         "name": clip.name, "labels": {str(k): v for k, v in clip.labels.items()}},
                "prompts": {str(k): p.box for k, p in prompts.items()},
                "runs": {keep_dir_name(k): v for k, v in runs.items()},
                "side_by_side": [video.name, picture.name],
            }
            (tmp / "report.json").write_text(json.dumps(summary, indent=2) + "\n")
        backend.close()
    for keep, r in runs.items():
        print(f"keep {keep:<4g} J&F {r['jf']:.3f} (J {r['j']:.3f}, F {r['f']:.3f})  {r['ms_per_frame']:.0f} ms/frame "
              f"-> {out / keep_dir_name(keep)}")
    print(f"side by side: {out / video.name}, {out / picture.name}  (model {DEMO_MODEL!r}: trained by fastsam2 on "
          "generated shapes, not Meta's weights)")
    return 0

"""The fastsam2 command: track, demo, eval, label, bench, train-router, fit-text-projection, check-engines.

User errors end with one line on stderr and exit code 1; bugs keep their traceback. Output
directories are written under a temporary name and renamed when complete, so a failed run leaves
nothing half-written behind.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path
import numpy as np

import fastsam2.runtime

from fastsam2.runtime.args import (
    MAX_IMAGE_SIZE,
    MIN_IMAGE_SIZE,
    ArgumentParser,
    cli_main,
    finite_float,
    image_size,
    keep_ratios,
    name_list,
    non_negative_int,
    positive,
    signals_deferred,
)
from fastsam2.runtime.config import CHECKPOINT_HELP
from fastsam2.runtime.errors import UsageError, out_of_memory_as_error
from fastsam2.runtime.outdir import (
    atomic_output_dir,
    check_output_dir,
    check_output_file,
    check_resumable_dir,
    open_resumable_dir,
    write_text_atomic,
)

SAMPLE_CLIP = Path(fastsam2.runtime.__file__).resolve().parent / "data" / "sample"  # package data of the runtime


# ------------------------------------------------------------------------------------------------
# argument helpers
def parse_xy(text: str) -> list[float]:
    """Finite numbers separated by commas ("480,300", "480,300,0")."""
    try:
        vals = [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas, got {text!r}") from None
    if not all(np.isfinite(vals)):
        raise argparse.ArgumentTypeError(f"coordinates must be finite numbers, got {text!r}")
    return vals


class _PromptAction(argparse.Action):
    """--point / --box append (kind, values) to one ordered list, so each prompt keeps its order."""

    def __call__(self, parser, namespace, values, option_string=None):
        kind = "box" if option_string == "--box" else "point"
        want = (4,) if kind == "box" else (2, 3)
        if len(values) not in want:
            parser.error(
                f"{option_string} takes {'X0,Y0,X1,Y1' if kind == 'box' else 'X,Y[,LABEL]'}, got {values}"
            )
        if kind == "point" and len(values) == 3 and values[2] not in (0.0, 1.0):
            parser.error(f"{option_string}: the label is 1 (positive) or 0 (negative), got {values[2]:g}")
        getattr(namespace, "prompts").append((kind, values))


def add_job_args(p: argparse.ArgumentParser, *, out_help: str, required: bool) -> None:
    """--out/--overwrite of a run that commits one video at a time (eval --run, label), the model
    options and the Ray options."""
    from .distributed import add_ray_args

    p.add_argument("--out", required=required, default=None,
                   help=f"{out_help}; a rerun into the same --out skips finished videos")
    p.add_argument("--overwrite", action="store_true", help="start over: replace a previous output at --out")
    add_model_args(p)
    add_ray_args(p)


def add_model_args(p: argparse.ArgumentParser) -> None:
    from fastsam2.runtime.config import ModelConfig  # noqa: F401  (keeps the runtime import light)

    p.add_argument("--config", default=None, help="SAM2 config: tiny, small, base_plus, large "
                   "(SAM 2.1; aliases sam2.1-tiny ...), sam2.0-tiny ..., or a sam2 config .yaml "
                   "(default: tiny, or the --checkpoint model's; with ort/trt: the export's)")
    p.add_argument("--checkpoint", help=CHECKPOINT_HELP)
    p.add_argument("--backend", choices=["torch", "ort", "trt"], default="torch",
                   help="torch (needs fastsam2[export]); ort/trt run exported graphs/engines")
    p.add_argument("--graphs", help="directory written by fastsam2-export (for --backend ort/trt)")
    p.add_argument("--device", default=None, help="cpu (default), cuda or cuda:N: torch's device for --backend torch; "
                   "with --backend ort, cuda runs ONNX Runtime's CUDA provider (onnxruntime-gpu)")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32",
                   help="torch autocast dtype on CUDA (default float32)")
    p.add_argument("--image-size", type=image_size, default=None,
                   help=f"model input size, a multiple of 64 in {MIN_IMAGE_SIZE}..{MAX_IMAGE_SIZE} "
                        "(default: the config's 1024; with ort/trt: the export's)")
    p.add_argument("--fill-hole-area", type=non_negative_int, default=None, metavar="N",
                   help="fill mask holes up to N pixels (default: SAM2VideoPredictor's 8; 0 = as the official "
                   "predictor without its CUDA extension, i.e. as pip installs it on CPU)")
    p.add_argument("--keep", type=finite_float, default=1.0, help="keep ratio of the token router (1.0 = SAM2, no pruning)")
    p.add_argument("--text", default=None, help="text description of the object(s) for the router")
    p.add_argument("--texts", default=None, help="text embeddings .npz from `fastsam2-export text`")
    p.add_argument("--router", default=None, help="router weights .safetensors (default: built-in heuristic weights)")
    p.add_argument("--selector", choices=["router", "random", "grid"], default="router",
                   help="how pruned frames pick their tokens: the router (default), uniformly at random "
                   "(seeded by --selector-seed) or a uniform grid; the last two are baselines for the router")
    p.add_argument("--selector-seed", type=non_negative_int, default=0, metavar="N",
                   help="seed of --selector random (default 0)")
    p.add_argument("--precision", choices=["fp32", "int8", "fp16", "fp8"], default="fp32",
                   help="--backend ort: the graphs to run: fp32 (default), int8 (the export's int8/ graphs, "
                   "made by fastsam2.calibration.ort_quant), fp16 or fp8 (its fp16/, fp8/ graphs, made by "
                   "fastsam2.export.trt.precision.write_precision_dir; FP8 is emulated on the CPU); "
                   "--backend torch: fp8 runs the linear layers of Hiera's last two stages as FP8 scaled "
                   "matmuls (Hopper/Ada GPUs; the CPU computes the same E4M3 arithmetic)"),
    add_encoder_region_args(p)
    p.add_argument("--threads", type=positive(int), default=None, metavar="N",
                   help="intra-op threads of torch / ONNX Runtime (default: the CPU cores idle right now)")


def add_encoder_region_args(p: argparse.ArgumentParser) -> None:
    """--encoder-region / --encoder-refresh / --encoder-lag (TrackerOptions.encoder_region /
    encoder_refresh / encoder_lag)."""
    p.add_argument("--encoder-region", type=non_negative_int, default=None, metavar="M",
                   help="encode each frame only on the rectangle around the objects' previous masks, grown by M "
                   "of the encoder's window units, reusing the previous frame's features elsewhere (an "
                   "approximation; default: every frame whole, as SAM2); ort/trt: graphs exported with "
                   "fastsam2-export --encoder-region")
    p.add_argument("--encoder-refresh", type=non_negative_int, default=0, metavar="N",
                   help="with --encoder-region: encode a frame whole every N frames (default 0: only prompted "
                   "frames and frames after a lost object)")
    p.add_argument("--encoder-lag", type=non_negative_int, default=0, metavar="N",
                   help="with --encoder-region: the rectangle follows the masks N frames before the last one "
                   "(default 0: the last frame's); 1 lets a GPU issue a step while the one before computes "
                   "(another approximation)")


def check_encoder_region_args(args: argparse.Namespace) -> None:
    """Refuse --encoder-region on graphs exported without the region graphs, and --encoder-refresh
    or --encoder-lag without --encoder-region."""
    if args.encoder_region is not None and args.backend != "torch" and getattr(args, "graphs", None):
        from fastsam2.runtime.manifest import Manifest
        from fastsam2.runtime.specs import REGION_GRAPHS

        if not all(g in Manifest.read(args.graphs).graphs for g in REGION_GRAPHS):
            raise UsageError(f"--encoder-region: {args.graphs} holds no encoder-region graphs "
                             "(export them with fastsam2-export --encoder-region)")
    if args.encoder_refresh and args.encoder_region is None:
        raise UsageError("--encoder-refresh sets how often --encoder-region encodes a whole frame: add --encoder-region")
    if getattr(args, "encoder_lag", 0) and args.encoder_region is None:
        raise UsageError("--encoder-lag sets which masks --encoder-region follows: add --encoder-region")


def check_model_args(args: argparse.Namespace) -> None:
    """Refuse contradictory or impossible model options before anything heavy is built."""
    from fastsam2.runtime.threads import plan_threads

    from .api import check_backend_options

    if not 0.0 < args.keep <= 1.0:
        raise UsageError(f"--keep must be in (0, 1], got {args.keep:g}")
    if getattr(args, "threads", None) is not None:
        plan_threads(args.threads)  # refuses more threads than cores now, not after the model is built
    if getattr(args, "selector_seed", 0) and getattr(args, "selector", "router") != "random":
        raise UsageError(f"--selector-seed seeds --selector random; --selector {args.selector} draws no random tokens")
    if getattr(args, "selector", "router") != "router" and args.keep >= 1.0:
        raise UsageError(f"--selector {args.selector} picks the tokens a pruned frame keeps: "
                         "give a keep ratio below 1 (at 1.0 every token is kept)")
    if getattr(args, "selector", "router") != "router" and (args.text or args.router or args.texts):
        raise UsageError(f"--text, --texts and --router configure the router; --selector {args.selector} uses none")
    if args.texts and not Path(args.texts).is_file():
        raise UsageError(f"--texts: file not found: {args.texts}")
    if args.text is not None and not args.texts:
        raise UsageError("--text needs --texts FILE.npz (precompute with: fastsam2-export text ...)")
    if getattr(args, "texts", None):
        from fastsam2.runtime.text_embeddings import load_text_embeddings

        load_text_embeddings(args.texts)  # a damaged file fails now, not after the model is built
    check_encoder_region_args(args)
    precision = getattr(args, "precision", "fp32")
    if precision not in ("fp32", "fp8") and args.backend != "ort":
        raise UsageError(f"--precision {precision} selects exported ONNX graphs: it needs --backend ort")
    if precision == "fp8" and args.backend == "trt":
        raise UsageError("--precision fp8 on TensorRT is built into the engines: fastsam2-export --trt --fp8")
    check_backend_options(args.backend, args.graphs, checkpoint=args.checkpoint, config=args.config,
                          device=args.device, dtype=args.dtype, router=args.router)


def build_tracker(args: argparse.Namespace, *, quiet: bool = False):
    """A SAM2Tracker for the backend the arguments name, plus a description for reports."""
    from .api import open_backend_from_args, tracker_from_args

    backend, info = open_backend_from_args(args, quiet=quiet)
    tracker = tracker_from_args(backend, args, args.keep)
    info["keep_ratio"] = args.keep
    if args.keep < 1.0:
        info["selector"] = getattr(args, "selector", "router")
    info["fill_hole_area"] = tracker.fill_hole_area
    if tracker.options.encoder_region is not None:
        info["encoder_region"] = tracker.options.encoder_region
        info["encoder_refresh"] = tracker.options.encoder_refresh
        info["encoder_lag"] = tracker.options.encoder_lag
    return tracker, info


def prompts_from_args(args: argparse.Namespace):
    """{obj_id: Prompt} from the ordered --point/--box list and --obj-id list."""
    from fastsam2.runtime.tracker import Prompt

    if not args.prompts:
        raise UsageError("give at least one --point X,Y or --box X0,Y0,X1,Y1")
    ids = args.obj_id or list(range(1, len(args.prompts) + 1))
    if len(ids) != len(args.prompts):
        raise UsageError(f"{len(args.prompts)} prompts but {len(ids)} --obj-id values (give one per prompt, or none)")
    for oid in ids:
        if not 1 <= oid <= 255:
            raise UsageError(f"--obj-id must be in 1..255 (it is the mask PNG's pixel value), got {oid}")
    per_obj: dict[int, dict] = {}
    for oid, (kind, vals) in zip(ids, args.prompts):
        p = per_obj.setdefault(oid, {"points": [], "labels": [], "box": None})
        if kind == "box":
            if p["box"] is not None:
                raise UsageError(f"object {oid} has two boxes; give one box per object")
            p["box"] = vals
        else:
            label = int(vals[2]) if len(vals) == 3 else 1
            if label not in (0, 1):
                raise UsageError(f"point label must be 1 (positive) or 0 (negative), got {label}")
            p["points"].append(vals[:2])
            p["labels"].append(label)
    return {
        oid: Prompt(points=p["points"] or None, labels=p["labels"] or None, box=p["box"])
        for oid, p in per_obj.items()
    }


# ------------------------------------------------------------------------------------------------
# track
def add_track_parser(sub) -> None:
    p = sub.add_parser("track", help="track objects through a video, write masks, overlay and report")
    add_model_args(p)
    p.add_argument("--video", required=True, help="folder of JPEG/PNG frames, video file, camera index or stream URL")
    p.add_argument("--point", dest="prompts", action=_PromptAction, type=parse_xy, default=[],
                   metavar="X,Y[,LABEL]", help="a click on the first frame (label 1 positive, 0 negative)")
    p.add_argument("--box", dest="prompts", action=_PromptAction, type=parse_xy, metavar="X0,Y0,X1,Y1",
                   help="a box on the first frame")
    p.add_argument("--obj-id", type=int, action="append", help="object id of each prompt, in order (default 1, 2, ...)")
    p.add_argument("--out", required=True, help="output directory (masks/, overlay.mp4 — without OpenCV overlay/ JPEG frames —, report.json)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    p.add_argument("--max-frames", type=positive(int), default=None, help="stop after this many frames")
    p.add_argument("--on-bad-frame", choices=["stop", "skip"], default="stop",
                   help="an unreadable frame: stop with an error (default) or skip it with a warning")
    p.add_argument("--no-overlay", action="store_true", help="do not write the overlay")
    p.add_argument("--fps", type=positive(float), default=None, help="overlay frame rate (default: the video's, else 24)")
    p.set_defaults(func=run_track)


def track_inputs(args: argparse.Namespace) -> list:
    """The paths a track run reads: --overwrite may never remove a directory holding one of them."""
    return [args.video, args.graphs, args.checkpoint, args.texts, args.router]


def run_track(args: argparse.Namespace, *, extra_dirs: dict[str, Path] | None = None) -> int:
    """``extra_dirs``: {name: folder} copied into the output directory before it is published."""
    from fastsam2.runtime.frames import open_frames

    prompts = prompts_from_args(args)
    if args.no_overlay and args.fps is not None:
        raise UsageError("--fps is the overlay's frame rate; --no-overlay writes none")
    out_dir = check_output_dir(args.out, overwrite=args.overwrite, protect=track_inputs(args))
    check_model_args(args)
    source = open_frames(args.video, on_bad_frame=args.on_bad_frame)
    with source:
        h, w = source.height, source.width
        for oid, pr in prompts.items():  # fail before any model is built
            coords = list(pr.points or []) + ([pr.box[:2], pr.box[2:]] if pr.box else [])
            for x, y in coords:
                if not (0 <= x <= w and 0 <= y <= h):
                    raise UsageError(f"object {oid}: point ({x:g}, {y:g}) is outside the {w}x{h} frame")
        if not args.no_overlay:
            from fastsam2.runtime.output import OVERLAY_FRAMES, overlay_name

            if overlay_name() == OVERLAY_FRAMES:
                print(f"fastsam2: no OpenCV: the overlay is written as JPEG frames in {out_dir / OVERLAY_FRAMES} "
                      "(pip install fastsam2[video] for overlay.mp4)", file=sys.stderr)
        tracker, info = build_tracker(args)
        with out_of_memory_as_error(f"tracking at image size {info['image_size']}"):
            report = track_video(tracker, source, prompts, out_dir, args, info, extra_dirs=extra_dirs)
    print(f"wrote {report['frames']} frame{'s' if report['frames'] != 1 else ''} to {out_dir} "
          f"({report['ms_per_frame']['mean_ms']:.0f} ms/frame, backend {info['backend']})", file=sys.stderr)
    return 0


def track_video(tracker, source, prompts, out_dir: Path, args, info: dict, *,
                extra_dirs: dict[str, Path] | None = None) -> dict:
    """Run the streaming tracker over ``source``; write masks, overlay and report atomically."""
    from tqdm import tqdm

    from fastsam2.runtime.metrics import peak_rss_mb, rss_mb, summarize_ms
    from fastsam2.runtime.output import labels_from_masks, open_overlay_writer, save_indexed_png

    frame_ms: list[float] = []
    rss: list[tuple[int, float]] = []
    kept: list[int] = []
    total = source.num_frames
    if args.max_frames is not None:
        total = args.max_frames if total is None else min(total, args.max_frames)
    fps = args.fps or getattr(source, "fps", None) or 24.0
    with atomic_output_dir(out_dir, overwrite=args.overwrite, kind="track", protect=track_inputs(args)) as tmp:
        (tmp / "masks").mkdir()
        random = info.get("weights") == "random-init"
        banner = "fastsam2: RANDOM weights - masks are meaningless" if random else None
        writer = None if args.no_overlay else open_overlay_writer(tmp, fps, banner=banner)
        try:
            bar = tqdm(total=total, unit="frame", desc="track", file=sys.stderr, disable=None)
            n = 0
            for frame in source:
                if args.max_frames is not None and n >= args.max_frames:
                    break
                t0 = time.perf_counter()
                res = tracker.track(frame.image, prompts if n == 0 else None)
                frame_ms.append((time.perf_counter() - t0) * 1e3)
                kept.extend(k for k in res.kept_tokens.values() if k > 0)  # 0: prompted frame
                labels = labels_from_masks(res.masks, shape=frame.image.shape[:2])
                save_indexed_png(tmp / "masks" / f"{frame.name}.png", labels)
                if writer is not None:
                    writer.write(frame.image, labels)
                if n % 10 == 0:
                    rss.append((n, round(rss_mb(), 1)))
                n += 1
                bar.update(1)
            bar.close()
        finally:
            if writer is not None:
                writer.close()
        if n == 0:
            raise UsageError(f"no frames could be read from {args.video}")
        rss.append((n - 1, round(rss_mb(), 1)))
        times = tracker.times
        warm = frame_ms[1:] if len(frame_ms) > 1 else frame_ms
        report = {
            **info,
            "video": {"source": str(args.video), "width": source.width, "height": source.height},
            "frames": n,
            "skipped_frames": list(source.skipped),
            "objects": sorted(prompts),
            "ms_per_frame": summarize_ms(frame_ms),
            "ms_per_frame_after_first": summarize_ms(warm),
            "fps": 1e3 / float(np.mean(warm)) if warm else 0.0,
            "per_stage_ms_per_frame": {k: v / n for k, v in sorted(times.ms.items())},
            "stage_calls": dict(sorted(times.calls.items())),
            "kept_tokens_mean": float(np.mean(kept)) if kept else None,
            "memory_bank_bytes": tracker.memory_bytes(tracker.stream_state),
            "encoder_share": tracker.stream_state.encoder_share,
            "rss_mb": rss,
            "peak_rss_mb": round(peak_rss_mb(), 1),
            "overlay": None if writer is None else writer.path.name,
        }
        (tmp / "report.json").write_text(json.dumps(report, indent=2) + "\n")
        for name, folder in (extra_dirs or {}).items():
            shutil.copytree(folder, tmp / name)
    return report


# ------------------------------------------------------------------------------------------------
# an export in its own process (demo)
def export_in_subprocess(fn, *args, scratch: Path | None = None) -> None:
    """``fn(*args)`` in a fresh (spawned) process: torch, the traced model and the export's buffers
    (the command's peak memory, a third of it torch's import) leave with it, so the
    process that tracks afterwards holds ONNX Runtime only. A user error raised there is raised
    here; a process that dies (out of memory, a signal) is one line.

    The child never outlives this process: interrupted or terminated here, it is terminated and
    waited for (its export unwinds and removes its scratch) before this process goes on unwinding; if
    this process is killed outright, the child gets SIGTERM from the kernel and removes ``scratch``."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    receive, send = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_child_call, args=(os.getpid(), send, fn, args, scratch), daemon=True)
    try:
        with signals_deferred():  # a child cut off while it is handed its work dies with a traceback
            child.start()
        send.close()
        try:
            outcome = receive.recv()
        except EOFError:  # the child ended without an answer
            outcome = None
            child.join()
            if child.exitcode == 1:
                raise RuntimeError("the export process failed (its traceback is above)") from None
            raise UsageError("the export process died (out of memory or killed); nothing was written") from None
        child.join()
    except BaseException:
        if child.pid is not None:
            child.terminate()
            child.join()
        raise
    finally:
        send.close()
        receive.close()
    if outcome is not None:
        raise outcome


def _child_call(parent: int, conn, fn, args: tuple, scratch: Path | None) -> None:
    """The child's side of :func:`export_in_subprocess`: ``fn(*args)``, then None or the user error
    sent back. Terminated (by the parent, or by the kernel when the parent died) it unwinds quietly.
    Whenever it ends with the parent gone (killed mid-export, or the death signal swallowed by code
    that ignores exceptions and the export finished into a closed pipe), it removes ``scratch``
    itself, since the parent cannot."""
    import signal
    import sys

    from fastsam2.runtime.args import die_with_parent
    from fastsam2.runtime.errors import UserError

    try:
        try:
            die_with_parent(parent)
            fn(*args)
            outcome = None
        except UserError as e:
            outcome = e
        conn.send(outcome)
        conn.close()
    except KeyboardInterrupt:
        sys.exit(143)
    except OSError:  # the answer found the pipe closed: the parent is gone, nobody reads a traceback
        if os.getppid() == parent:
            raise
        sys.exit(143)
    finally:
        if scratch is not None and os.getppid() != parent:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the clean-up is not cut short
            shutil.rmtree(scratch, ignore_errors=True)


# ------------------------------------------------------------------------------------------------
# eval
def add_eval_parser(sub) -> None:
    p = sub.add_parser(
        "eval",
        help="DAVIS 2017 J&F of predicted masks (--pred/--gt), or run the tracker on a dataset (--run)",
    )
    p.add_argument("--pred", help="predicted masks (DAVIS layout, or one sequence's masks/)")
    p.add_argument("--gt", help="ground truth (DAVIS root, Annotations/480p, or one sequence)")
    p.add_argument("--sequences", nargs="*", default=None)
    p.add_argument("--json", default=None, help="write the full report as JSON here")
    p.add_argument("--run", action="store_true",
                   help="track --dataset with first-frame masks as prompts at each --keeps ratio, then evaluate")
    p.add_argument("--dataset", help="DAVIS-layout root (JPEGImages/480p, Annotations/480p) for --run")
    p.add_argument("--keeps", type=keep_ratios, default=None,
                   help="keep ratios for --run (default 1.0,0.5,0.3) and --sweep (default 1,0.7,0.5,0.3,0.2,0.1)")
    from .sweep import BACKENDS, SELECTORS

    sweep = p.add_argument_group("--sweep: J&F and ms/frame for every keep ratio x token selector x backend")
    sweep.add_argument("--sweep", metavar="DATASET", default=None,
                       help="DAVIS-layout dataset to sweep; writes sweep.json, sweep.md and sweep.png into --out")
    sweep.add_argument("--selectors", type=name_list(SELECTORS), default="builtin,random,grid",
                       help=f"token selectors, from {','.join(SELECTORS)} (default builtin,random,grid; "
                       "trained and text need --router, text also --texts and the dataset's labels.json)")
    sweep.add_argument("--backends", type=name_list(BACKENDS), default="torch,ort",
                       help=f"backends and precisions, from {','.join(BACKENDS)} (default torch,ort)")
    sweep.add_argument("--labels", default=None,
                       help='the text cue\'s {"<seq>/<obj_id>": "text"} (default DATASET/labels.json)')
    sweep.add_argument("--calib", default=None, metavar="FRAMES_DIR",
                       help="frames to calibrate ort-int8 on (default: the dataset's first sequence)")
    add_job_args(p, out_help="where --run writes its masks (default: a temp dir)", required=False)
    scoring = {"help", "pred", "gt", "sequences", "json", "run", "sweep"}
    # scoring --pred against --gt runs no model: every other option given there would be ignored
    p.set_defaults(func=run_eval, run_only=[
        (a.option_strings[-1], a.dest, a.type(a.default) if isinstance(a.default, str) and a.type else a.default)
        for a in p._actions if a.option_strings and a.dest not in scoring])


def run_eval(args: argparse.Namespace) -> int:
    from fastsam2.runtime.evaluation import evaluate_dirs, format_table

    if args.json:
        check_output_file(args.json, protect=[args.pred, args.gt, args.dataset, args.graphs, args.checkpoint,
                                              args.texts, args.router])
    if args.sweep:
        from .sweep import run_sweep

        if args.json:
            raise UsageError("--json does not apply to --sweep: its report is --out/sweep.json")
        return run_sweep(args)
    if args.run:
        return run_eval_tracking(args)
    if not args.pred or not args.gt:
        raise UsageError("eval needs --pred DIR and --gt DIR (or --run --dataset DIR)")
    for flag, dest, default in args.run_only:
        if getattr(args, dest) != default:
            raise UsageError(f"{flag} applies to --run and --sweep; scoring --pred against --gt runs no model")
    report = evaluate_dirs(args.pred, args.gt, args.sequences)
    print(format_table(report))
    if args.json:
        write_text_atomic(args.json, report.to_json() + "\n")
    return 0


def run_eval_tracking(args: argparse.Namespace) -> int:
    import tempfile

    from .eval_run import dataset_jobs, format_results, results_json, run_dataset

    if not args.dataset:
        raise UsageError("eval --run needs --dataset DIR (DAVIS layout)")
    from .distributed import make_executor
    from .video_jobs import format_totals, format_videos, started

    keeps = args.keeps or [1.0, 0.5, 0.3]
    args.keep = min(keeps)  # for the checks: the most pruned run
    check_model_args(args)
    args.keep = 1.0
    executor = make_executor(args)  # in-process, or Ray actors with --ray (refused now if Ray is missing)
    protect = [args.dataset, args.graphs, args.checkpoint, args.texts, args.router]
    if args.out is not None:  # each video is committed on its own: an earlier --out is resumed
        out = check_resumable_dir(args.out, overwrite=args.overwrite, protect=protect)
    else:
        out = Path(tempfile.mkdtemp(prefix="fastsam2_eval_"))
    try:
        jobs = dataset_jobs(args, Path(args.dataset), keeps, out, args.sequences)  # checks the dataset first
    except BaseException:
        if args.out is None:
            shutil.rmtree(out, ignore_errors=True)
        raise
    open_resumable_dir(out, kind="eval-run", overwrite=args.overwrite)
    with started(executor, out) as info:
        results, videos, totals = run_dataset(executor, jobs, keeps, out)
    print(format_videos(videos))
    print(format_totals(totals))
    print(format_results(results))
    print(f"masks, per-video video.json and per-keep eval.json under {out}", file=sys.stderr)
    if args.json:
        write_text_atomic(args.json, results_json(results, info, videos, totals) + "\n")
    return 0


# ------------------------------------------------------------------------------------------------
# Subcommands living in other modules: each module exposes ``add_parser(subparsers)`` and imports its
# heavy dependencies only when run, so every command is listed even where an extra is missing.
PLUGIN_COMMANDS = (
    "fastsam2.tools.demo",  # fastsam2 demo
    "fastsam2.tools.bench",  # fastsam2 bench
    "fastsam2.tools.train_router",  # fastsam2 train-router, fit-text-projection
    "fastsam2.tools.check_engines",  # fastsam2 check-engines
    "fastsam2.tools.label",  # fastsam2 label
    "fastsam2.tools.synth",  # fastsam2 synth
)


def build_parser() -> argparse.ArgumentParser:
    import importlib

    parser = ArgumentParser(prog="fastsam2", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    add_track_parser(sub)
    add_eval_parser(sub)
    for name in PLUGIN_COMMANDS:
        importlib.import_module(name).add_parser(sub)
    # the description names every registered command, plugins included
    parser.description = f"SAM2 video tracking with token pruning. Commands: {', '.join(sub.choices)}."
    return parser


def main(argv: list[str] | None = None) -> int:
    return cli_main("fastsam2", build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())

"""``fastsam2 eval --sweep DATASET``: J&F and ms/frame for every keep ratio x token selector x backend.

Each cell is an ``eval --run`` (tools/eval_run.py): every object's first-frame ground-truth mask is
its prompt, the tracker runs through each sequence, J and F follow DAVIS 2017
(runtime/evaluation.py), and every video is committed on its own under
``OUT/cells/<backend>/<selector>/keep_<r>/<seq>/``, so an interrupted sweep resumes where it stopped.
Keep 1.0 keeps every token, so it does not depend on the selector: it runs once per backend
(``OUT/cells/<backend>/all-tokens/``) and starts every selector's curve.

Selectors (how a pruned frame picks its tokens):

* ``builtin``: the router with its built-in hand-set weights;
* ``trained``: the router with ``--router FILE`` (``fastsam2 train-router``), no text cue;
* ``text``: the router of ``--router FILE`` plus each object's text cue: its label in the dataset's
  ``labels.json`` embedded by ``--texts FILE.npz`` (``fastsam2-export text``) and projected by the
  router file's text projection (``fastsam2 fit-text-projection``); the report names the text encoder
  and says when its weights are random (then the cue is meaningless);
* ``random``: K tokens drawn at random (seeded per object and frame by ``--selector-seed``);
* ``grid``: K tokens on a uniform grid (runtime/router.py ``GridSelector``).

Backends: ``torch`` (the sam2 modules, fp32), ``torch-fp8`` (the same with the linear layers of
Hiera's last two stages as FP8 scaled matmuls, ``fastsam2.export.fp8``), ``ort`` (ONNX Runtime, fp32 graphs), ``ort-int8``
(ONNX Runtime's static INT8 of the four SAM2 graphs, calibrated on feeds recorded by the torch
tracker on ``--calib`` frames; the router stays fp32) and ``ort-fp16`` (the mixed-precision graphs the
TensorRT fp16 engines are built from, router included, run by ONNX Runtime). The graphs are exported from the same
``--checkpoint`` into ``OUT/graphs/`` (once; a resumed sweep reuses them).

Outputs (each written atomically): ``sweep.json`` (every cell: J, F, J&F mean and per video,
ms/frame, how it was made), ``sweep.md`` (the table) and ``sweep.png`` (J&F against ms/frame, one
panel per backend, one curve per selector; drawn with PIL).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from fastsam2.runtime.errors import UsageError

SELECTORS = ("builtin", "trained", "text", "random", "grid")
BACKENDS = ("torch", "torch-fp8", "ort", "ort-int8", "ort-fp16")
DEFAULT_KEEPS = (1.0, 0.7, 0.5, 0.3, 0.2, 0.1)
ALL_TOKENS = "all-tokens"  # the keep 1.0 cell of a backend (no token is dropped: no selector)
# selector -> (runtime.router selector, router group: which router weights the graphs hold)
_RUNTIME = {"builtin": ("router", "builtin"), "trained": ("router", "trained"), "text": ("router", "trained"),
            "random": ("random", "builtin"), "grid": ("grid", "builtin")}
# backend -> (fastsam2 --backend, --precision)
_BACKEND = {"torch": ("torch", "fp32"), "torch-fp8": ("torch", "fp8"), "ort": ("ort", "fp32"),
            "ort-int8": ("ort", "int8"), "ort-fp16": ("ort", "fp16")}
SWEEP_ARGS = "sweep_args.json"
CALIB_FRAMES = 8


@dataclass
class Cell:
    """One (backend, selector, keep) of the sweep; ``videos``: [{name, j_mean, f_mean, jf_mean,
    frames, ms_per_frame}] in dataset order."""

    backend: str
    selector: str
    keep: float
    j_mean: float
    f_mean: float
    jf_mean: float
    frames: int
    ms_per_frame: float
    videos: list[dict] = field(default_factory=list)
    made: dict = field(default_factory=dict)


# ------------------------------------------------------------------------------------------------
# checks, before anything heavy
def _need(module: str, backend: str, what: str) -> None:
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise UsageError(f"--backends {backend} needs {what} ({module} is not installed): install it or "
                         f"drop {backend} from --backends")


def check_backends(backends: list[str]) -> None:
    """Refuse, in one line, a backend whose packages are missing here (never skipped silently)."""
    for b in backends:
        _need("torch", b, "torch and sam2 (pip install fastsam2[export]) to build or export the model")
        _need("sam2", b, "sam2 (pip install fastsam2[export])")
        if b.startswith("ort"):
            _need("onnxruntime", b, "ONNX Runtime (pip install onnxruntime)")
            _need("onnx", b, "onnx (pip install fastsam2[export])")
        if b == "ort-int8":
            _need("onnxruntime.quantization", b, "ONNX Runtime's quantization tools")


def check_args(args: argparse.Namespace) -> dict[str, str] | None:
    """Refuse contradictory or impossible sweep options; returns the labels the text cue needs."""
    from fastsam2.runtime.evaluation import davis_layout

    for flag, given in (("--graphs", args.graphs), ("--dataset", args.dataset), ("--pred", args.pred),
                        ("--gt", args.gt), ("--run", args.run), ("--text", args.text)):
        if given:
            raise UsageError(f"{flag} does not apply to --sweep (the sweep exports its own graphs from "
                             "--checkpoint and reads the dataset given to --sweep)")
    for flag, value, default, instead in (("--selector", args.selector, "router", "--selectors"),
                                          ("--precision", args.precision, "fp32", "--backends"),
                                          ("--backend", args.backend, "torch", "--backends"),
                                          ("--keep", args.keep, 1.0, "--keeps")):
        if value != default:
            raise UsageError(f"{flag} picks one value; the sweep takes a list: use {instead}")
    if args.out is None:
        raise UsageError("eval --sweep needs --out DIR (sweep.json, sweep.md, sweep.png and every cell's masks)")
    davis_layout(Path(args.sweep))
    from fastsam2.runtime.config import resolve_model

    resolve_model(args.config, args.checkpoint)  # every backend is built or exported from it
    selectors = args.selectors
    if ("trained" in selectors or "text" in selectors) and not args.router:
        which = "trained" if "trained" in selectors else "text"
        raise UsageError(f"--selectors {which} needs --router FILE (router weights from fastsam2 train-router"
                         f"{'' if which == 'trained' else ' with a text projection from fastsam2 fit-text-projection'})")
    if args.router and not ("trained" in selectors or "text" in selectors):
        raise UsageError("--router is the trained router: add trained (or text) to --selectors")
    if args.router and not Path(args.router).is_file():
        raise UsageError(f"--router: file not found: {args.router}")
    labels = None
    if "text" in selectors:
        from fastsam2.runtime.router import read_router_file

        from .train_router import read_json_labels, read_texts

        label_file = Path(args.labels) if args.labels else Path(args.sweep) / "labels.json"
        if not label_file.is_file():
            raise UsageError(f"--selectors text needs the objects' labels: {label_file} not found (give --labels FILE)")
        if not args.texts:
            raise UsageError("--selectors text needs --texts FILE.npz holding every label "
                             "(fastsam2-export text --labels ... -o FILE.npz)")
        labels = read_json_labels(label_file)
        read_texts(args.texts, labels)
        if read_router_file(args.router).text_proj_weight is None:
            raise UsageError(f"--selectors text: {args.router} has no text projection "
                             "(fit one with fastsam2 fit-text-projection --router ...)")
    elif args.texts or args.labels:
        raise UsageError("--texts and --labels are the text cue's: add text to --selectors")
    if args.calib and not any(b == "ort-int8" for b in args.backends):
        raise UsageError("--calib is for the INT8 calibration: add ort-int8 to --backends")
    check_backends(args.backends)
    return labels


def _model_key(args: argparse.Namespace) -> dict:
    """What the exported graphs and every cell depend on: a resumed sweep must have the same."""
    from fastsam2.runtime.manifest import file_sha256

    return {"config": args.config, "checkpoint": args.checkpoint, "image_size": args.image_size,
            "router_sha256": file_sha256(args.router) if args.router else None,
            "calib": args.calib, "fill_hole_area": args.fill_hole_area}


def _check_resume(out: Path, key: dict) -> None:
    from fastsam2.runtime.outdir import write_text_atomic

    path = out / SWEEP_ARGS
    if path.is_file():
        before = json.loads(path.read_text())
        diff = sorted(k for k in set(before) | set(key) if before.get(k) != key.get(k))
        if diff:
            raise UsageError(f"{out} holds a sweep made with other settings ({', '.join(diff)} differ): "
                             "choose another --out or add --overwrite")
    else:
        write_text_atomic(path, json.dumps(key, indent=2) + "\n")


# ------------------------------------------------------------------------------------------------
# graphs: ORT fp32, INT8, FP16 variants of one export per router group
class Graphs:
    """Builds (once) the exports the ORT backends run: ``OUT/graphs/<group>/`` with ``int8/`` and
    ``fp16/`` beside the fp32 graphs, and the INT8 calibration feeds ``OUT/graphs/calib/``."""

    def __init__(self, args: argparse.Namespace, out: Path, log):
        self.args, self.root, self.log = args, out / "graphs", log
        self._model = None

    def model(self):
        if self._model is None:
            from fastsam2.export.models import build_sam2

            a = self.args
            self._model = build_sam2(a.config, a.checkpoint, image_size=a.image_size, quiet=True,
                                     object_score_bias=5.0 if a.checkpoint is None else None)
        return self._model

    def calib_frames(self) -> Path:
        if self.args.calib:
            return Path(self.args.calib)
        from fastsam2.runtime.evaluation import davis_layout

        images, annos = davis_layout(Path(self.args.sweep))
        first = sorted(p.name for p in annos.iterdir() if p.is_dir())[0]
        return images / first

    def export(self, group: str, precision: str) -> Path:
        """The export of ``group`` ("builtin" or "trained" router) with ``precision``'s graphs."""
        from fastsam2.runtime.backends.ort import read_precision_report
        from fastsam2.runtime.manifest import MANIFEST_NAME

        gdir = self.root / group
        if not (gdir / MANIFEST_NAME).is_file():
            from fastsam2.export.onnx_export import export_graphs
            from fastsam2.export.router import TokenRouter, load_router

            model = self.model()
            if group == "trained":
                router = load_router(self.args.router, model)
            else:
                router = TokenRouter.for_model(model)
                router.fastsam2_weights = "default-weights"
            self.log(f"exporting ONNX graphs ({group} router) to {gdir}")
            export_graphs(model, gdir, router_stage=router, router_weights=self.args.router if group == "trained"
                          else None, validate=False, optimize=False, overwrite=True)
        if precision != "fp32" and read_precision_report(gdir, precision) is None:
            self.log(f"making the {precision} graphs in {gdir / precision}")
            if precision == "fp16":
                from fastsam2.export.trt.precision import write_precision_dir

                write_precision_dir(gdir, "fp16", log=self.log)
            else:
                self._int8(gdir)
        return gdir

    def _int8(self, gdir: Path) -> None:
        import shutil

        from fastsam2.calibration.ort_quant import CALIB_KEEP_RATIO, QuantOptions, build_int8, record_feeds
        from fastsam2.export.torch_backend import build_torch_backend
        from fastsam2.runtime.threads import plan_threads

        from fastsam2.runtime.frames import open_frames

        calib = self.root / "calib"
        frames = self.calib_frames()
        with open_frames(frames) as source:
            centre = (source.width / 2, source.height / 2)  # a click inside any frame size
        if not calib.is_dir():
            tmp = self.root / "calib.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            record_feeds(build_torch_backend(self.model()), frames, tmp, n_frames=CALIB_FRAMES,
                         keep_ratio=CALIB_KEEP_RATIO, point=centre)
            tmp.rename(calib)
        # every quantized graph is kept (no accuracy or speed gate): the sweep measures what INT8 does
        options = QuantOptions(min_iou=0.0, min_speedup=0.0, eval_frames=2, timing_runs=1,
                               intra_op_threads=plan_threads(self.args.threads).threads)
        build_int8(gdir, calib, frames, options=options, log=self.log, point=centre)


# ------------------------------------------------------------------------------------------------
def _namespace(args: argparse.Namespace, backend: str, group: str, graphs: Graphs) -> argparse.Namespace:
    """The model arguments of one (backend, router group), as ``eval --run`` takes them."""
    ns = copy.copy(args)
    ns.backend, ns.precision = _BACKEND[backend]
    ns.keep, ns.selector, ns.text = 1.0, "router", None
    ns.router = args.router if group == "trained" else None
    ns.texts = args.texts if group == "trained" else None
    if ns.backend == "ort":
        ns.graphs = str(graphs.export(group, ns.precision))
        ns.config = ns.checkpoint = ns.image_size = None  # fixed by the export
    return ns


def _text_encoder(texts: str) -> dict:
    from fastsam2.runtime.text_embeddings import load_text_embeddings

    t = load_text_embeddings(texts)
    return {"text_encoder": f"open_clip {t.clip_model}", "text_weights": t.weights,
            "text_cue_meaningless": t.is_random}


def _selector_made(args: argparse.Namespace, selector: str) -> dict:
    if selector == ALL_TOKENS:
        return {"selection": "every token (keep 1.0)"}
    made = {"selection": {"builtin": "router, built-in hand-set weights", "trained": f"router {args.router}",
                          "text": f"router {args.router} + each object's text cue",
                          "random": f"random tokens, seed {args.selector_seed}",
                          "grid": "uniform grid (ordered-dither order)"}[selector]}
    if selector == "text":
        made.update(_text_encoder(args.texts))
    return made


def run_sweep(args: argparse.Namespace) -> int:
    """Run every cell (resumable), then write sweep.json, sweep.md and sweep.png into --out."""
    from fastsam2.runtime.outdir import (check_resumable_dir, open_resumable_dir, write_bytes_atomic,
                                         write_text_atomic)

    from .distributed import make_executor
    from .eval_run import dataset_jobs, run_dataset
    from .video_jobs import started

    labels = check_args(args)
    keeps = sorted(set(args.keeps or DEFAULT_KEEPS), reverse=True)
    pruned = [k for k in keeps if k < 1.0]
    protect = [args.sweep, args.checkpoint, args.texts, args.router, args.labels, args.calib]
    out = check_resumable_dir(args.out, overwrite=args.overwrite, protect=protect)
    images_root = Path(args.sweep)
    dataset_jobs(args, images_root, [1.0], out / "cells", args.sequences)  # a bad dataset fails now
    open_resumable_dir(out, kind="eval-sweep", overwrite=args.overwrite)
    _check_resume(out, _model_key(args))
    log = lambda msg: print(f"sweep: {msg}", file=sys.stderr, flush=True)  # noqa: E731
    graphs = Graphs(args, out, log)
    t0 = time.perf_counter()
    cells: list[Cell] = []
    for backend in args.backends:
        groups = {"builtin": [s for s in args.selectors if _RUNTIME[s][1] == "builtin"],
                  "trained": [s for s in args.selectors if _RUNTIME[s][1] == "trained"]}
        if 1.0 in keeps:
            groups["builtin"].insert(0, ALL_TOKENS)
        for group, selectors in groups.items():
            selectors = [s for s in selectors if s == ALL_TOKENS or pruned]
            if not selectors:
                continue
            ns = _namespace(args, backend, group, graphs)
            executor = make_executor(ns)
            with started(executor, out) as info:
                for selector in selectors:
                    cell_keeps = [1.0] if selector == ALL_TOKENS else pruned
                    if not cell_keeps:
                        continue
                    sel_ns = copy.copy(ns)
                    sel_ns.selector = _RUNTIME.get(selector, ("router",))[0]
                    cell_dir = out / "cells" / backend / selector
                    log(f"{backend} / {selector}: keep {', '.join(f'{k:g}' for k in cell_keeps)}")
                    jobs = dataset_jobs(sel_ns, images_root, cell_keeps, cell_dir, args.sequences,
                                        labels=labels if selector == "text" else None)
                    results, videos, _ = run_dataset(executor, jobs, cell_keeps, cell_dir)
                    made = {"backend": backend, **{k: info[k] for k in ("weights", "config", "image_size", "threads",
                                                                       "precisions", "runtime") if k in info},
                            **_selector_made(args, selector)}
                    if ns.backend == "ort":
                        made["graphs"] = ns.graphs
                    for r in results:
                        mine = [v for v in videos if v.keep == r.keep_ratio]
                        cells.append(Cell(
                            backend=backend, selector=selector, keep=r.keep_ratio, j_mean=r.j_mean,
                            f_mean=r.f_mean, jf_mean=r.jf_mean, frames=r.frames, ms_per_frame=r.ms_per_frame,
                            videos=[{"name": v.name, "j_mean": v.j_mean, "f_mean": v.f_mean, "jf_mean": v.jf_mean,
                                     "frames": v.frames, "ms_per_frame": v.ms_total / max(v.frames, 1)}
                                    for v in mine],
                            made=made,
                        ))
    report = {
        "command": _command_line(),
        "dataset": str(args.sweep), "keeps": keeps, "selectors": list(args.selectors),
        "backends": list(args.backends), "model": _model_key(args), "wall_s": round(time.perf_counter() - t0, 1),
        "cells": [asdict(c) for c in cells],
    }
    write_text_atomic(out / "sweep.json", json.dumps(report, indent=2) + "\n")
    write_text_atomic(out / "sweep.md", format_table(cells, report) + "\n")
    write_bytes_atomic(out / "sweep.png", plot_png(cells))
    print(format_table(cells, report))
    print(f"sweep.json, sweep.md, sweep.png and every cell's masks under {out}", file=sys.stderr)
    return 0


def _command_line() -> str | None:
    """The command as typed, when this process is the fastsam2 command (not a library call)."""
    import shlex

    if Path(sys.argv[0]).name not in ("fastsam2", "cli.py"):
        return None
    return "fastsam2 " + " ".join(shlex.quote(a) for a in sys.argv[1:])


# ------------------------------------------------------------------------------------------------
# table and plot
def curves(cells: list[Cell]) -> dict[str, dict[str, list[Cell]]]:
    """{backend: {selector: cells by descending keep}}; each selector's curve starts at the backend's
    keep 1.0 cell (every token kept)."""
    out: dict[str, dict[str, list[Cell]]] = {}
    for backend in dict.fromkeys(c.backend for c in cells):
        mine = [c for c in cells if c.backend == backend]
        full = [c for c in mine if c.selector == ALL_TOKENS]
        sels = list(dict.fromkeys(c.selector for c in mine if c.selector != ALL_TOKENS))
        out[backend] = {s: full + sorted((c for c in mine if c.selector == s), key=lambda c: -c.keep)
                        for s in sels} or {ALL_TOKENS: full}
    return out


def _note(c: Cell) -> str:
    notes = []
    if c.made.get("text_cue_meaningless"):
        notes.append(f"text cue from {c.made['text_encoder']} with RANDOM weights: meaningless")
    elif "text_encoder" in c.made:
        notes.append(f"text cue: {c.made['text_encoder']} ({c.made['text_weights']})")
    if c.made.get("weights") == "random-init":
        notes.append("random SAM2 weights")
    prec = c.made.get("precisions")
    if prec and len(set(prec.values())) > 1:
        low = sorted({p for p in prec.values() if p != "fp32"})
        notes.append(f"{'/'.join(low)} except {', '.join(g for g, p in prec.items() if p == 'fp32')} (fp32)")
    return "; ".join(notes)


def _signed(x: float) -> str:
    return f"{round(x, 4) + 0.0:+.4f}"  # + 0.0: no "-0.0000"


def format_table(cells: list[Cell], report: dict | None = None) -> str:
    """Markdown: one row per cell; ΔJ&F against the same backend's keep 1.0, and against the first
    backend's cell of the same selector and keep (the precision's cost)."""
    base = {c.backend: c.jf_mean for c in cells if c.selector == ALL_TOKENS}
    ref_backend = cells[0].backend if cells else ""
    ref = {(c.selector, c.keep): c.jf_mean for c in cells if c.backend == ref_backend}
    head = (f"| backend | selector | keep | J&F | ΔJ&F vs keep 1 | ΔJ&F vs {ref_backend} | J | F | ms/frame | notes |\n"
            "|---|---|---|---|---|---|---|---|---|---|")
    rows = []
    for c in cells:
        delta = _signed(c.jf_mean - base[c.backend]) if c.backend in base else "-"
        vs_ref = _signed(c.jf_mean - ref[(c.selector, c.keep)]) if (c.selector, c.keep) in ref else "-"
        rows.append(f"| {c.backend} | {c.selector} | {c.keep:g} | {c.jf_mean:.4f} | {delta} | {vs_ref} | "
                    f"{c.j_mean:.4f} | {c.f_mean:.4f} | {c.ms_per_frame:.0f} | {_note(c)} |")
    lines = [head, *rows]
    if report is not None:
        videos = len(cells[0].videos) if cells else 0
        lines = [f"J&F sweep of {report['dataset']} ({videos} videos)", "", *lines]
        if report.get("command"):
            lines += ["", f"Command: `{report['command']}`"]
    return "\n".join(lines)


COLORS = {"builtin": (31, 119, 180), "trained": (44, 160, 44), "text": (148, 103, 189), "random": (214, 39, 40),
          "grid": (255, 127, 14), ALL_TOKENS: (51, 51, 51)}


def plot_png(cells: list[Cell], *, panel_w: int = 520, panel_h: int = 400) -> bytes:
    """J&F (y) against ms/frame (x): one panel per backend, one line per selector from the keep 1.0
    point down to the lowest keep, every point labelled with its keep ratio. PNG bytes (PIL)."""
    import io

    from PIL import Image, ImageDraw, ImageFont

    by_backend = curves(cells)
    font = ImageFont.load_default(size=13)
    small = ImageFont.load_default(size=11)
    left, bottom, top, right, legend_h = 64, 48, 34, 16, 30
    columns = min(2, max(1, len(by_backend)))
    rows = -(-max(1, len(by_backend)) // columns)
    width, height = columns * panel_w, rows * panel_h + legend_h
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    jf = [c.jf_mean for c in cells] or [0.0, 1.0]
    y_lo = min(max(0.0, min(jf) - 0.05), 0.9)
    y_hi = min(1.0, max(max(jf) + 0.05, y_lo + 0.1))
    ms = [c.ms_per_frame for c in cells]
    x_hi = max(ms) * 1.1 if ms and max(ms) > 0 else 1.0  # one scale for every panel: backends compare
    for i, (backend, sels) in enumerate(by_backend.items()):
        col, row = i % columns, i // columns
        x0, x1 = col * panel_w + left, (col + 1) * panel_w - right
        y0, y1 = row * panel_h + top, (row + 1) * panel_h - bottom

        def px(v: float) -> float:
            return x0 + (x1 - x0) * v / x_hi

        def py(v: float) -> float:
            return y1 - (y1 - y0) * (v - y_lo) / (y_hi - y_lo)

        draw.text(((x0 + x1) / 2, y0 - 26), backend, fill="black", font=font, anchor="mt")
        for t in range(5):
            yv, xv = y_lo + (y_hi - y_lo) * t / 4, x_hi * t / 4
            draw.line([(x0, py(yv)), (x1, py(yv))], fill=(235, 235, 235))
            draw.text((x0 - 6, py(yv)), f"{yv:.3g}", fill="black", font=small, anchor="rm")
            draw.text((px(xv), y1 + 6), f"{xv:.0f}", fill="black", font=small, anchor="mt")
        draw.rectangle([x0, y0, x1, y1], outline=(136, 136, 136))
        draw.text(((x0 + x1) / 2, y1 + 24), "ms / frame", fill="black", font=font, anchor="mt")
        draw.text((col * panel_w + 4, y0 - 18), "J&F", fill="black", font=font)
        for sel, pts in sels.items():
            color = COLORS.get(sel, (0, 0, 0))
            xy = [(px(c.ms_per_frame), py(c.jf_mean)) for c in pts]
            if len(xy) > 1:
                draw.line(xy, fill=color, width=2)
            for (x, y), c in zip(xy, pts):
                draw.ellipse([x - 3.5, y - 3.5, x + 3.5, y + 3.5], fill=color)
                if c.selector != ALL_TOKENS or sel == next(iter(sels)):
                    draw.text((x + 5, y - 5), f"{c.keep:g}", fill=color, font=small, anchor="lb")
    selectors = list(dict.fromkeys(s for sels in by_backend.values() for s in sels))
    for j, sel in enumerate(selectors):
        x, y = 12 + j * 120, height - legend_h / 2
        color = COLORS.get(sel, (0, 0, 0))
        draw.line([(x, y), (x + 22, y)], fill=color, width=3)
        draw.text((x + 28, y), sel, fill="black", font=font, anchor="lm")
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()

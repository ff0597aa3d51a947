"""``fastsam2 eval --run``: the fidelity report of pruning on a DAVIS-layout dataset.

Semi-supervised protocol: every object's first-frame ground-truth mask is its prompt (SAM2's mask
prompt path); the tracker runs through each sequence at each keep ratio; J&F is computed with the
DAVIS 2017 definitions (runtime/evaluation.py) and compared with keep 1.0. Speed and memory are
reported in the same table.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from .errors import UserError


class EvalRunError(UserError, ValueError):
    """A dataset that cannot be evaluated (one-line message)."""


@dataclass
class KeepResult:
    keep_ratio: float
    j_mean: float
    f_mean: float
    jf_mean: float
    delta_jf: float  # vs keep 1.0 (or the first keep ratio run)
    frames: int
    ms_per_frame: float
    fps: float
    memory_bank_bytes_max: int
    peak_rss_mb: float


def dataset_layout(root: Path) -> tuple[Path, Path]:
    """(images root, annotations root) of a DAVIS layout: <root>/JPEGImages/480p, Annotations/480p."""
    for images, annos in (
        (root / "JPEGImages" / "480p", root / "Annotations" / "480p"),
        (root / "JPEGImages", root / "Annotations"),
    ):
        if images.is_dir() and annos.is_dir():
            return images, annos
    raise EvalRunError(f"{root} is not a DAVIS-layout dataset (expected JPEGImages/480p and Annotations/480p)")


def first_frame_prompts(anno_dir: Path):
    """{obj_id: Prompt(mask)} from a sequence's first annotation PNG (ids 1..max, as DAVIS)."""
    from .evaluation import mask_files, read_object_ids
    from .tracker import Prompt

    pngs = mask_files(anno_dir)
    if not pngs:
        raise EvalRunError(f"no annotation PNGs in {anno_dir}")
    labels = read_object_ids(pngs[0]).copy()
    labels[labels == 255] = 0
    ids = [i for i in range(1, int(labels.max()) + 1) if (labels == i).any()]
    if not ids:
        raise EvalRunError(f"{pngs[0]}: the first frame has no object")
    return {i: Prompt(mask=labels == i) for i in ids}


def check_sequence(images: Path, annos: Path) -> None:
    """Refuse a sequence whose annotations do not pair up with its frames (count, names, size)."""
    from .evaluation import mask_files, read_object_ids
    from .frames import open_frames

    if not images.is_dir():
        raise EvalRunError(f"no frames for sequence {annos.name!r}: {images} is not a folder")
    with open_frames(images) as source:
        names = [p.stem for p in source.files]
        size = (source.height, source.width)
    pngs = mask_files(annos)
    if [p.stem for p in pngs] != names:
        raise EvalRunError(
            f"sequence {annos.name!r}: {len(pngs)} annotations in {annos} do not match its {len(names)} "
            "frames by name (DAVIS: one annotation PNG per frame)"
        )
    first = read_object_ids(pngs[0])
    if first.shape != size:
        raise EvalRunError(
            f"{pngs[0]}: annotation is {first.shape[1]}x{first.shape[0]}, the frames are {size[1]}x{size[0]}"
        )


def run_dataset(tracker_factory, dataset: Path, keep_ratios: list[float], out_dir: Path,
             sequences: list[str] | None = None) -> list[KeepResult]:
    """Track every sequence at every keep ratio, write masks under out_dir/keep_<r>/<seq>/, and
    evaluate them. ``tracker_factory(keep)`` returns a fresh SAM2Tracker."""
    from .evaluation import evaluate_dirs
    from .frames import open_frames
    from .metrics import peak_rss_mb
    from .output import labels_from_masks, save_indexed_png

    images_root, annos_root = dataset_layout(Path(dataset))
    seqs = sequences or sorted(p.name for p in annos_root.iterdir() if p.is_dir())
    if not seqs:
        raise EvalRunError(f"no sequences in {annos_root}")
    for seq in seqs:  # before any tracking: a bad sequence fails now, not after the others ran
        check_sequence(images_root / seq, annos_root / seq)
    results: list[KeepResult] = []
    base_jf = None
    for keep in keep_ratios:
        tracker = tracker_factory(keep)
        pred_root = out_dir / f"keep_{keep:g}"
        ms, frames, bank = 0.0, 0, 0
        for seq in seqs:
            prompts = first_frame_prompts(annos_root / seq)
            tracker.reset()
            with open_frames(images_root / seq) as source:
                for frame in source:
                    t0 = time.perf_counter()
                    res = tracker.track(frame.image, prompts if frame.index == 0 else None)
                    ms += (time.perf_counter() - t0) * 1e3
                    frames += 1
                    labels = labels_from_masks(res.masks, shape=frame.image.shape[:2])
                    save_indexed_png(pred_root / seq / f"{frame.name}.png", labels)
                    bank = max(bank, tracker.memory_bytes(tracker.stream_state))
        report = evaluate_dirs(pred_root, annos_root, seqs)
        (pred_root / "eval.json").write_text(report.to_json() + "\n")
        if base_jf is None:
            base_jf = report.jf_mean
        results.append(KeepResult(
            keep_ratio=keep, j_mean=report.j_mean, f_mean=report.f_mean, jf_mean=report.jf_mean,
            delta_jf=report.jf_mean - base_jf, frames=frames, ms_per_frame=ms / max(frames, 1),
            fps=1e3 * frames / ms if ms else 0.0, memory_bank_bytes_max=bank, peak_rss_mb=peak_rss_mb(),
        ))
    return results


def format_results(results: list[KeepResult]) -> str:
    head = "| keep | J&F | ΔJ&F vs first | J | F | ms/frame | fps | memory bank MiB |\n|---|---|---|---|---|---|---|---|"
    rows = [
        f"| {r.keep_ratio:g} | {r.jf_mean:.4f} | {r.delta_jf:+.4f} | {r.j_mean:.4f} | {r.f_mean:.4f} | "
        f"{r.ms_per_frame:.0f} | {r.fps:.2f} | {r.memory_bank_bytes_max / 2**20:.1f} |"
        for r in results
    ]
    return "\n".join([head, *rows])


def results_json(results: list[KeepResult], info: dict) -> str:
    return json.dumps({**info, "results": [asdict(r) for r in results]}, indent=2)

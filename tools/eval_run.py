"""``fastsam2 eval --run``: the fidelity report of pruning on a DAVIS-layout dataset.

Semi-supervised protocol: every object's first-frame ground-truth mask is its prompt (SAM2's mask
prompt path); the tracker runs through each sequence at each keep ratio; J&F is computed with the
DAVIS 2017 definitions (runtime/evaluation.py) and compared with keep 1.0. Speed and memory are
reported in the same table.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from fastsam2.runtime.errors import UserError


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
    encoder_share: float | None = None  # with --encoder-region: the mean share of a frame encoded



def dataset_layout(root: Path) -> tuple[Path, Path]:
    """(images root, annotations root) of a DAVIS layout (see evaluation.davis_layout)."""
    from fastsam2.runtime.evaluation import davis_layout

    return davis_layout(root)


def first_frame_ids(anno_dir: Path) -> tuple[Path, list[int]]:
    """(first annotation PNG, object ids 1..max present in it) of a DAVIS sequence."""
    from fastsam2.runtime.evaluation import mask_files, read_object_ids

    pngs = mask_files(anno_dir)
    if not pngs:
        raise EvalRunError(f"no annotation PNGs in {anno_dir}")
    labels = read_object_ids(pngs[0]).copy()
    labels[labels == 255] = 0
    ids = [i for i in range(1, int(labels.max()) + 1) if (labels == i).any()]
    if not ids:
        raise EvalRunError(f"{pngs[0]}: the first frame has no object")
    return pngs[0], ids


def check_sequence(images: Path, annos: Path) -> None:
    """Refuse a sequence whose annotations do not pair up with its frames (count, names, size)."""
    from fastsam2.runtime.evaluation import mask_files, read_object_ids
    from fastsam2.runtime.frames import open_frames

    if not images.is_dir():
        raise EvalRunError(f"sequence {annos.name!r} has annotations but no frames in {images}")
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


def dataset_jobs(args, dataset: Path, keep_ratios: list[float], out_dir: Path,
                 sequences: list[str] | None = None, *, labels: dict[str, str] | None = None) -> list:
    """One VideoJob per (keep ratio, sequence): prompts are the first-frame ground-truth masks, the
    masks go to out_dir/keep_<r>/<seq>/ and are scored against the sequence's annotations. The token
    selector is ``args.selector``; ``labels`` ({"<seq>/<obj_id>": text}, a labels.json) gives each
    object its own router text."""
    from .video_jobs import VideoJob, check_outputs, job_settings

    images_root, annos_root = dataset_layout(Path(dataset))
    seqs = sequences or sorted(p.name for p in annos_root.iterdir() if p.is_dir())
    if not seqs:
        raise EvalRunError(f"no sequences in {annos_root}")
    firsts = {}
    for seq in seqs:  # before any tracking: a bad sequence fails now, not after the others ran
        check_sequence(images_root / seq, annos_root / seq)
        firsts[seq] = first_frame_ids(annos_root / seq)
    jobs = []
    for keep in keep_ratios:
        for seq in seqs:
            png, ids = firsts[seq]
            jobs.append(VideoJob(
                name=seq, source=str(images_root / seq), out_dir=str(out_dir / f"keep_{keep:g}"), keep=keep,
                prompts={i: {"mask": str(png)} for i in ids}, settings=job_settings(args, keep),
                gt_dir=str(annos_root / seq), selector=getattr(args, "selector", "router"),
                object_texts=object_texts(labels, seq, ids),
            ))
    check_outputs(jobs)
    return jobs


def object_texts(labels: dict[str, str] | None, seq: str, ids: list[int]) -> dict[int, str] | None:
    """{obj_id: text} of one sequence's objects from a labels.json mapping; every object needs one."""
    if labels is None:
        return None
    missing = [i for i in ids if f"{seq}/{i}" not in labels]
    if missing:
        raise EvalRunError(f"labels: no text for {seq}/{missing[0]} (labels.json maps \"<seq>/<obj_id>\" to a text)")
    return {i: labels[f"{seq}/{i}"] for i in ids}


def run_dataset(executor, jobs: list, keep_ratios: list[float], out_dir: Path):
    """Run the jobs of :func:`dataset_jobs` on a started ``executor`` (video_jobs.LocalExecutor or
    distributed.RayExecutor): masks under out_dir/keep_<r>/<seq>/, scores per keep ratio.

    Returns (one KeepResult per keep ratio, the per-video results in job order, the job totals).
    """
    from fastsam2.runtime.evaluation import EvalReport, ObjectScore
    from fastsam2.runtime.outdir import write_text_atomic
    from .video_jobs import run_jobs

    videos, totals = run_jobs(executor, jobs)
    results: list[KeepResult] = []
    base_jf = None
    for keep in keep_ratios:
        mine = [v for j, v in zip(jobs, videos) if j.keep == keep]
        # objects in sequence order, as evaluate_dirs over the whole keep folder would give them
        report = EvalReport.from_objects([ObjectScore.from_dict(o) for v in mine for o in v.scores])
        pred_root = out_dir / f"keep_{keep:g}"
        write_text_atomic(pred_root / "eval.json", report.to_json() + "\n")
        if base_jf is None:
            base_jf = report.jf_mean
        frames = sum(v.frames for v in mine)
        ms = sum(v.ms_total for v in mine)
        results.append(KeepResult(
            keep_ratio=keep, j_mean=report.j_mean, f_mean=report.f_mean, jf_mean=report.jf_mean,
            delta_jf=report.jf_mean - base_jf, frames=frames, ms_per_frame=ms / max(frames, 1),
            fps=1e3 * frames / ms if ms else 0.0,
            memory_bank_bytes_max=max(v.memory_bank_bytes_max for v in mine),
            peak_rss_mb=max(v.peak_rss_mb for v in mine),
            encoder_share=_mean_share(mine),
        ))
    return results, videos, totals


def _mean_share(videos: list) -> float | None:
    """The frame-weighted mean of the videos' encoder shares (None without encoder regions)."""
    shared = [v for v in videos if v.encoder_share is not None]
    if not shared:
        return None
    return sum(v.encoder_share * v.frames for v in shared) / max(sum(v.frames for v in shared), 1)


def format_results(results: list[KeepResult]) -> str:
    share = any(r.encoder_share is not None for r in results)
    head = ("| keep | J&F | ΔJ&F vs first | J | F | ms/frame | fps | memory bank MiB |"
            + (" frame encoded |" if share else "") + "\n|---|---|---|---|---|---|---|---|" + ("---|" if share else ""))
    rows = [
        f"| {r.keep_ratio:g} | {r.jf_mean:.4f} | {r.delta_jf:+.4f} | {r.j_mean:.4f} | {r.f_mean:.4f} | "
        f"{r.ms_per_frame:.0f} | {r.fps:.2f} | {r.memory_bank_bytes_max / 2**20:.1f} |"
        + ((f" {r.encoder_share:.1%} |" if r.encoder_share is not None else " |") if share else "")
        for r in results
    ]
    return "\n".join([head, *rows])


def results_json(results: list[KeepResult], info: dict, videos: list | None = None,
                 totals: dict | None = None) -> str:
    """The --json report: model info, one entry per keep ratio, and (optionally) per video and totals."""
    data = {**info, "results": [asdict(r) for r in results]}
    if videos is not None:
        data["videos"] = [{k: v for k, v in asdict(r).items() if k not in ("scores", "info")} for r in videos]
    if totals is not None:
        data["job"] = totals
    return json.dumps(data, indent=2)

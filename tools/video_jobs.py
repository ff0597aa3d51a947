"""One video, tracked and written atomically: the unit of work of ``eval --run`` and ``label``.

Both the single-process path and the Ray path (tools/distributed.py) call :func:`run_video`, so
there is one definition of what "a finished video" is:

* a video's results go to ``<out>/<name>/`` (one indexed PNG per frame and ``video.json``);
* they are written under ``<out>/.<name>.partial-<id>/`` and renamed when complete, so a killed
  worker leaves no half-written video behind, only a partial folder that the job removes;
* a folder with a ``video.json`` made with the same settings is finished: a rerun (or a retried task
  whose first attempt already committed) returns its stored result instead of writing it again. The
  rename never replaces an existing folder (``outdir.rename_no_replace``), so each video is written
  exactly once.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import socket
import sys
import time
import uuid
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from fastsam2.runtime.errors import UsageError, UserError

VIDEO_JSON = "video.json"
PARTIAL_TAG = ".partial-"
# Test-only fault injection (tests/test_distributed.py): when this variable names a folder, a worker
# that finds the marker file <folder>/<point> deletes it and kills its own process at that point.
FAULT_DIR_ENV = "FASTSAM2_TEST_FAULT_DIR"
FAULT_MID_VIDEO = "kill-mid-video"  # after the first frame's PNG, before the commit
FAULT_AFTER_COMMIT = "kill-after-commit"  # after the rename, before the result is returned
# Model arguments that change the masks: a finished video is reused only if they are equal.
SETTINGS_KEYS = ("config", "checkpoint", "backend", "graphs", "device", "dtype", "image_size",
                 "fill_hole_area", "text", "texts", "router", "selector", "selector_seed", "precision",
                 "encoder_region", "encoder_refresh", "encoder_lag")


class VideoJobError(UsageError):
    """A video that cannot be run or reused (one-line message)."""


@dataclass(frozen=True)
class VideoJob:
    """What one worker call does: track ``source`` with first-frame ``prompts`` at ``keep``.

    ``prompts``: {obj_id: {"points": [[x, y], ...], "labels": [1, ...], "box": [x0, y0, x1, y1],
    "mask": "path.png"}} (any subset; a mask PNG's pixels equal to obj_id are the object).
    ``gt_dir``: a DAVIS sequence of annotation PNGs to score the masks against (eval), or None.
    ``selector``: how pruned frames pick tokens (runtime.router.SELECTORS); ``object_texts``:
    {obj_id: description} for the router's text cue (each object its own), or None.
    """

    name: str
    source: str
    out_dir: str
    keep: float
    prompts: dict[int, dict]
    settings: dict
    text: str | None = None
    gt_dir: str | None = None
    selector: str = "router"
    object_texts: dict[int, str] | None = None

    @property
    def final_dir(self) -> Path:
        return Path(self.out_dir) / self.name


@dataclass
class VideoResult:
    """The stored result of one video (``video.json``); ``skipped`` is set when it was reused."""

    name: str
    keep: float
    frames: int
    ms_total: float
    fps: float
    memory_bank_bytes_max: int
    peak_rss_mb: float
    objects: list[int]
    settings: dict
    worker: dict
    info: dict
    scores: list[dict] | None = None  # ObjectScore.to_dict() per object (eval only)
    jf_mean: float | None = None
    j_mean: float | None = None
    f_mean: float | None = None
    encoder_share: float | None = None  # with encoder regions: the mean share of a frame encoded
    skipped: bool = field(default=False, compare=False)

    def to_json(self) -> str:
        data = asdict(self)
        data.pop("skipped")
        return json.dumps(data, indent=2) + "\n"

    @classmethod
    def from_dict(cls, data: dict) -> VideoResult:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


def job_settings(args: argparse.Namespace, keep: float, **extra: Any) -> dict:
    """The settings a finished video must match to be reused (model arguments + keep + ``extra``)."""
    out = {k: getattr(args, k, None) for k in SETTINGS_KEYS}
    out["keep"] = keep
    out.update(extra)
    return json.loads(json.dumps(out))  # as video.json stores it (tuples -> lists, int keys -> str)


# ------------------------------------------------------------------------------------------------
class TrackerCache:
    """One loaded backend (opened once by ``api.open_backend_from_args``) and a SAM2Tracker per (keep, text).

    This is what a long-lived worker holds: building the model or loading engines happens once.
    """

    def __init__(self, args: argparse.Namespace, *, threads: int | None = None):
        self.args = copy.copy(args)
        self.threads = threads
        self.info: dict = {}
        self._backend = None
        self._trackers: dict[tuple[float, str | None, str], Any] = {}

    def load(self) -> dict:
        """Build the backend now (idempotent); returns the report's description of it."""
        if self._backend is None:
            from .api import open_backend_from_args

            args = copy.copy(self.args)
            if self.threads and getattr(args, "threads", None) is None:
                args.threads = self.threads  # a Ray worker's CPUs
            self._backend, self.info = open_backend_from_args(args, quiet=True)
            self.info["keep_ratio"] = 1.0
            self.info["fill_hole_area"] = (self.args.fill_hole_area if self.args.fill_hole_area is not None
                                           else self._backend.config.fill_hole_area)
        return self.info

    def tracker(self, keep: float, text: str | None = None, selector: str = "router",
                object_texts: dict[int, str] | None = None):
        """A SAM2Tracker at ``keep`` with token ``selector`` (router text ``text``, else --text; or
        one description per object, ``object_texts``), reset for a new video."""
        from fastsam2.runtime.router import object_text_vectors

        from .api import tracker_from_args

        self.load()
        text = text if text is not None else self.args.text
        key = (keep, text if keep < 1 else None, selector if keep < 1 else "router")
        if key not in self._trackers:
            assert self._backend is not None  # load() opened it
            self._trackers[key] = tracker_from_args(self._backend, self.args, keep, text=text, selector=selector)
        tracker = self._trackers[key]
        tracker.reset()
        if keep < 1 and selector == "router":
            tracker.router.text_vectors = object_text_vectors(
                object_texts, texts_path=self.args.texts, weights_path=self.args.router) if object_texts else {}
        return tracker


def worker_identity() -> dict:
    """Where a video ran: host, pid and whether Ray restarted this worker (False outside Ray)."""
    restarted = False
    if "ray" in sys.modules:
        import ray

        if ray.is_initialized():
            try:
                restarted = bool(ray.get_runtime_context().was_current_actor_reconstructed)
            except Exception:  # noqa: BLE001 - not inside an actor (the driver): no restart
                restarted = False
    return {"host": socket.gethostname(), "pid": os.getpid(), "restarted": restarted}


def _injected_fault(point: str) -> None:
    """Test-only: kill this process if the marker ``$FASTSAM2_TEST_FAULT_DIR/<point>`` exists.

    The marker is consumed (os.remove succeeds in one process only), so exactly one worker dies.
    """
    folder = os.environ.get(FAULT_DIR_ENV)
    if not folder:
        return
    try:
        os.remove(Path(folder) / point)
    except FileNotFoundError:
        return
    os._exit(17)


def prompts_for_tracker(prompts: dict[int, dict]):
    """{obj_id: tracker.Prompt} from a job's JSON prompt spec (mask PNGs are read here)."""
    from PIL import Image

    from fastsam2.runtime.tracker import Prompt

    labels_cache: dict[str, np.ndarray] = {}
    out = {}
    for oid, spec in prompts.items():
        mask = None
        if spec.get("mask"):
            path = spec["mask"]
            if path not in labels_cache:
                labels = np.array(Image.open(path))
                labels[labels == 255] = 0  # DAVIS void is background
                labels_cache[path] = labels
            mask = labels_cache[path] == int(oid)
        out[int(oid)] = Prompt(points=spec.get("points"), labels=spec.get("labels"), box=spec.get("box"),
                               mask=mask)
    return out


def read_finished(job: VideoJob) -> VideoResult | None:
    """The stored result of a finished video, None if it has not been run; an error if the folder
    exists but was made with other settings or is not a fastsam2 video folder."""
    final = job.final_dir
    if not final.exists():
        return None
    meta = final / VIDEO_JSON
    if not meta.is_file():
        raise VideoJobError(f"{final} exists but has no {VIDEO_JSON} (not written by this job): "
                            "remove it or choose another --out")
    try:
        result = VideoResult.from_dict(json.loads(meta.read_text()))
    except (ValueError, TypeError) as e:
        raise VideoJobError(f"{meta}: unreadable ({e}): remove {final} to run it again") from None
    if result.settings != job.settings:
        diff = sorted(k for k in set(result.settings) | set(job.settings)
                      if result.settings.get(k) != job.settings.get(k))
        raise VideoJobError(f"{final} was made with other settings ({', '.join(diff)} differ): "
                            "choose another --out or remove it")
    result.skipped = True
    return result


def check_outputs(jobs: list[VideoJob]) -> int:
    """Refuse, before any model is built, outputs that exist but cannot be reused (other settings, not
    written by fastsam2); returns how many videos are already finished."""
    return sum(read_finished(job) is not None for job in jobs)


def run_video(trackers: TrackerCache, job: VideoJob) -> VideoResult:
    """Track one video and commit its folder atomically, or return its stored result if finished."""
    from fastsam2.runtime.frames import open_frames
    from fastsam2.runtime.metrics import peak_rss_mb
    from fastsam2.runtime.outdir import rename_no_replace
    from fastsam2.runtime.output import labels_from_masks, save_indexed_png

    done = read_finished(job)
    if done is not None:
        return done
    tracker = trackers.tracker(job.keep, job.text, job.selector, job.object_texts)
    prompts = prompts_for_tracker(job.prompts)
    final = job.final_dir
    final.parent.mkdir(parents=True, exist_ok=True)
    partial = final.parent / f".{final.name}{PARTIAL_TAG}{uuid.uuid4().hex[:12]}"
    partial.mkdir()
    try:
        ms, frames, bank = 0.0, 0, 0
        with open_frames(job.source) as source:
            for frame in source:
                t0 = time.perf_counter()
                res = tracker.track(frame.image, prompts if frame.index == 0 else None)
                ms += (time.perf_counter() - t0) * 1e3
                frames += 1
                labels = labels_from_masks(res.masks, shape=frame.image.shape[:2])
                save_indexed_png(partial / f"{frame.name}.png", labels)
                bank = max(bank, tracker.memory_bytes(tracker.stream_state))
                if frames == 1:
                    _injected_fault(FAULT_MID_VIDEO)
        result = VideoResult(
            name=job.name, keep=job.keep, frames=frames, ms_total=ms,
            fps=1e3 * frames / ms if ms else 0.0, memory_bank_bytes_max=bank,
            peak_rss_mb=round(peak_rss_mb(), 1), objects=sorted(prompts), settings=job.settings,
            worker=worker_identity(), info=trackers.info,
            encoder_share=tracker.stream_state.encoder_share if tracker.stream_state is not None else None,
        )
        if job.gt_dir is not None:
            from fastsam2.runtime.evaluation import evaluate_dirs

            report = evaluate_dirs(partial, job.gt_dir)
            result.scores = [o.to_dict() for o in report.objects]
            result.jf_mean, result.j_mean, result.f_mean = report.jf_mean, report.j_mean, report.f_mean
        (partial / VIDEO_JSON).write_text(result.to_json())
        try:
            rename_no_replace(partial, final)
        except OSError:
            # Another attempt of this video (a retried task whose first run was not dead after all)
            # committed first: keep its folder, drop ours.
            done = read_finished(job)
            if done is None:
                raise
            return done
    except UserError:
        raise
    except OSError as e:  # a full disk, a folder made read-only: one line naming the video's folder
        raise VideoJobError(f"cannot write {final}: {e.strerror or e}") from None
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    _injected_fault(FAULT_AFTER_COMMIT)
    return result


def remove_partials(out_dirs: Iterable[Path]) -> int:
    """Delete the partial folders killed workers left in ``out_dirs``; returns how many."""
    n = 0
    for out in out_dirs:
        if Path(out).is_dir():
            for p in Path(out).iterdir():
                if p.name.startswith(".") and PARTIAL_TAG in p.name and p.is_dir():
                    shutil.rmtree(p, ignore_errors=True)
                    n += 1
    return n


# ------------------------------------------------------------------------------------------------
class JobProgress:
    """Whole-job progress on stderr: videos done, aggregate frames/s, ETA (from videos run so far)."""

    def __init__(self, total: int, *, stream=None, label: str = "videos"):
        self.total = total
        self.done = 0
        self.run = 0  # videos tracked by this job (not reused)
        self.frames = 0
        self.t0 = time.perf_counter()
        self.stream = stream if stream is not None else sys.stderr
        self.label = label

    def update(self, job: VideoJob, result: VideoResult) -> None:
        self.done += 1
        if not result.skipped:
            self.run += 1
            self.frames += result.frames
        elapsed = time.perf_counter() - self.t0
        rate = self.frames / elapsed if elapsed > 0 else 0.0
        left = self.total - self.done
        eta = elapsed / self.run * left if self.run else 0.0
        what = "reused (finished earlier)" if result.skipped else (
            f"{result.frames} frames, {result.fps:.2f} fps"
            + (f", J&F {result.jf_mean:.3f}" if result.jf_mean is not None else ""))
        print(f"[{self.done}/{self.total} {self.label}] {job.name} keep {job.keep:g}: {what} | "
              f"job {rate:.2f} frames/s, ETA {_hms(eta)}", file=self.stream, flush=True)

    @property
    def elapsed_s(self) -> float:
        return time.perf_counter() - self.t0


def _hms(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class LocalExecutor:
    """Runs jobs one after another in this process (the path without --ray)."""

    workers = 1

    def __init__(self, args: argparse.Namespace):
        self.trackers = TrackerCache(args)

    def start(self) -> dict:
        """Build the backend; returns its description for the report."""
        return self.trackers.load()

    def map(self, jobs: list[VideoJob], on_result: Callable[[VideoJob, VideoResult], None]) -> list[VideoResult]:
        """Results in job order; ``on_result`` is called as each video finishes."""
        results = []
        for job in jobs:
            res = run_video(self.trackers, job)
            on_result(job, res)
            results.append(res)
        return results

    def close(self) -> None:
        pass


def run_jobs(executor, jobs: list[VideoJob], *, stream=None) -> tuple[list[VideoResult], dict]:
    """Run ``jobs`` on ``executor`` (LocalExecutor or distributed.RayExecutor) with job progress;
    returns the results in job order and the job totals. Partial folders are removed before and after."""
    outs = sorted({Path(j.out_dir) for j in jobs})
    remove_partials(outs)
    progress = JobProgress(len(jobs), stream=stream)
    try:
        results = executor.map(jobs, progress.update)
    finally:
        remove_partials(outs)
    run = [r for r in results if not r.skipped]
    wall = progress.elapsed_s
    frames = sum(r.frames for r in run)
    totals = {
        "videos": len(results), "videos_run": len(run), "videos_reused": len(results) - len(run),
        "frames_run": frames, "wall_s": round(wall, 3), "workers": executor.workers,
        "frames_per_s": frames / wall if wall > 0 else 0.0,
        "videos_per_s": len(run) / wall if wall > 0 else 0.0,
        "restarted_workers_used": sum(bool(r.worker.get("restarted")) for r in run),
    }
    return results, totals


def format_videos(results: list[VideoResult]) -> str:
    """Markdown table: one row per video (keep, frames, J&F, fps, where it ran)."""
    head = "| video | keep | frames | J&F | fps | worker |\n|---|---|---|---|---|---|"
    rows = [
        f"| {r.name} | {r.keep:g} | {r.frames} | "
        f"{'-' if r.jf_mean is None else f'{r.jf_mean:.4f}'} | {r.fps:.2f} | "
        f"{'reused' if r.skipped else r.worker.get('host', '?') + ':' + str(r.worker.get('pid', '?'))} |"
        for r in results
    ]
    return "\n".join([head, *rows])


def format_totals(totals: dict) -> str:
    """One line: videos run/reused, frames, wall time, workers, frames/s and videos/s of the job."""
    return (f"{totals['videos']} videos ({totals['videos_run']} run, {totals['videos_reused']} reused), "
            f"{totals['frames_run']} frames in {totals['wall_s']:.1f} s on {totals['workers']} worker(s): "
            f"{totals['frames_per_s']:.2f} frames/s, {totals['videos_per_s']:.3f} videos/s")


@contextmanager
def started(executor, out: Path) -> Iterator[dict]:
    """``executor.start()`` (yields its info) and ``close()`` around a run into ``out``; a run that
    fails before any video was committed leaves no output directory behind."""
    from fastsam2.runtime.outdir import discard_if_unused

    try:
        yield executor.start()
    except BaseException:
        discard_if_unused(out)
        raise
    finally:
        executor.close()

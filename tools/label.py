"""``fastsam2 label``: masks for many videos from per-video first-frame prompts (auto-labelling).

``--videos DIR`` holds one frame folder or one video file per video; ``--prompts FILE`` is JSON::

    {"videos": {
       "<video>": {                       # a folder DIR/<video>/ or a file DIR/<video>.<ext>
         "text": "a red car",             # optional: this video's router text (--keep < 1 with --texts)
         "objects": {
           "1": {"points": [[480, 300], [500, 310]], "labels": [1, 0]},   # labels default to 1
           "2": {"box": [100, 100, 300, 400]},
           "3": {"mask": "masks/car.png"}  # relative to FILE; its pixels equal to 3 are the object
         }}}}

Object ids are 1..255 (the output PNG's pixel value); an object may combine points, a box and a
mask. Every prompt is on the first frame. Only the videos the file names are labelled.

Output: ``OUT/<video>/<frame>.png`` (indexed, DAVIS palette) and ``OUT/<video>/video.json`` per video,
each committed by one rename, so a rerun with the same settings skips finished videos; ``OUT/label.json``
summarises the job. With ``--ray`` the videos are sharded over Ray actors (tools/distributed.py).
"""

from __future__ import annotations

import argparse
import math
import json
import sys
from pathlib import Path

PROMPT_KEYS = ("points", "labels", "box", "mask")


class PromptFileError(ValueError):
    """A prompts file that does not follow the format (one-line message naming the field)."""


def add_parser(sub) -> None:
    from .cli import add_job_args

    p = sub.add_parser("label", help="track every video of a folder from a JSON file of first-frame prompts",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--videos", required=True, help="folder with one frame folder or video file per video")
    p.add_argument("--prompts", required=True, help="JSON prompts per video (format above)")
    add_job_args(p, out_help="output folder (OUT/<video>/*.png, video.json; OUT/label.json)", required=True)
    p.set_defaults(func=run)


def _numbers(value, n: int | None, where: str) -> list[float]:
    if not isinstance(value, list) or (n is not None and len(value) != n) or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value
    ):
        want = f"{n} numbers" if n is not None else "a list of numbers"
        raise PromptFileError(f"{where}: expected {want}, got {json.dumps(value)[:60]}")
    return [float(v) for v in value]


def _object_prompt(spec, where: str, base: Path, oid: int, size: tuple[int, int]) -> dict:
    """A validated prompt spec (VideoJob format) of one object; ``size`` is the frame's (w, h)."""
    if not isinstance(spec, dict):
        raise PromptFileError(f"{where}: expected an object with points/labels/box/mask")
    unknown = sorted(set(spec) - set(PROMPT_KEYS))
    if unknown:
        raise PromptFileError(f"{where}: unknown key {unknown[0]!r} (allowed: {', '.join(PROMPT_KEYS)})")
    if not any(k in spec for k in ("points", "box", "mask")):
        raise PromptFileError(f"{where}: give points, a box or a mask")
    w, h = size
    out: dict = {}
    coords: list[tuple[str, list[float]]] = []
    if "points" in spec:
        if not isinstance(spec["points"], list) or not spec["points"]:
            raise PromptFileError(f"{where}.points: expected a non-empty list of [x, y]")
        out["points"] = [_numbers(pt, 2, f"{where}.points[{i}]") for i, pt in enumerate(spec["points"])]
        coords += [(f"points[{i}]", pt) for i, pt in enumerate(out["points"])]
        labels = spec.get("labels", [1] * len(out["points"]))
        if not isinstance(labels, list) or len(labels) != len(out["points"]) or any(
            lab not in (0, 1) or isinstance(lab, bool) for lab in labels
        ):
            raise PromptFileError(f"{where}.labels: expected one 1 (positive) or 0 (negative) per point, "
                                  f"got {json.dumps(labels)[:60]}")
        out["labels"] = [int(lab) for lab in labels]
    elif "labels" in spec:
        raise PromptFileError(f"{where}.labels: labels without points")
    if "box" in spec:
        box = _numbers(spec["box"], 4, f"{where}.box")
        if box[0] >= box[2] or box[1] >= box[3]:
            raise PromptFileError(f"{where}.box: expected x0 < x1 and y0 < y1, got {box}")
        out["box"] = box
        coords += [("box", box[:2]), ("box", box[2:])]
    for name, (x, y) in coords:
        if not (0 <= x <= w and 0 <= y <= h):
            raise PromptFileError(f"{where}.{name}: ({x:g}, {y:g}) is outside the {w}x{h} first frame")
    if "mask" in spec:
        out["mask"] = str(_mask_file(spec["mask"], f"{where}.mask", base, oid, size))
    return out


def _mask_file(value, where: str, base: Path, oid: int, size: tuple[int, int]) -> Path:
    import numpy as np
    from PIL import Image

    if not isinstance(value, str) or not value:
        raise PromptFileError(f"{where}: expected the path of a PNG")
    path = (base / value).resolve()
    if not path.is_file():
        raise PromptFileError(f"{where}: file not found: {path}")
    try:
        with Image.open(path) as im:
            ids = np.array(im)
    except OSError as e:
        raise PromptFileError(f"{where}: cannot read {path}: {e}") from None
    if ids.ndim != 2 or (ids.shape[1], ids.shape[0]) != size:
        raise PromptFileError(f"{where}: {path} is {'x'.join(map(str, ids.shape[1::-1]))}, expected a "
                              f"single-channel {size[0]}x{size[1]} PNG like the first frame")
    if not (ids == oid).any():
        raise PromptFileError(f"{where}: {path} has no pixel equal to the object id {oid}")
    return path


def find_video(videos: Path, name: str) -> Path:
    """DIR/<name>/ (frames) or the one file DIR/<name>.<ext>."""
    folder = videos / name
    if folder.is_dir():
        return folder
    files = [p for p in videos.glob(f"{name}.*") if p.is_file() and p.stem == name]
    if len(files) == 1:
        return files[0]
    if not files:
        raise PromptFileError(f"video {name!r}: neither {folder}/ nor {folder}.<ext> exists")
    raise PromptFileError(f"video {name!r}: several files match ({', '.join(sorted(p.name for p in files))})")


def load_prompts(path: Path, videos: Path) -> dict[str, dict]:
    """{video name: {"source": path, "text": str | None, "objects": {obj_id: prompt spec}}}, validated
    against the videos (each first frame is opened for its size)."""
    from fastsam2.runtime.frames import open_frames

    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise PromptFileError(f"prompts file not found: {path}") from None
    except OSError as e:  # a directory, no read permission
        raise PromptFileError(f"cannot read prompts file {path}: {e.strerror or e}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise PromptFileError(f"{path}: not valid JSON: {e}") from None
    if not isinstance(data, dict) or not isinstance(data.get("videos"), dict) or not data["videos"]:
        raise PromptFileError(f'{path}: expected {{"videos": {{"<video>": {{"objects": {{...}}}}}}}}')
    extra = sorted(set(data) - {"videos"})
    if extra:
        raise PromptFileError(f"{path}: unknown top-level key {extra[0]!r} (only 'videos')")
    base = Path(path).resolve().parent
    out = {}
    for name, entry in data["videos"].items():
        where = f"{Path(path).name}: videos.{name}"
        if not name or "/" in name or name.startswith("."):
            raise PromptFileError(f"{where}: a video name is a folder or file stem in --videos")
        if not isinstance(entry, dict):
            raise PromptFileError(f"{where}: expected an object with 'objects' (and optional 'text')")
        unknown = sorted(set(entry) - {"objects", "text"})
        if unknown:
            raise PromptFileError(f"{where}: unknown key {unknown[0]!r} (allowed: objects, text)")
        text = entry.get("text")
        if text is not None and (not isinstance(text, str) or not text.strip()):
            raise PromptFileError(f"{where}.text: expected a non-empty string")
        objects = entry.get("objects")
        if not isinstance(objects, dict) or not objects:
            raise PromptFileError(f"{where}.objects: expected at least one object, keyed by id 1..255")
        source = find_video(Path(videos), name)
        with open_frames(source) as frames:
            size = (frames.width, frames.height)
        specs = {}
        for key, spec in objects.items():
            if not (str(key).isdigit() and 1 <= int(key) <= 255):
                raise PromptFileError(f"{where}.objects: object id {key!r} is not an integer in 1..255")
            oid = int(key)
            specs[oid] = _object_prompt(spec, f"{where}.objects.{key}", base, oid, size)
        out[name] = {"source": str(source), "text": text, "objects": specs}
    return out


def label_jobs(args: argparse.Namespace, prompts: dict[str, dict], out_dir: Path) -> list:
    """One VideoJob per video of the prompts file, at ``args.keep``, into out_dir/<video>/."""
    from .video_jobs import VideoJob, check_outputs, job_settings

    from fastsam2.runtime.errors import UsageError

    texts = [name for name, e in prompts.items() if e["text"] is not None]
    if texts and args.keep < 1 and not args.texts:
        raise UsageError(f"video {texts[0]!r} has a router text: give --texts FILE.npz (fastsam2-export text ...)")
    jobs = []
    for name, entry in prompts.items():
        text = entry["text"] if entry["text"] is not None else args.text
        jobs.append(VideoJob(
            name=name, source=entry["source"], out_dir=str(out_dir), keep=args.keep, prompts=entry["objects"],
            settings=job_settings(args, args.keep, text=text, prompts=entry["objects"]), text=text,
            selector=args.selector,
        ))
    check_outputs(jobs)
    return jobs


def run(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from .distributed import make_executor
    from fastsam2.runtime.errors import UsageError
    from fastsam2.runtime.outdir import check_resumable_dir, open_resumable_dir, write_text_atomic
    from .video_jobs import format_totals, format_videos, run_jobs, started

    videos = Path(args.videos)
    if not videos.is_dir():
        raise UsageError(f"--videos: folder not found: {videos}")
    out = check_resumable_dir(args.out, overwrite=args.overwrite,
                              protect=[args.videos, args.prompts, args.graphs, args.checkpoint, args.texts])
    try:
        prompts = load_prompts(Path(args.prompts), videos)
    except PromptFileError as e:
        raise UsageError(str(e)) from None
    jobs = label_jobs(args, prompts, out)
    executor = make_executor(args)  # refused now if --ray is given and Ray is missing, before --out exists
    open_resumable_dir(out, kind="label", overwrite=args.overwrite)
    with started(executor, out) as info:
        results, totals = run_jobs(executor, jobs)
    print(format_videos(results))
    print(format_totals(totals))
    summary = {**info, "job": totals,
               "videos": [{k: v for k, v in asdict(r).items() if k != "info"} for r in results]}
    write_text_atomic(out / "label.json", json.dumps(summary, indent=2) + "\n")
    print(f"masks and video.json per video under {out}", file=sys.stderr)
    return 0

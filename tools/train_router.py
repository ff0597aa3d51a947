"""``fastsam2 train-router`` and ``fastsam2 fit-text-projection``: fitting the token router's weights.

train-router — self-distillation from the UNPRUNED tracker, no annotations:

* Videos: every sub-folder of ``--videos`` holding .jpg/.jpeg/.png frames, every video file in it
  (.mp4 .avi .mov .mkv .webm .m4v), or ``--videos`` itself when it holds frames; the first
  ``--frames-per-video`` frames of each.
* Objects, seeded on each video's first frame: candidate clicks are the frame centre, then points drawn
  uniformly from the central 80% of the frame by ``numpy.random.default_rng([seed, video index])``. A
  candidate becomes an object when the teacher's mask for that single positive click covers between
  ``--min-area`` (default 0.1%) and ``--max-area`` (default 80%) of the frame; at most ``4 x --objects-per-video``
  candidates are tried. Object ids are 1, 2, ... in order of acceptance.
* Teacher: SAM2Tracker at keep 1.0 (no pruning, no hole filling) tracks them. For every tracked frame
  t >= 1 and object, a sample is (vision_feats of t, the teacher's low-res mask logits of t-1 as
  prev_mask_logits, the object's projected text — zeros unless ``--texts/--labels/--text-projection``
  are given) with target ``token_targets(teacher logits of t, radius=--target-radius)``: the tokens
  inside the teacher mask, dilated by the radius (so the boundary band is included). The router's cues
  depend on those three inputs only, not on its weights, so the 7 cue maps [7, HW] are what is cached
  (in memory up to ``--cache-mb``, then in a temporary directory).
* Training: only the router MLP, from the hand-set default weights. Loss per sample = BCE-with-logits
  of the pre-softmax token logits against the targets with ``pos_weight`` = (#negative / #positive
  target tokens over the whole training set) so both classes weigh the same in total, plus
  ``--listwise`` x the cross-entropy between softmax(logits) over the tokens and the uniform
  distribution on the target tokens (samples with an empty target skip this term). Adam, learning rate
  ``--lr`` x 0.5(1 + cos(pi step / steps)), mini-batches of ``--batch-size`` samples drawn without
  replacement epoch by epoch.
* ``<out>.ckpt`` (every ``--ckpt-every`` steps and at the end): MLP, optimizer, step, RNG states, the
  epoch's sample order and position in it, and a fingerprint of the options and the data. ``--resume``
  continues from it exactly (same options required). ``--stop-after N`` ends a run at step N (only the
  checkpoint is written).

fit-text-projection — the ridge text→visual projection from annotated frames in the DAVIS layout
(``JPEGImages/480p/<seq>/*.jpg`` + ``Annotations/480p/<seq>/*.png``): one pair per (frame, labelled
object) = (CLIP embedding of the object's label, mean encoder token inside its mask).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fastsam2.runtime.args import bounded, finite_float, image_size, non_negative_int, positive
from fastsam2.runtime.config import CHECKPOINT_HELP, resolve_model
from fastsam2.runtime.errors import UsageError
from fastsam2.runtime.outdir import check_output_file
from fastsam2.runtime.frames import IMAGE_EXTENSIONS, FolderSource, read_image

VIDEO_EXTENSIONS = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v"})
CKPT_FORMAT = "fastsam2-router-train-1"


# ------------------------------------------------------------------------------------------------
# inputs
def router_output(path: str, *, protect: tuple) -> Path:
    """The ``--out`` router file, checked now: never an input, and an existing file is replaced only
    if it is a router file (fastsam2 never writes over a file it did not make)."""
    from fastsam2.runtime.router import RouterError, read_router_file

    out = check_output_file(path, protect=protect)
    if out.exists():
        try:
            read_router_file(out)
        except RouterError:
            raise UsageError(f"--out {path} exists and is not a router file; write the router elsewhere") from None
    return out


def _has_frames(folder: Path) -> bool:
    return any(p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".") for p in folder.iterdir())


def find_videos(root: str | Path) -> list[tuple[str, Path]]:
    """[(name, path)] of the videos under ``root`` (frame folders and video files, sorted by name)."""
    root = Path(root)
    if not root.is_dir():
        raise UsageError(f"videos folder not found: {root}")
    if _has_frames(root):
        return [(root.name, root)]
    found = []
    for p in sorted(root.iterdir()):
        if p.name.startswith("."):
            continue
        if p.is_dir() and _has_frames(p):
            found.append((p.name, p))
        elif p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS:
            found.append((p.stem, p))
    if not found:
        raise UsageError(f"no videos in {root} (frame folders of .jpg/.png, or video files)")
    return found


def read_json_labels(path: str | Path) -> dict[str, str]:
    """labels.json: {"<video or seq>/<obj_id>": "text"}, or nested {"<seq>": {"<obj_id>": "text"}} as
    ``fastsam2 synth`` writes it; returned flat."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"labels file not found: {path}")
    try:
        labels = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UsageError(f"cannot read labels {path}: {e}") from None
    if isinstance(labels, dict) and labels and all(isinstance(v, dict) for v in labels.values()):
        labels = {f"{seq}/{oid}": text for seq, objs in labels.items() for oid, text in objs.items()}
    if not isinstance(labels, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in labels.items()):
        raise UsageError(f'{path}: expected a JSON object {{"<seq>/<obj_id>": "text", ...}}')
    return labels


def read_texts(path: str | Path, labels: dict[str, str]):
    """The text embeddings of ``path``, checked to hold every label's text."""
    from fastsam2.runtime.text_embeddings import load_text_embeddings

    try:
        texts = load_text_embeddings(path)
    except ValueError as e:
        raise UsageError(str(e)) from None
    missing = sorted({t for t in labels.values() if t not in texts.texts})
    if missing:
        raise UsageError(f"{len(missing)} label texts are not in {path}, e.g. {missing[0]!r} (add them with fastsam2-export text)")
    return texts


def read_text_projection(path: str | Path):
    """The TextProjection stored in a router .safetensors file."""
    from fastsam2.calibration.projection import TextProjection

    from fastsam2.runtime.router import read_router_file

    weights = read_router_file(path)
    if weights.text_proj_weight is None:
        raise UsageError(f"{path} has no text projection (make one with fastsam2 fit-text-projection)")
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as f:
        meta = f.metadata() or {}
    return TextProjection.from_state_dict(
        {"text_proj.weight": weights.text_proj_weight, "text_proj.bias": weights.text_proj_bias}, meta
    )


def build_model(config: str | None, checkpoint: str | None, image_size: int | None):
    """(SAM2 model, torch backend). Random weights get object-score bias +5, else masks are empty."""
    try:
        from fastsam2.export.models import build_sam2

        from fastsam2.export.torch_backend import build_torch_backend
    except ImportError as e:
        raise UsageError(f"this command needs torch and sam2 (pip install fastsam2[export]): {e}") from None
    resolve_model(config, checkpoint)
    model = build_sam2(config, checkpoint, image_size=image_size,
                       object_score_bias=5.0 if checkpoint is None else None)
    return model, build_torch_backend(model)


# ------------------------------------------------------------------------------------------------
# samples
class SampleStore:
    """Router training samples: cues [7, HW] float32 and targets [HW] uint8, held in memory up to
    ``max_bytes`` and in a temporary directory beyond that."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.in_memory = 0
        self._items: list[tuple[np.ndarray, np.ndarray] | Path] = []
        self._tmp: tempfile.TemporaryDirectory | None = None
        self.digest = hashlib.sha256()
        self.positives = 0
        self.tokens = 0
        self.empty_targets = 0

    def __len__(self) -> int:
        return len(self._items)

    def add(self, cues: np.ndarray, target: np.ndarray) -> None:
        cues = np.ascontiguousarray(cues, np.float32)
        target = np.ascontiguousarray(target, np.uint8)
        self.digest.update(cues.tobytes())
        self.digest.update(target.tobytes())
        pos = int(target.sum())
        self.positives += pos
        self.tokens += target.size
        self.empty_targets += pos == 0
        size = cues.nbytes + target.nbytes
        if self.in_memory + size <= self.max_bytes:
            self._items.append((cues, target))
            self.in_memory += size
            return
        if self._tmp is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="fastsam2-router-")
        path = Path(self._tmp.name) / f"{len(self._items)}.npz"
        np.savez(path, cues=cues, target=target)
        self._items.append(path)

    def get(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        item = self._items[i]
        if isinstance(item, Path):
            with np.load(item) as d:
                return d["cues"], d["target"]
        return item

    @property
    def spilled(self) -> int:
        return sum(isinstance(x, Path) for x in self._items)

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


@dataclass
class CollectStats:
    videos: int = 0
    objects: int = 0
    frames: int = 0  # tracked frames (t >= 1), summed over videos
    per_video: dict[str, int] = field(default_factory=dict)  # objects seeded per video


def seed_objects(tracker, state, num: int, rng: np.random.Generator, area: tuple[float, float] = (0.001, 0.8)) -> list[int]:
    """Click candidates on frame 0 (centre, then random points in the central 80%) and keep the
    first ``num`` whose teacher mask covers area[0]..area[1] of the frame; returns their ids."""
    h, w = state.video_height, state.video_width
    accepted: list[int] = []
    for attempt in range(4 * num):
        if len(accepted) == num:
            break
        if attempt == 0:
            x, y = w / 2.0, h / 2.0
        else:
            x, y = rng.uniform(0.1 * w, 0.9 * w), rng.uniform(0.1 * h, 0.9 * h)
        oid = len(accepted) + 1
        _, ids, logits = tracker.add_new_points_or_box(state, 0, oid, points=[[x, y]], labels=[1])
        covered = float((logits[ids.index(oid), 0] > 0).mean())
        if area[0] <= covered <= area[1]:
            accepted.append(oid)
        else:
            tracker.remove_object(state, oid)
    return accepted


def collect_samples(
    backend,
    router,
    videos: list[tuple[str, Path]],
    *,
    frames_per_video: int,
    objects_per_video: int,
    seed: int,
    target_radius: int,
    text_vectors: dict[str, np.ndarray],
    store: SampleStore,
    area: tuple[float, float] = (0.001, 0.8),
) -> CollectStats:
    """Track seeded objects with the unpruned teacher and add one sample per (tracked frame, object)."""
    import torch
    from tqdm import tqdm

    from fastsam2.export.router import token_targets

    from fastsam2.runtime.frames import open_frames
    from fastsam2.runtime.tracker import SAM2Tracker, TrackerOptions

    tracker = SAM2Tracker(backend, TrackerOptions(keep_ratio=1.0, fill_hole_area=0, profile_stages=False))
    C, fs = backend.config.hidden_dim, backend.config.image_size // backend.config.backbone_stride
    stats = CollectStats()
    bar = tqdm(total=len(videos) * frames_per_video, unit="frame", desc="teacher", file=sys.stderr, disable=None)
    for vi, (name, path) in enumerate(videos):
        with open_frames(path) as source:
            state = tracker.init_state(source)
            rng = np.random.default_rng([seed, vi])
            obj_ids = seed_objects(tracker, state, objects_per_video, rng, area)
            stats.per_video[name] = len(obj_ids)
            bar.update(1)
            if not obj_ids:
                print(f"fastsam2 train-router: {name}: no candidate click gave a usable mask; skipped",
                      file=sys.stderr)
                bar.update(frames_per_video - 1)
                continue
            stats.videos += 1
            stats.objects += len(obj_ids)
            texts = {}
            for oid in obj_ids:
                vec = text_vectors.get(f"{name}/{oid}")
                texts[oid] = torch.from_numpy(np.zeros(C, np.float32) if vec is None else vec)[None]
            prev = {oid: state.objects[oid].output_at(0).pred_masks for oid in obj_ids}
            tracked = 0
            for t, _, _ in tracker.propagate_in_video(state, 0, frames_per_video - 1):
                if t == 0:
                    continue
                feats = state.cached.vision_feats
                stats.frames += 1
                tracked += 1
                with torch.no_grad():
                    for oid in obj_ids:
                        logits = state.objects[oid].output_at(t).pred_masks
                        cues = router.cues(feats, texts[oid], prev[oid])[0]
                        target = token_targets(logits, fs, target_radius)[0]
                        store.add(cues.numpy(), target.numpy())
                        prev[oid] = logits
                bar.update(1)
            bar.update(frames_per_video - 1 - tracked)
    bar.close()
    return stats


# ------------------------------------------------------------------------------------------------
# training
@dataclass
class TrainConfig:
    steps: int
    lr: float
    batch_size: int
    listwise: float
    seed: int
    ckpt_every: int
    stop_after: int | None = None


def router_loss(logits, targets, pos_weight: float, listwise: float):
    """(total, bce, listwise term) for logits [B,HW] and targets [B,HW] in {0,1}."""
    import torch
    import torch.nn.functional as F

    bce = F.binary_cross_entropy_with_logits(
        logits, targets, pos_weight=torch.tensor(pos_weight, dtype=logits.dtype)
    )
    has_pos = targets.sum(dim=1) > 0
    if listwise > 0 and bool(has_pos.any()):
        p = targets[has_pos] / targets[has_pos].sum(dim=1, keepdim=True)
        lw = -(p * F.log_softmax(logits[has_pos], dim=1)).sum(dim=1).mean()
    else:
        lw = logits.new_zeros(())
    return bce + listwise * lw, bce, lw


def _save_ckpt(path: Path, payload: dict) -> None:
    import torch

    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def train_mlp(router, store: SampleStore, cfg: TrainConfig, ckpt_path: Path, fingerprint: dict,
              resume: bool) -> dict:
    """Train ``router.mlp`` on ``store``; returns {"step", "loss", "bce", "listwise", "pos_weight"}."""
    import torch
    from tqdm import tqdm

    n = len(store)
    pos_weight = float(np.clip((store.tokens - store.positives) / max(store.positives, 1), 1.0, 1e4))
    params = list(router.mlp.parameters())
    opt = torch.optim.Adam(params, lr=cfg.lr)
    gen = np.random.default_rng(cfg.seed)
    step, perm, pos = 0, gen.permutation(n), 0
    last = {"loss": float("nan"), "bce": float("nan"), "listwise": float("nan")}
    if resume:
        if not ckpt_path.is_file():
            raise UsageError(f"--resume: no checkpoint {ckpt_path}")
        ck = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        if ck.get("format") != CKPT_FORMAT:
            raise UsageError(f"{ckpt_path} is not a train-router checkpoint")
        diff = sorted(k for k in set(fingerprint) | set(ck["fingerprint"]) if fingerprint.get(k) != ck["fingerprint"].get(k))
        if diff:
            raise UsageError(f"--resume: {ckpt_path} was made with other options or data (differs in: {', '.join(diff)})")
        router.mlp.load_state_dict(ck["mlp"])
        opt.load_state_dict(ck["optimizer"])
        step, perm, pos = ck["step"], np.asarray(ck["perm"]), ck["pos"]
        gen.bit_generator.state = ck["numpy_rng"]
        torch.set_rng_state(ck["torch_rng"])
        last = ck["last"]

    def checkpoint():
        _save_ckpt(ckpt_path, {
            "format": CKPT_FORMAT, "fingerprint": fingerprint, "mlp": router.mlp.state_dict(),
            "optimizer": opt.state_dict(), "step": step, "perm": perm, "pos": pos,
            "numpy_rng": gen.bit_generator.state, "torch_rng": torch.get_rng_state(), "last": last,
        })

    end = cfg.steps if cfg.stop_after is None else min(cfg.steps, cfg.stop_after)
    router.train()
    bar = tqdm(total=cfg.steps, initial=step, unit="step", desc="train", file=sys.stderr, disable=None)
    while step < end:
        if pos >= n:
            perm, pos = gen.permutation(n), 0
        idx = perm[pos : pos + cfg.batch_size]
        pos += len(idx)
        batch = [store.get(int(i)) for i in idx]
        cues = torch.from_numpy(np.stack([c for c, _ in batch]))  # [B,7,HW]
        targets = torch.from_numpy(np.stack([t for _, t in batch]).astype(np.float32))
        for g in opt.param_groups:
            g["lr"] = cfg.lr * 0.5 * (1.0 + math.cos(math.pi * step / cfg.steps))
        logits = router.mlp(cues.transpose(1, 2)).squeeze(-1)
        loss, bce, lw = router_loss(logits, targets, pos_weight, cfg.listwise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        last = {"loss": loss.detach().item(), "bce": bce.detach().item(), "listwise": lw.detach().item()}
        bar.update(1)
        bar.set_postfix(loss=f"{last['loss']:.4f}")
        if step % cfg.ckpt_every == 0 or step == end:
            checkpoint()
    bar.close()
    router.eval()
    return {"step": step, "pos_weight": pos_weight, **last}


DATA_KEYS = ("samples", "data_sha256")


def _fingerprint(args: argparse.Namespace, store: SampleStore | None, steps: int | None) -> dict:
    """What a resumed run must share with the checkpoint: options and (``store`` given) the data."""
    fp = {
        "config": args.config, "checkpoint": str(args.checkpoint), "image_size": args.image_size,
        "steps": steps, "lr": args.lr, "batch_size": args.batch_size, "listwise": args.listwise,
        "seed": args.seed, "frames_per_video": args.frames_per_video, "objects_per_video": args.objects_per_video,
        "target_radius": args.target_radius, "area": [args.min_area, args.max_area],
        "text_projection": str(args.text_projection), "labels": str(args.labels),
    }
    if store is not None:
        fp.update(samples=len(store), data_sha256=store.digest.hexdigest())
    return fp


def _check_resume_options(ckpt: Path, options: dict) -> None:
    """Refuse --resume before any work when the options differ from the checkpoint's."""
    import torch

    if not ckpt.is_file():
        raise UsageError(f"--resume: no checkpoint {ckpt}")
    saved = torch.load(ckpt, map_location="cpu", weights_only=False).get("fingerprint", {})
    keys = [k for k in options if k not in DATA_KEYS and not (k == "steps" and options[k] is None)]
    diff = [k for k in keys if saved.get(k) != options[k]]
    if diff:
        raise UsageError(f"--resume: {ckpt} was made with other options (differs in: {', '.join(diff)})")


def run_train_router(args: argparse.Namespace) -> int:
    """fastsam2 train-router."""
    for name in ("frames_per_video", "objects_per_video", "batch_size", "ckpt_every"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 1")
    if args.frames_per_video < 2:
        raise UsageError("--frames-per-video must be >= 2 (samples are the frames after the first)")
    if not 0.0 <= args.min_area < args.max_area <= 1.0:
        raise UsageError(f"need 0 <= --min-area < --max-area <= 1, got {args.min_area}, {args.max_area}")
    if args.steps is not None and args.epochs is not None:
        raise UsageError("give --steps or --epochs, not both")
    if not args.lr > 0:
        raise UsageError(f"--lr must be > 0, got {args.lr}")
    videos = find_videos(args.videos)
    out = router_output(args.out, protect=(args.checkpoint, args.texts, args.labels, args.text_projection))
    labels = read_json_labels(args.labels) if args.labels else {}
    if labels and not (args.texts and args.text_projection):
        raise UsageError("--labels needs --texts FILE.npz and --text-projection FILE (made by fit-text-projection)")
    proj = read_text_projection(args.text_projection) if args.text_projection else None
    text_vectors: dict[str, np.ndarray] = {}
    if labels:
        texts = read_texts(args.texts, labels)
        if texts.dim != proj.text_dim:
            raise UsageError(f"{args.texts} has {texts.dim}-d embeddings, the projection expects {proj.text_dim}")
        text_vectors = {k: proj.apply(texts.get(v)) for k, v in labels.items()}

    ckpt = Path(f"{out}.ckpt")
    if args.resume:
        _check_resume_options(ckpt, _fingerprint(args, None, args.steps))
    model, backend = build_model(args.config, args.checkpoint, args.image_size)
    import torch

    from fastsam2.export.router import TokenRouter, save_router

    torch.manual_seed(args.seed)
    router = TokenRouter.for_model(model).eval()
    store = SampleStore(int(args.cache_mb * 2**20))
    try:
        t0 = time.perf_counter()
        stats = collect_samples(
            backend, router, videos, frames_per_video=args.frames_per_video,
            objects_per_video=args.objects_per_video, seed=args.seed, target_radius=args.target_radius,
            text_vectors=text_vectors, store=store, area=(args.min_area, args.max_area),
        )
        if len(store) == 0:
            raise UsageError("no training samples: no seeded object could be tracked (see messages above)")
        print(f"collected {len(store)} samples ({stats.frames} tracked frames x objects of {stats.videos} "
              f"videos, {stats.objects} objects; {store.positives} of {store.tokens} target tokens positive, "
              f"{store.empty_targets} empty targets; {store.spilled} samples on disk) in "
              f"{time.perf_counter() - t0:.0f} s", file=sys.stderr)
        steps = args.steps if args.steps is not None else (args.epochs or 10) * math.ceil(len(store) / args.batch_size)
        cfg = TrainConfig(steps=steps, lr=args.lr, batch_size=args.batch_size, listwise=args.listwise,
                          seed=args.seed, ckpt_every=args.ckpt_every, stop_after=args.stop_after)
        result = train_mlp(router, store, cfg, ckpt, _fingerprint(args, store, steps), args.resume)
    finally:
        store.close()
    if result["step"] < steps:
        print(f"stopped at step {result['step']} of {steps} (loss {result['loss']:.4f}); continue with --resume "
              f"(checkpoint {ckpt})", file=sys.stderr)
        return 0
    save_router(out, router, proj)
    print(f"wrote {out}: final loss {result['loss']:.4f} (bce {result['bce']:.4f}, listwise {result['listwise']:.4f}, "
          f"pos_weight {result['pos_weight']:.2f}) after {steps} steps on {len(store)} samples "
          f"({stats.frames} frames, {stats.objects} objects, {stats.videos} videos; "
          f"{store.positives} positive target tokens of {store.tokens})", file=sys.stderr)
    return 0


# ------------------------------------------------------------------------------------------------
# fit-text-projection
def davis_frames(root: str | Path) -> list[tuple[str, Path, Path]]:
    """[(sequence, frame file, annotation .png)] of a DAVIS-layout dataset, in frame order."""
    from fastsam2.runtime.evaluation import davis_layout, mask_files

    root = Path(root)
    if not root.is_dir():
        raise UsageError(f"dataset folder not found: {root}")
    img_root, ann_root = davis_layout(root)
    out = []
    for seq in sorted(p for p in ann_root.iterdir() if p.is_dir()):
        frames = {f.stem: f for f in FolderSource(img_root / seq.name).files} if (img_root / seq.name).is_dir() else {}
        for png in mask_files(seq):
            if png.stem not in frames:
                raise UsageError(f"annotation {png} has no frame in {img_root / seq.name}")
            out.append((seq.name, frames[png.stem], png))
    if not out:
        raise UsageError(f"no annotated frames in {ann_root}")
    return out


def run_fit_text_projection(args: argparse.Namespace) -> int:
    """fastsam2 fit-text-projection."""
    from tqdm import tqdm

    from fastsam2.runtime.evaluation import read_object_ids

    frames = davis_frames(args.dataset)
    labels = read_json_labels(args.labels)
    texts = read_texts(args.texts, labels)
    out = router_output(args.out, protect=(args.labels, args.texts))
    if not args.ridge >= 0:
        raise UsageError(f"--ridge must be >= 0, got {args.ridge}")
    if args.every < 1:
        raise UsageError("--every must be >= 1")
    from fastsam2.calibration.projection import PairCollector, mean_token_in_mask
    from fastsam2.export.router import TokenRouter, load_router, save_router

    from fastsam2.runtime.tracker import SAM2Tracker

    model, backend = build_model(args.config, args.checkpoint, args.image_size)
    router = load_router(args.router, model) if args.router else TokenRouter.for_model(model).eval()
    tracker = SAM2Tracker(backend)
    collector = PairCollector()
    unlabeled, too_small, used_frames = 0, 0, 0
    counters: dict[str, int] = {}
    for i, (seq, jpg, png) in enumerate(tqdm(frames, unit="frame", desc="pairs", file=sys.stderr, disable=None)):
        counters[seq] = counters.get(seq, -1) + 1
        if counters[seq] % args.every:
            continue
        ids = read_object_ids(png)
        objects = [int(o) for o in np.unique(ids) if o not in (0, 255)]
        keys = [(o, f"{seq}/{o}") for o in objects]
        unlabeled += sum(k not in labels for _, k in keys)
        keys = [(o, k) for o, k in keys if k in labels]
        if not keys:
            continue
        image = read_image(jpg)
        if image.shape[:2] != ids.shape:
            raise UsageError(f"{png} is {ids.shape[1]}x{ids.shape[0]} but {jpg} is {image.shape[1]}x{image.shape[0]}")
        feats = tracker.ops.to_numpy(tracker.encode_image(image, i).vision_feats)[0]
        used_frames += 1
        for o, key in keys:
            try:
                visual = mean_token_in_mask(feats, ids == o)
            except ValueError:  # the mask covers no token cell by half
                too_small += 1
                continue
            collector.add(texts.get(labels[key]), visual)
    try:
        proj = collector.fit(ridge=args.ridge)
    except ValueError as e:
        raise UsageError(f"{e} (labels.json keys are '<seq>/<obj_id>')") from None
    save_router(out, router, proj)
    print(f"wrote {out}: text projection [{proj.text_dim} -> {proj.visual_dim}] fitted on {proj.num_pairs} pairs "
          f"from {used_frames} frames (ridge {args.ridge}; skipped {unlabeled} unlabelled objects, {too_small} "
          f"masks smaller than a token); router weights: {args.router or 'default'}", file=sys.stderr)
    return 0


# ------------------------------------------------------------------------------------------------
def add_parser(subparsers) -> None:
    """Register ``train-router`` and ``fit-text-projection``."""
    p = subparsers.add_parser("train-router", help="train the token router by self-distillation (no annotations)")
    p.add_argument("--videos", required=True, help="folder of videos: frame sub-folders and/or video files")
    p.add_argument("--config", default=None, help="SAM2 config (tiny, small, base_plus, large, sam2.0-..., a .yaml; "
                   "default: tiny, or the --checkpoint model's)")
    p.add_argument("--checkpoint", default=None, help=CHECKPOINT_HELP)
    p.add_argument("--out", required=True, help="router weights to write (.safetensors)")
    p.add_argument("--image-size", type=image_size, default=None, help="model input size (default 1024)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--steps", type=positive(int), default=None, help="optimizer steps")
    g.add_argument("--epochs", type=positive(int), default=None, help="passes over the samples (default 10)")
    p.add_argument("--lr", type=positive(float), default=1e-2, help="peak learning rate (cosine schedule to 0)")
    p.add_argument("--batch-size", type=positive(int), default=8, help="samples per step")
    p.add_argument("--listwise", type=bounded(float, low=0), default=0.1, help="weight of the listwise softmax term (0: BCE only)")
    p.add_argument("--frames-per-video", type=positive(int), default=32)
    p.add_argument("--objects-per-video", type=positive(int), default=3)
    p.add_argument("--min-area", type=finite_float, default=0.001, help="a seeded object's mask covers at least this fraction")
    p.add_argument("--max-area", type=finite_float, default=0.8, help="... and at most this fraction of the first frame")
    p.add_argument("--target-radius", type=non_negative_int, default=1, help="target = teacher mask dilated by this many tokens")
    p.add_argument("--texts", default=None, help="text embeddings .npz (with --labels)")
    p.add_argument("--labels", default=None, help='JSON {"<video>/<obj_id>": "text"} for the seeded objects')
    p.add_argument("--text-projection", default=None, help="router .safetensors holding a text projection")
    p.add_argument("--cache-mb", type=bounded(float, low=0), default=1024, help="samples held in memory; the rest go to a temp dir")
    p.add_argument("--ckpt-every", type=positive(int), default=100, help="write <out>.ckpt every N steps")
    p.add_argument("--resume", action="store_true", help="continue from <out>.ckpt")
    p.add_argument("--stop-after", type=positive(int), default=None, help="end this run at step N (checkpoint only)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run_train_router)

    q = subparsers.add_parser("fit-text-projection", help="fit the router's text->visual projection (DAVIS layout)")
    q.add_argument("--dataset", required=True, help="DAVIS-layout root (JPEGImages/480p, Annotations/480p)")
    q.add_argument("--labels", required=True, help='JSON {"<seq>/<obj_id>": "text"}')
    q.add_argument("--texts", required=True, help="text embeddings .npz holding every label")
    q.add_argument("--config", default=None)
    q.add_argument("--checkpoint", default=None, help=CHECKPOINT_HELP)
    q.add_argument("--image-size", type=image_size, default=None)
    q.add_argument("--router", default=None, help="router weights to keep (default: the hand-set weights)")
    q.add_argument("--out", required=True, help="router .safetensors to write (router + projection)")
    q.add_argument("--ridge", type=bounded(float, low=0), default=0.01)
    q.add_argument("--every", type=positive(int), default=1, help="use every N-th annotated frame of a sequence")
    q.set_defaults(func=run_fit_text_projection)

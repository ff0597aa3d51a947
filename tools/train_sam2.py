"""Train a SAM2 (any config, e.g. the shipped ``synthetic`` fixture's) from random weights on generated
clips (:func:`fastsam2.runtime.synth.make_clip`), with SAM2's video objectives.

    python -m fastsam2.tools.train_sam2 --config synthetic --out runs/syn --minutes 9 --seed 0

Recipe (after sam2's ``training/model/sam2.py`` SAM2Train and ``training/loss_fns.py``
MultiStepMultiMasksAndIous, written here compactly):

* A batch is ``--batch`` clips of ``--frames`` frames at the config's image size; each clip contributes
  up to ``--objects`` of its annotated targets (every target is visible on frame 0 by construction).
  All frames go through the image encoder once; each object is then rolled out frame by frame through
  SAM2's own ``_track_step`` (memory attention over the memory bank, SAM heads, memory encoder), with
  gradients through the whole rollout.
* Frame 0 is the conditioning frame. Its prompt is drawn per batch: a GT mask (``--p-mask``), else a
  box with noise (``--p-box`` of the rest) or one click uniform inside the object, followed by up to
  ``--corrections`` corrective clicks, each drawn from the error region of the previous prediction
  (positive on a miss, negative on a false alarm) and fed with the previous low-res logits.
* With probability ``--p-correct`` one later frame gets a corrective click too.
* Loss per prediction (every correction step counts): ``20 x`` sigmoid focal (alpha 0.25, gamma 2)
  ``+ 1 x`` dice on the multimask output with the lowest focal+dice (best of k), ``+ 1 x`` L1 between
  the predicted IoUs of all k masks and their real IoUs, ``+ 1 x`` BCE of the object score against
  "the object is visible"; mask, dice and IoU terms count only where the object is visible.
* AdamW (``--lr``, weight decay 0.05), linear warm-up then cosine decay over the run, gradient-norm clip
  1.0, bf16 autocast on CUDA. The run ends after ``--steps`` or ``--minutes`` (whichever first); the
  cosine schedule follows the step budget estimated from the first steps' speed when only minutes
  are given.
* Data: a torch DataLoader with ``--workers`` processes generates the clips (clip ``i`` of the run is
  ``make_clip(seed, split="train", index=i)``), so the stream is fixed by ``--seed``.

Outputs in ``--out``: ``model.safetensors`` (fp16 state dict), ``train_log.json`` (options, loss and J
curves, speed, the held-out evaluation) and, with ``--ckpt``, a resumable checkpoint. The held-out
evaluation tracks ``--eval-clips`` clips of the ``hard`` split with fastsam2's own tracker (torch
backend, keep 1.0, first-frame GT masks as prompts) and scores them with
:mod:`fastsam2.runtime.evaluation` (J&F).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from fastsam2.runtime.args import ArgumentParser, bounded, cli_main, image_size, non_negative_int, positive
from fastsam2.runtime.errors import UsageError

PROG = "fastsam2-train-sam2"
FOCAL_ALPHA, FOCAL_GAMMA = 0.25, 2.0
W_FOCAL, W_DICE, W_IOU, W_OBJ = 20.0, 1.0, 1.0, 1.0
CKPT_FORMAT = "fastsam2-sam2-train-1"


def build_parser() -> argparse.ArgumentParser:
    unit = bounded(float, low=0.0)
    p = ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="output directory (created; must not exist unless --resume)")
    p.add_argument("--config", default="synthetic", help="SAM2 config name or .yaml path (default: synthetic)")
    p.add_argument("--image-size", type=image_size, default=None,
                   help="train and evaluate at this input size (default: the config's)")
    p.add_argument("--seed", type=non_negative_int, default=0, help="fixes the weights' init, the data and the prompts")
    p.add_argument("--minutes", type=positive(float), default=None, help="wall-clock budget of the training loop")
    p.add_argument("--steps", type=positive(int), default=None, help="number of optimizer steps")
    p.add_argument("--batch", type=positive(int), default=16, help="clips per step (default 16)")
    p.add_argument("--frames", type=bounded(int, low=2), default=8, help="frames per clip (default 8)")
    p.add_argument("--objects", type=positive(int), default=2, help="targets per clip at most (default 2)")
    p.add_argument("--lr", type=positive(float), default=5e-4)
    p.add_argument("--warmup", type=non_negative_int, default=100, help="warm-up steps (default 100)")
    p.add_argument("--p-mask", type=unit, default=0.2, help="probability of a mask prompt (default 0.2)")
    p.add_argument("--p-box", type=unit, default=0.5, help="probability of a box, when not a mask (default 0.5)")
    p.add_argument("--corrections", type=non_negative_int, default=2,
                   help="corrective clicks on frame 0 at most, after a click/box (default 2)")
    p.add_argument("--p-correct", type=unit, default=0.5, help="probability of a corrective click on a later frame")
    p.add_argument("--workers", type=non_negative_int, default=None, help="data-loader processes (default: cores - 2)")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available)")
    p.add_argument("--log-every", type=positive(int), default=25)
    p.add_argument("--eval-clips", type=non_negative_int, default=16, help="held-out hard clips tracked at the end")
    p.add_argument("--eval-frames", type=bounded(int, low=3), default=24)
    p.add_argument("--eval-seed", type=non_negative_int, default=1000)
    p.add_argument("--ckpt", default=None, help="write a resumable checkpoint here at the end")
    p.add_argument("--resume", default=None, help="continue from a checkpoint written by --ckpt")
    p.add_argument("--init", default=None,
                   help="start from these weights (.safetensors/.pt or a shipped model name, e.g. synthetic) "
                        "with a fresh optimizer and schedule, instead of random weights")
    return p


# -- data --------------------------------------------------------------------------------------------
class ClipStream:
    """Map-style dataset: item ``i`` is ``make_clip(seed, split="train", index=i)`` as tensors
    ``frames`` uint8 [T, 3, S, S], ``masks`` uint8 [T, S, S] (object ids)."""

    def __init__(self, seed: int, frames: int, size: int):
        self.seed, self.frames, self.size = seed, frames, size

    def __len__(self) -> int:
        return 1 << 40

    def __getitem__(self, i: int):
        import torch

        from fastsam2.runtime.synth import make_clip

        clip = make_clip(self.seed, split="train", frames=self.frames, size=self.size, index=int(i))
        frames = torch.from_numpy(np.ascontiguousarray(clip.frames.transpose(0, 3, 1, 2)))
        return frames, torch.from_numpy(clip.masks)


class _FromIndex:
    """Sequential indices from ``start`` (a resumed run continues the clip stream)."""

    def __init__(self, start: int):
        self.start = start

    def __iter__(self):
        i = self.start
        while True:
            yield i
            i += 1

    def __len__(self) -> int:
        return 1 << 40


# -- losses ------------------------------------------------------------------------------------------
def mask_losses(logits, gt):
    """Per-mask focal and dice losses: logits [N, M, H, W] float32, gt [N, 1, H, W] {0, 1} float32
    -> (focal [N, M], dice [N, M])."""
    import torch.nn.functional as F

    gt = gt.expand_as(logits)
    prob = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, gt, reduction="none")
    p_t = prob * gt + (1 - prob) * (1 - gt)
    focal = ce * (1 - p_t) ** FOCAL_GAMMA
    focal = (FOCAL_ALPHA * gt + (1 - FOCAL_ALPHA) * (1 - gt)) * focal
    focal = focal.flatten(2).mean(-1)
    num = 2 * (prob * gt).flatten(2).sum(-1)
    den = prob.flatten(2).sum(-1) + gt.flatten(2).sum(-1)
    dice = 1 - (num + 1) / (den + 1)
    return focal, dice


def prediction_loss(multimasks, ious, obj_logits, gt):
    """SAM2's loss of one prediction step. multimasks [N, M, H, W] high-res logits, ious [N, M],
    obj_logits [N, 1], gt [N, 1, H, W] -> (scalar loss, dict of scalar terms)."""
    import torch
    import torch.nn.functional as F

    multimasks, ious, obj_logits = multimasks.float(), ious.float(), obj_logits.float()
    visible = (gt.flatten(1).sum(1) > 0).float()  # [N]
    focal, dice = mask_losses(multimasks, gt)
    best = (W_FOCAL * focal + W_DICE * dice).argmin(1, keepdim=True)
    focal_b, dice_b = focal.gather(1, best)[:, 0], dice.gather(1, best)[:, 0]
    with torch.no_grad():
        pred = multimasks > 0
        g = gt > 0.5
        inter = (pred & g).flatten(2).sum(-1).float()
        union = (pred | g).flatten(2).sum(-1).float()
        real_iou = inter / union.clamp(min=1.0)
    iou_l1 = (ious - real_iou).abs().mean(1)
    obj = F.binary_cross_entropy_with_logits(obj_logits[:, 0], visible, reduction="none")
    n = max(1, gt.shape[0])
    terms = {
        "focal": (focal_b * visible).sum() / n,
        "dice": (dice_b * visible).sum() / n,
        "iou": (iou_l1 * visible).sum() / n,
        "obj": obj.sum() / n,
    }
    loss = W_FOCAL * terms["focal"] + W_DICE * terms["dice"] + W_IOU * terms["iou"] + W_OBJ * terms["obj"]
    return loss, terms


# -- prompts -----------------------------------------------------------------------------------------
def sample_points(region, gen):
    """One pixel per row, uniform in ``region`` bool [N, H, W] (rows with an empty region: the centre)
    -> (xy float32 [N, 2], found bool [N])."""
    import torch

    N, H, W = region.shape
    flat = region.flatten(1).float()
    found = flat.sum(1) > 0
    weights = torch.where(found[:, None], flat, torch.ones_like(flat))
    idx = torch.multinomial(weights, 1, generator=gen)[:, 0]
    xy = torch.stack([(idx % W).float() + 0.5, (idx // W).float() + 0.5], 1)
    return xy, found


def box_prompt(gt, gen):
    """Noisy boxes around gt bool [N, H, W] as SAM2 point inputs (labels 2, 3): coords [N, 2, 2]."""
    import torch

    N, H, W = gt.shape
    ys = gt.any(2)
    xs = gt.any(1)
    ar_y = torch.arange(H, device=gt.device)
    ar_x = torch.arange(W, device=gt.device)
    y0 = torch.where(ys, ar_y, H).min(1).values.float()
    y1 = torch.where(ys, ar_y, -1).max(1).values.float() + 1
    x0 = torch.where(xs, ar_x, W).min(1).values.float()
    x1 = torch.where(xs, ar_x, -1).max(1).values.float() + 1
    box = torch.stack([x0, y0, x1, y1], 1)
    # SAM2's box noise: up to 10% of the side, at most 20 px at 1024 (scaled to the image size)
    side = torch.stack([x1 - x0, y1 - y0, x1 - x0, y1 - y0], 1)
    cap = 20.0 * W / 1024
    noise = (torch.rand(box.shape, generator=gen, device=gt.device) * 2 - 1) * torch.clamp(0.1 * side, max=cap)
    box = box + noise
    box[:, 0::2] = box[:, 0::2].clamp(0, W)
    box[:, 1::2] = box[:, 1::2].clamp(0, H)
    coords = box.view(N, 2, 2)
    labels = torch.tensor([2, 3], dtype=torch.int32, device=gt.device).expand(N, 2).contiguous()
    return coords, labels


def corrective_click(pred, gt, gen):
    """A click in the error region of ``pred`` vs ``gt`` (bool [N, H, W]): positive where the object is
    missed, negative on a false alarm -> (xy [N, 1, 2], labels int32 [N, 1])."""
    import torch

    err = pred ^ gt
    xy, found = sample_points(err, gen)
    xi, yi = xy[:, 0].long().clamp(max=gt.shape[2] - 1), xy[:, 1].long().clamp(max=gt.shape[1] - 1)
    inside = gt[torch.arange(gt.shape[0], device=gt.device), yi, xi]
    # no error left: a positive click inside the object (or anywhere, if it is absent)
    labels = torch.where(found, inside, torch.ones_like(inside)).int()
    return xy[:, None], labels[:, None]


# -- one rollout --------------------------------------------------------------------------------------
def rollout(model, frames, masks, opts, rng: np.random.Generator, gen):
    """Forward one batch: frames uint8 [B, T, 3, S, S] and masks uint8 [B, T, S, S] on the model's
    device. Returns (loss, terms dict, J per frame [T] of the masks the tracker would output)."""
    import torch

    B, T = frames.shape[:2]
    S = model.image_size
    dev = frames.device
    # objects: up to opts.objects targets of each clip, all visible on frame 0
    clip_idx, obj_ids = [], []
    masks_np = masks[:, 0].flatten(1)
    for b in range(B):
        ids = [int(i) for i in torch.unique(masks_np[b]).tolist() if i != 0]
        rng.shuffle(ids)
        for oid in ids[: opts.objects]:
            clip_idx.append(b)
            obj_ids.append(oid)
    if not obj_ids:
        return None
    clip_t = torch.tensor(clip_idx, device=dev)
    gt_all = (masks[clip_t] == torch.tensor(obj_ids, device=dev)[:, None, None, None])  # [N, T, S, S]
    N = len(obj_ids)

    mean = torch.tensor(model_mean(), device=dev).view(1, 3, 1, 1)
    std = torch.tensor(model_std(), device=dev).view(1, 3, 1, 1)
    img = frames.transpose(0, 1).reshape(T * B, 3, S, S).float().div_(255).sub_(mean).div_(std)  # frame-major
    backbone_out = model.forward_image(img)
    _, vision_feats, vision_pos, feat_sizes = model._prepare_backbone_features(backbone_out)

    mode = "mask" if rng.random() < opts.p_mask else ("box" if rng.random() < opts.p_box else "click")
    n_corr0 = 0 if mode == "mask" else int(rng.integers(0, opts.corrections + 1))
    corr_frame = int(rng.integers(1, T)) if rng.random() < opts.p_correct else -1

    output_dict = {"cond_frame_outputs": {}, "non_cond_frame_outputs": {}}
    losses, terms_sum, n_pred = [], {}, 0
    j_frames = []
    for t in range(T):
        rows = t * B + clip_t
        feats = [x[:, rows] for x in vision_feats]
        pos = [x[:, rows] for x in vision_pos]
        gt = gt_all[:, t]
        gt_f = gt[:, None].float()
        point_inputs, mask_inputs = None, None
        if t == 0:
            if mode == "mask":
                mask_inputs = gt_f
            elif mode == "box":
                coords, labels = box_prompt(gt, gen)
                point_inputs = {"point_coords": coords, "point_labels": labels}
            else:
                xy, _ = sample_points(gt, gen)
                point_inputs = {"point_coords": xy[:, None],
                                "point_labels": torch.ones(N, 1, dtype=torch.int32, device=dev)}
        current_out, sam_outputs, high_res_features, pix_feat = model._track_step(
            t, t == 0, feats, pos, feat_sizes, point_inputs, mask_inputs, output_dict, T, False, None
        )
        steps = [sam_outputs]
        n_corr = n_corr0 if t == 0 else (1 if t == corr_frame else 0)
        for _ in range(n_corr):
            _, _, _, low_res, high_res, _, _ = steps[-1]
            xy, lab = corrective_click(high_res[:, 0] > 0, gt, gen)
            if point_inputs is None:
                point_inputs = {"point_coords": xy, "point_labels": lab}
            else:
                point_inputs = {"point_coords": torch.cat([point_inputs["point_coords"], xy], 1),
                                "point_labels": torch.cat([point_inputs["point_labels"], lab], 1)}
            steps.append(model._forward_sam_heads(
                backbone_features=pix_feat, point_inputs=point_inputs, mask_inputs=low_res,
                high_res_features=high_res_features,
                multimask_output=model._use_multimask(t == 0, point_inputs),
            ))
        if mode != "mask" or t > 0:
            for low_multi, high_multi, ious, _, _, _, obj_logits in steps:
                loss, terms = prediction_loss(high_multi, ious, obj_logits, gt_f)
                losses.append(loss)
                n_pred += 1
                for k, v in terms.items():
                    terms_sum[k] = terms_sum.get(k, 0.0) + float(v.detach())
        _, _, _, low_res, high_res, obj_ptr, obj_logits = steps[-1]
        current_out["pred_masks"] = low_res
        current_out["pred_masks_high_res"] = high_res
        current_out["obj_ptr"] = obj_ptr
        current_out["object_score_logits"] = obj_logits
        model._encode_memory_in_output(feats, feat_sizes, point_inputs, True, high_res, obj_logits, current_out)
        output_dict["cond_frame_outputs" if t == 0 else "non_cond_frame_outputs"][t] = current_out
        with torch.no_grad():
            pred = high_res[:, 0] > 0
            inter = (pred & gt).flatten(1).sum(1).float()
            union = (pred | gt).flatten(1).sum(1).float()
            j_frames.append(torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union)).mean())
    loss = torch.stack(losses).mean()
    terms = {k: v / max(1, n_pred) for k, v in terms_sum.items()}
    terms["prompt"] = mode
    return loss, terms, torch.stack(j_frames)


def model_mean() -> tuple[float, float, float]:
    from fastsam2.runtime.config import ModelConfig

    return ModelConfig().img_mean


def model_std() -> tuple[float, float, float]:
    from fastsam2.runtime.config import ModelConfig

    return ModelConfig().img_std


# -- held-out evaluation ------------------------------------------------------------------------------
def evaluate_hard(model, *, clips: int, frames: int, seed: int, device: str) -> dict:
    """J&F of fastsam2's tracker (torch backend, keep 1.0, first-frame GT masks) on ``clips`` clips of
    the hard split; returns the EvalReport as a dict plus the seconds it took."""
    from fastsam2.export.torch_backend import build_torch_backend
    from fastsam2.runtime.evaluation import EvalReport, evaluate_sequence
    from fastsam2.runtime.synth import make_clip
    from fastsam2.runtime.tracker import Prompt, SAM2Tracker, TrackerOptions

    t0 = time.time()
    model.eval()
    backend = build_torch_backend(model)
    objects = []
    for i in range(clips):
        clip = make_clip(seed, split="hard", frames=frames, size=model.image_size, index=i)
        ids = sorted(int(k) for k in clip.labels)
        tracker = SAM2Tracker(backend, TrackerOptions(profile_stages=False))
        pred = {oid: [] for oid in ids}
        for t in range(clip.frames.shape[0]):
            prompts = {oid: Prompt(mask=clip.masks[0] == oid) for oid in ids} if t == 0 else None
            res = tracker.track(clip.frames[t], prompts)
            masks = res.masks
            for oid in ids:
                pred[oid].append(masks[oid])
        gt = {oid: clip.masks == oid for oid in ids}
        objects += evaluate_sequence(gt, {k: np.stack(v) for k, v in pred.items()}, sequence=clip.name)
    report = EvalReport.from_objects(objects)
    out = json.loads(report.to_json())
    out["seconds"] = round(time.time() - t0, 1)
    out["clips"], out["frames"], out["seed"], out["split"] = clips, frames, seed, "hard"
    out["prompt"] = "first-frame ground-truth masks"
    return out


# -- the run ----------------------------------------------------------------------------------------
def save_weights(model, path: Path) -> None:
    """The state dict as fp16 safetensors (what ``--checkpoint`` loads back as float32)."""
    from safetensors.torch import save_file

    state = {k: v.detach().to("cpu").half().contiguous() if v.is_floating_point() else v.detach().cpu().contiguous()
             for k, v in model.state_dict().items()}
    save_file(state, str(path), metadata={"format": "pt", "producer": "fastsam2.tools.train_sam2"})


def run(args: argparse.Namespace) -> int:
    import os

    import torch

    from fastsam2.export.models import build_sam2

    if args.steps is None and args.minutes is None:
        raise UsageError("give --steps, --minutes or both")
    if args.resume and not Path(args.resume).is_file():
        raise UsageError(f"--resume: file not found: {args.resume}")
    if args.resume and args.init:
        raise UsageError("--init and --resume exclude each other (a checkpoint carries its own weights)")
    out = Path(args.out)
    if out.exists() and args.resume is None:
        raise UsageError(f"--out {out} exists")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(args.seed)
    model = build_sam2(args.config, args.init, device=device, seed=args.seed, quiet=True, image_size=args.image_size)
    model.train()
    decay = [p for n, p in model.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.999))
    rng = np.random.default_rng([args.seed, 1])
    gen = torch.Generator(device=device)
    gen.manual_seed(args.seed)
    step, log, elapsed_before, total_steps = 0, [], 0.0, args.steps
    if args.resume:
        ck = torch.load(args.resume, map_location="cpu", weights_only=False)
        if ck.get("format") != CKPT_FORMAT:
            raise UsageError(f"--resume {args.resume}: not a train_sam2 checkpoint")
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        step, log, elapsed_before = ck["step"], ck["log"], ck["elapsed"]
        # a given --steps extends (or ends) the run; else the schedule the first run chose holds
        total_steps = args.steps if args.steps is not None else ck["total_steps"]
        rng.bit_generator.state = ck["rng"]
        gen.set_state(ck["gen"].to(gen.get_state().device) if hasattr(ck["gen"], "to") else ck["gen"])
    out.mkdir(parents=True, exist_ok=True)
    S = model.image_size
    workers = args.workers if args.workers is not None else max(0, (os.cpu_count() or 2) - 2)
    loader = torch.utils.data.DataLoader(
        ClipStream(args.seed, args.frames, S), batch_size=args.batch,
        sampler=_FromIndex(step * args.batch), num_workers=workers,
        pin_memory=device.startswith("cuda"), prefetch_factor=4 if workers else None,
        persistent_workers=bool(workers),
    )
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.startswith("cuda") else torch.autocast(
        "cpu", enabled=False)
    t_start = time.time()
    budget_s = None if args.minutes is None else args.minutes * 60 - elapsed_before
    first_steps_t = None
    n_params = sum(p.numel() for p in model.parameters())
    print(f"{PROG}: {args.config} ({n_params / 1e6:.2f} M parameters) on {device}, "
          f"{workers} data workers", file=sys.stderr, flush=True)
    data_wait = 0.0
    t_wait = time.time()
    for frames, masks in loader:
        data_wait += time.time() - t_wait
        now = time.time() - t_start
        if total_steps is not None and step >= total_steps:
            break
        if budget_s is not None and now >= budget_s:
            break
        if total_steps is None and step == 20:
            first_steps_t = now
        if total_steps is None and step == 60:
            # the schedule's length from the speed of steps 20..60
            per_step = (now - first_steps_t) / 40
            total_steps = step + int((budget_s - now) / per_step)
            print(f"{PROG}: {per_step:.3f} s/step -> {total_steps} steps", file=sys.stderr, flush=True)
        sched_total = total_steps or 10**9
        lr = args.lr * min(1.0, (step + 1) / max(1, args.warmup))
        if step >= args.warmup and total_steps is not None:
            lr = args.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, (step - args.warmup) / max(1, sched_total - args.warmup))))
        for g in opt.param_groups:
            g["lr"] = lr
        frames = frames.to(device, non_blocking=True)
        masks = masks.to(device, non_blocking=True)
        with autocast:
            result = rollout(model, frames, masks, args, rng, gen)
        if result is None:
            continue
        loss, terms, j = result
        if not torch.isfinite(loss.detach()):
            raise FloatingPointError(f"the loss is {float(loss.detach())} at step {step}: training diverged")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        if step % args.log_every == 0 or step == 1:
            rec = {"step": step, "s": round(elapsed_before + time.time() - t_start, 1), "lr": lr,
                   "loss": round(float(loss.detach()), 4), "grad_norm": round(float(gnorm), 3),
                   "J_frame0": round(float(j[0]), 4), "J_later": round(float(j[1:].mean()), 4),
                   "data_wait_s": round(data_wait, 1),
                   **{k: (round(v, 5) if isinstance(v, float) else v) for k, v in terms.items()}}
            log.append(rec)
            print(json.dumps(rec), file=sys.stderr, flush=True)
        t_wait = time.time()
    train_s = elapsed_before + time.time() - t_start
    save_weights(model, out / "model.safetensors")
    if args.ckpt:
        torch.save({"format": CKPT_FORMAT, "model": model.state_dict(), "opt": opt.state_dict(), "step": step,
                    "log": log, "elapsed": train_s, "total_steps": total_steps,
                    "rng": rng.bit_generator.state, "gen": gen.get_state()}, args.ckpt)
    result = {"options": {k: v for k, v in vars(args).items() if k != "func"}, "argv": sys.argv,
              "device": torch.cuda.get_device_name() if device.startswith("cuda") else "cpu",
              "parameters": n_params, "steps": step, "train_seconds": round(train_s, 1), "log": log}
    if args.eval_clips:
        with torch.no_grad():
            result["eval"] = evaluate_hard(model, clips=args.eval_clips, frames=args.eval_frames,
                                           seed=args.eval_seed, device=device)
        print(f"{PROG}: held-out J&F {result['eval']['jf_mean']:.4f} "
              f"(J {result['eval']['j_mean']:.4f}, F {result['eval']['f_mean']:.4f})", file=sys.stderr)
    (out / "train_log.json").write_text(json.dumps(result, indent=1))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return cli_main(PROG, build_parser(), argv, run=run)


if __name__ == "__main__":
    sys.exit(main())

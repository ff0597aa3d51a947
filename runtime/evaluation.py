"""DAVIS 2017 semi-supervised evaluation: region similarity J, boundary F-measure and J&F.

Re-implemented from the definitions of the official ``davis2017-evaluation`` code (metrics.py,
evaluation.py, davis.py, results.py, utils.py); the conventions kept from it are:

* **Frames.** Per sequence the ground-truth PNGs define the frames, in the order ``fastsam2 track``
  reads frame folders (numeric when every name is a number, else natural: ``2.png`` before ``10.png``;
  the reference sorts by name, which agrees for DAVIS's zero-padded names). The first frame
  (the one given to a semi-supervised method) and the last frame are *not* scored; predictions are
  read only for the frames in between, named like the ground truth (``00001.png`` ...).
* **Objects.** The objects are the ids ``1..max(first ground-truth frame)`` (so an id missing from the
  first frame but below the maximum is still scored, as in the reference). Ids above that maximum in
  later ground-truth frames are ignored. A prediction with an id above that maximum is an error.
  The reference aborts when a prediction lacks an object entirely; here that object is scored as an
  empty prediction.
* **Void (255).** The reference maps 255 to background when it reads the ground truth, so its void
  mask is empty in semi-supervised mode: void pixels count as background, none are excluded. Done the
  same here. (``db_eval_iou``/``db_eval_boundary`` still take an optional ``void`` mask.)
* **J.** IoU per frame; a frame where both masks are empty scores 1.
* **F.** Thin boundaries by ``seg2bmap``; a boundary pixel matches when the other boundary lies within
  a disk of radius ``ceil(bound_th * frame diagonal)`` pixels (``bound_th`` itself when >= 1).
  Both boundaries empty -> 1; exactly one empty -> 0; else F = 2PR / (P + R), 0 when P + R = 0.
* **Statistics** per object over its scored frames: mean, recall = fraction of frames > 0.5 and decay
  = mean of the first quarter bin minus mean of the last (4 overlapping bins, see ``db_statistics``).
* **Summary.** Each statistic is averaged over all objects of all sequences (not per sequence first);
  J&F-Mean = (J-Mean + F-Mean) / 2.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import UserError, one_line
from .frames import sort_frame_files

BOUND_TH = 0.008
VOID_LABEL = 255
_DECAY_BINS = 4
_STAT_NAMES = ("j_mean", "j_recall", "j_decay", "f_mean", "f_recall", "f_decay")


def _cv2():
    try:
        import cv2
    except ImportError as exc:  # cv2 is an optional extra of the runtime
        raise ImportError(
            "the boundary measure F needs OpenCV: pip install opencv-python-headless"
        ) from exc
    return cv2


# -- per-frame measures ---------------------------------------------------------------------------
def _check_pair(gt: np.ndarray, pred: np.ndarray, void: np.ndarray | None):
    gt, pred = np.asarray(gt).astype(bool), np.asarray(pred).astype(bool)
    if gt.shape != pred.shape:
        raise ValueError(f"ground truth {gt.shape} and prediction {pred.shape} differ in shape")
    if gt.ndim not in (2, 3):
        raise ValueError(f"masks must be [H, W] or [T, H, W], got {gt.ndim} dimensions")
    if void is None:
        void = np.zeros_like(gt)
    else:
        void = np.asarray(void).astype(bool)
        if void.shape != gt.shape:
            raise ValueError(f"void mask {void.shape} and masks {gt.shape} differ in shape")
    return gt, pred, void


def db_eval_iou(
    gt: np.ndarray, pred: np.ndarray, *, void: np.ndarray | None = None
) -> np.ndarray:
    """Region similarity J (IoU) of bool masks [T, H, W] -> float64 [T] (or [H, W] -> 0-d).

    Pixels in ``void`` are left out of both intersection and union; empty union scores 1.
    """
    gt, pred, void = _check_pair(gt, pred, void)
    keep = ~void
    inter = np.sum(gt & pred & keep, axis=(-2, -1))
    union = np.sum((gt | pred) & keep, axis=(-2, -1))
    j = np.ones(union.shape, dtype=np.float64)
    np.divide(inter, union, out=j, where=union > 0)
    return j


def seg2bmap(mask: np.ndarray) -> np.ndarray:
    """One-pixel-wide boundary of a bool mask [H, W] -> bool [H, W] (DAVIS / Martin's seg2bmap).

    A pixel is on the boundary when it differs from its east, south or south-east neighbour, so the
    boundary sits half a pixel towards the origin from the true contour.
    """
    seg = np.asarray(mask).astype(bool)
    if seg.ndim != 2:
        raise ValueError(f"seg2bmap takes one [H, W] mask, got {seg.ndim} dimensions")
    east = np.zeros_like(seg)
    south = np.zeros_like(seg)
    south_east = np.zeros_like(seg)
    east[:, :-1] = seg[:, 1:]
    south[:-1, :] = seg[1:, :]
    south_east[:-1, :-1] = seg[1:, 1:]
    bmap = (seg ^ east) | (seg ^ south) | (seg ^ south_east)
    # The frame edge is not a contour: outside the frame is unknown, not background, so the last
    # row and column only compare with neighbours inside the frame.
    bmap[-1, :] = seg[-1, :] ^ east[-1, :]
    bmap[:, -1] = seg[:, -1] ^ south[:, -1]
    bmap[-1, -1] = False
    return bmap


def boundary_radius(height: int, width: int, bound_th: float = BOUND_TH) -> int:
    """Match tolerance in pixels: ceil(bound_th * diagonal) for bound_th < 1, else bound_th."""
    if not bound_th > 0:
        raise ValueError(f"bound_th must be positive, got {bound_th}")
    if bound_th >= 1:
        if bound_th != int(bound_th):
            raise ValueError(f"bound_th >= 1 is a radius in pixels and must be whole, got {bound_th}")
        return int(bound_th)
    return int(math.ceil(bound_th * math.hypot(height, width)))


def _disk(radius: int) -> np.ndarray:
    offsets = np.arange(-radius, radius + 1)
    return (offsets[:, None] ** 2 + offsets[None, :] ** 2 <= radius**2).astype(np.uint8)


def _frame_f(gt: np.ndarray, pred: np.ndarray, void: np.ndarray, kernel: np.ndarray) -> float:
    gt_b = seg2bmap(gt & ~void)
    pred_b = seg2bmap(pred & ~void)
    n_gt, n_pred = int(gt_b.sum()), int(pred_b.sum())
    # The reference's branches: both empty -> P = R = 1; one empty -> (P, R) = (1, 0) or (0, 1).
    if n_gt == 0 and n_pred == 0:
        return 1.0
    if n_gt == 0 or n_pred == 0:
        return 0.0
    cv2 = _cv2()
    gt_near = cv2.dilate(gt_b.astype(np.uint8), kernel) > 0
    pred_near = cv2.dilate(pred_b.astype(np.uint8), kernel) > 0
    precision = np.sum(pred_b & gt_near) / n_pred
    recall = np.sum(gt_b & pred_near) / n_gt
    if precision + recall == 0:
        return 0.0
    return float(2 * precision * recall / (precision + recall))


def db_eval_boundary(
    gt: np.ndarray,
    pred: np.ndarray,
    bound_th: float = BOUND_TH,
    *,
    void: np.ndarray | None = None,
) -> np.ndarray:
    """Boundary F-measure of bool masks [T, H, W] -> float64 [T] (or [H, W] -> 0-d)."""
    gt, pred, void = _check_pair(gt, pred, void)
    kernel = _disk(boundary_radius(gt.shape[-2], gt.shape[-1], bound_th))
    if gt.ndim == 2:
        return np.asarray(_frame_f(gt, pred, void, kernel), dtype=np.float64)
    return np.array(
        [_frame_f(g, p, v, kernel) for g, p, v in zip(gt, pred, void)], dtype=np.float64
    )


def db_statistics(per_frame: np.ndarray) -> tuple[float, float, float]:
    """Mean, recall and decay of one object's per-frame scores [N].

    Recall is the fraction of frames scoring strictly above 0.5. Decay splits the N frames into 4
    bins whose edges are round(linspace(1, N, 5)) - 1 (halves round up) and whose ranges include both
    edges, so neighbouring bins share a frame; decay = mean(first bin) - mean(last bin).
    """
    values = np.asarray(per_frame, dtype=np.float64).ravel()
    n = values.size
    if n == 0:
        raise ValueError("no frames to compute statistics over")
    mean = float(np.nanmean(values))
    recall = float(np.mean(values > 0.5))
    # The tiny offset makes x.5 round up, as the reference does (np.round would round to even).
    edges = (np.round(np.linspace(1, n, _DECAY_BINS + 1) + 1e-10) - 1).astype(np.int64)
    bins = [values[edges[i] : edges[i + 1] + 1] for i in range(_DECAY_BINS)]
    decay = float(np.nanmean(bins[0]) - np.nanmean(bins[-1]))
    return mean, recall, decay


# -- results --------------------------------------------------------------------------------------
@dataclass
class ObjectScore:
    """Scores of one object of one sequence; per-frame arrays are float64 [N scored frames]."""

    sequence: str
    obj_id: int
    j_mean: float
    j_recall: float
    j_decay: float
    f_mean: float
    f_recall: float
    f_decay: float
    j_per_frame: np.ndarray
    f_per_frame: np.ndarray

    @property
    def jf_mean(self) -> float:
        return (self.j_mean + self.f_mean) / 2

    def to_dict(self) -> dict:
        out = {name: getattr(self, name) for name in ("sequence", "obj_id", *_STAT_NAMES)}
        out["jf_mean"] = self.jf_mean
        out["j_per_frame"] = self.j_per_frame.tolist()
        out["f_per_frame"] = self.f_per_frame.tolist()
        return out

    @classmethod
    def from_dict(cls, data: dict) -> ObjectScore:
        """Inverse of :meth:`to_dict` (exact: JSON keeps every float64 digit)."""
        return cls(
            sequence=data["sequence"], obj_id=int(data["obj_id"]),
            **{name: float(data[name]) for name in _STAT_NAMES},
            j_per_frame=np.asarray(data["j_per_frame"], dtype=np.float64),
            f_per_frame=np.asarray(data["f_per_frame"], dtype=np.float64),
        )


def _mean_stats(objects: list[ObjectScore]) -> dict[str, float]:
    stats = {name: float(np.mean([getattr(o, name) for o in objects])) for name in _STAT_NAMES}
    stats["jf_mean"] = (stats["j_mean"] + stats["f_mean"]) / 2
    return stats


@dataclass
class EvalReport:
    """All objects' scores and their means over objects (the DAVIS global numbers)."""

    objects: list[ObjectScore]
    j_mean: float
    j_recall: float
    j_decay: float
    f_mean: float
    f_recall: float
    f_decay: float
    jf_mean: float
    sequences: list[str] = field(default_factory=list)

    @classmethod
    def from_objects(cls, objects: list[ObjectScore]) -> EvalReport:
        if not objects:
            raise ValueError("no objects were evaluated")
        sequences = list(dict.fromkeys(o.sequence for o in objects))
        return cls(objects=list(objects), sequences=sequences, **_mean_stats(objects))

    def per_sequence(self) -> dict[str, dict[str, float]]:
        """{sequence: statistics averaged over that sequence's objects}."""
        return {
            seq: _mean_stats([o for o in self.objects if o.sequence == seq])
            for seq in self.sequences
        }

    def to_json(self, indent: int | None = 2) -> str:
        data = {name: getattr(self, name) for name in (*_STAT_NAMES, "jf_mean")}
        data["num_objects"] = len(self.objects)
        data["sequences"] = self.per_sequence()
        data["objects"] = [o.to_dict() for o in self.objects]
        return json.dumps(data, indent=indent)


def format_table(report: EvalReport) -> str:
    """Text table: one row per sequence (mean over its objects), then the global means."""
    headers = ("Sequence", "Objs", "J&F-Mean", "J-Mean", "J-Recall", "J-Decay",
               "F-Mean", "F-Recall", "F-Decay")
    keys = ("jf_mean", "j_mean", "j_recall", "j_decay", "f_mean", "f_recall", "f_decay")
    counts = {s: sum(o.sequence == s for o in report.objects) for s in report.sequences}
    rows = [
        (seq, str(counts[seq]), *(f"{stats[k]:.3f}" for k in keys))
        for seq, stats in report.per_sequence().items()
    ]
    total = ("Global (mean over objects)", str(len(report.objects)),
             *(f"{getattr(report, k):.3f}" for k in keys))
    widths = [max(len(r[i]) for r in (headers, *rows, total)) for i in range(len(headers))]

    def line(cells: tuple[str, ...]) -> str:
        first = cells[0].ljust(widths[0])
        return "  ".join([first, *(c.rjust(w) for c, w in zip(cells[1:], widths[1:]))])

    rule = "-" * len(line(headers))
    return "\n".join([line(headers), rule, *map(line, rows), rule, line(total)])


# -- sequences ------------------------------------------------------------------------------------
def evaluate_sequence(
    gt_masks: dict[int, np.ndarray],
    pred_masks: dict[int, np.ndarray],
    *,
    sequence: str = "",
    bound_th: float = BOUND_TH,
    skip_first_last: bool = True,
) -> list[ObjectScore]:
    """Score every ground-truth object of one sequence.

    gt_masks / pred_masks: {obj_id: bool [T, H, W]}. An object missing from ``pred_masks`` is scored
    as an empty prediction; a prediction for an id not in ``gt_masks`` is an error. With
    ``skip_first_last`` (DAVIS semi-supervised) frames 0 and T-1 are not scored.
    """
    extra = sorted(set(pred_masks) - set(gt_masks))
    if extra:
        raise ValueError(f"prediction{' ' + sequence if sequence else ''} has object ids {extra} "
                         f"that the ground truth lacks")
    scores = []
    for obj_id in sorted(gt_masks):
        gt = np.asarray(gt_masks[obj_id]).astype(bool)
        if gt.ndim != 3:
            raise ValueError(f"object {obj_id}: masks must be [T, H, W], got shape {gt.shape}")
        pred = pred_masks.get(obj_id)
        pred = np.zeros_like(gt) if pred is None else np.asarray(pred).astype(bool)
        if pred.shape != gt.shape:
            raise ValueError(f"object {obj_id}: prediction {pred.shape} and ground truth "
                             f"{gt.shape} differ in shape")
        if skip_first_last:
            if gt.shape[0] < 3:
                raise ValueError(f"sequence {sequence!r} has {gt.shape[0]} frames; at least 3 are "
                                 f"needed since the first and last are not scored")
            gt, pred = gt[1:-1], pred[1:-1]
        j = db_eval_iou(gt, pred)
        f = db_eval_boundary(gt, pred, bound_th)
        scores.append(ObjectScore(sequence, int(obj_id), *db_statistics(j), *db_statistics(f),
                                  j_per_frame=j, f_per_frame=f))
    return scores


# -- DAVIS folders --------------------------------------------------------------------------------
class EvaluationError(UserError, ValueError):
    """Masks that cannot be evaluated: missing, unreadable, or not matching the ground truth."""


def read_object_ids(path: Path) -> np.ndarray:
    """Object-id image [H, W] from an indexed (palette) or grayscale PNG (DAVIS annotations, our masks)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            if im.mode not in ("P", "L", "1", "I", "I;16"):
                raise EvaluationError(f"{path}: expected an indexed or grayscale PNG of object ids, "
                                      f"got mode {im.mode}")
            ids = np.array(im)
    except (OSError, SyntaxError, ValueError) as e:
        if isinstance(e, EvaluationError):
            raise
        raise EvaluationError(f"{path}: cannot read the PNG ({one_line(e)})") from None
    return ids.astype(np.uint8) if ids.dtype == bool else ids


DAVIS_LAYOUTS = (("JPEGImages", "480p"), ("Annotations", "480p")), (("JPEGImages",), ("Annotations",))


def davis_layout(root: str | Path) -> tuple[Path, Path]:
    """(frames root, annotations root) of a DAVIS-layout dataset: ``JPEGImages/480p`` and
    ``Annotations/480p`` (or the two without ``480p``), each holding one folder per sequence."""
    root = Path(root)
    for images, annos in DAVIS_LAYOUTS:
        if root.joinpath(*images).is_dir() and root.joinpath(*annos).is_dir():
            return root.joinpath(*images), root.joinpath(*annos)
    raise EvaluationError(f"{root} is not a DAVIS-layout dataset (expected JPEGImages/480p and Annotations/480p)")


def mask_files(folder: Path) -> list[Path]:
    """A sequence's PNGs in frame order (the rule frame folders use: numeric, else natural)."""
    return sort_frame_files([p for p in folder.glob("*.png") if not p.name.startswith(".")])


def _has_png(folder: Path) -> bool:
    return any(folder.glob("*.png"))


def _gt_sequences(gt_dir: Path) -> tuple[dict[str, Path], bool]:
    """({name: folder}, whether gt_dir is itself one sequence folder)."""
    if not gt_dir.is_dir():
        raise EvaluationError(f"ground-truth folder not found: {gt_dir}")
    davis = gt_dir.joinpath(*DAVIS_LAYOUTS[0][1])
    root = davis if davis.is_dir() else gt_dir
    if _has_png(root):
        return {root.name: root}, True
    found = {d.name: d for d in sorted(root.iterdir()) if d.is_dir() and _has_png(d)}
    if not found:
        raise EvaluationError(f"no sequence folders with PNG masks in {root}")
    return found, False


def _read_sequence(
    seq: str, gt_seq: Path, pred_seq: Path
) -> tuple[dict[int, np.ndarray], dict[int, np.ndarray]]:
    """Ground truth and prediction of the scored frames (first and last left out) as bool masks."""
    gt_files = mask_files(gt_seq)
    if len(gt_files) < 3:
        raise EvaluationError(f"sequence {seq!r} has {len(gt_files)} ground-truth frames; at least 3 "
                         f"are needed since the first and last are not scored")
    gt_ids = []
    for path in gt_files:
        ids = read_object_ids(path)
        if gt_ids and ids.shape != gt_ids[0].shape:
            raise EvaluationError(f"{path}: frame is {ids.shape[1]}x{ids.shape[0]}, the sequence's first "
                             f"is {gt_ids[0].shape[1]}x{gt_ids[0].shape[0]}")
        # Void is background, as in the reference reader.
        gt_ids.append(np.where(ids == VOID_LABEL, 0, ids))
    num_objects = int(gt_ids[0].max())
    scored = range(1, len(gt_files) - 1)

    pred_ids = []
    height, width = gt_ids[0].shape
    for t in scored:
        path = pred_seq / gt_files[t].name
        if not path.is_file():
            raise EvaluationError(f"missing prediction frame: {path}")
        ids = read_object_ids(path)
        if ids.shape != (height, width):
            raise EvaluationError(f"{path}: prediction is {ids.shape[1]}x{ids.shape[0]}, "
                             f"ground truth is {width}x{height}")
        top = int(ids.max())
        if top > num_objects:
            raise EvaluationError(f"{path}: object id {top} is not in the ground truth of {seq!r} "
                             f"(ids 1..{num_objects})")
        pred_ids.append(ids)

    gt_stack = np.stack([gt_ids[t] for t in scored])
    pred_stack = np.stack(pred_ids)
    objs = range(1, num_objects + 1)
    return {o: gt_stack == o for o in objs}, {o: pred_stack == o for o in objs}


def evaluate_dirs(
    pred_dir: str | Path,
    gt_dir: str | Path,
    sequences: list[str] | None = None,
    *,
    bound_th: float = BOUND_TH,
) -> EvalReport:
    """DAVIS 2017 semi-supervised J&F of PNG predictions against PNG ground truth.

    gt_dir: a DAVIS root (with Annotations/480p/<seq>/), a folder of <seq>/ folders, or one sequence
    folder of PNGs. pred_dir: <seq>/ folders of PNGs named like the ground truth, or, when gt_dir is
    one sequence, that sequence's PNG folder itself. Pixel values are object ids.
    """
    gt_dir, pred_dir = Path(gt_dir), Path(pred_dir)
    available, single = _gt_sequences(gt_dir)
    if sequences is None:
        names = list(available)
    else:
        if not sequences:
            raise EvaluationError("sequences is empty; pass None to evaluate all")
        missing = [s for s in sequences if s not in available]
        if missing:
            raise EvaluationError(f"sequences {missing} not in the ground truth at {gt_dir}")
        names = list(sequences)
    if not pred_dir.is_dir():
        raise EvaluationError(f"prediction folder not found: {pred_dir}")

    objects: list[ObjectScore] = []
    for seq in names:
        pred_seq = pred_dir if single and _has_png(pred_dir) else pred_dir / seq
        if not pred_seq.is_dir():
            raise EvaluationError(f"no predictions for sequence {seq!r}: {pred_seq} is not a folder")
        gt_masks, pred_masks = _read_sequence(seq, available[seq], pred_seq)
        objects += evaluate_sequence(gt_masks, pred_masks, sequence=seq, bound_th=bound_th,
                                     skip_first_last=False)
    return EvalReport.from_objects(objects)

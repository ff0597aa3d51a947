"""Validate exported graphs: ONNX Runtime against the torch stages, on inputs derived from real frames.

For every graph, in order (collecting every failure into one :class:`ValidationError`):

1. output (and input) names of the ONNX Runtime session vs the spec;
2. declared dynamic axes: each IO dimension of the ``.onnx`` file vs the spec (named symbol or size);
3. shapes: ORT and torch output shapes vs the spec, at every shape set;
4. values: max |Δ| per output vs the spec's per-output ``atol`` (max over shape sets).

Inputs: the torch image encoder runs on 1-2 real frames; the mask decoder's inputs are those features
(plus SAM2's no-memory embedding) and point prompts; the memory encoder's are the features and the
decoder's mask logits; the memory attention's memory comes from the torch memory encoder on those
frames, at the token positions a shape set asks for. Inputs of a graph this module does not know
(e.g. the router) are taken by name from these real tensors where one fits, else seeded noise.
Each graph is run in ONE ORT session at every shape set, so an axis the trace froze inside the graph
fails here even when the IO declares it dynamic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from fastsam2.runtime.manifest import Manifest
from fastsam2.runtime.specs import (BATCH, ENCODER_EMBED, ENCODER_TRUNK, KEPT, MEMORY, POINTERS, POINTS,
                                    REGION_ROWS, GraphSpec, region_axes)
from fastsam2.runtime.errors import UserError


class ValidationError(UserError, ValueError):
    """Exported graphs differ from their torch stages; the message lists every failure."""

    def __init__(self, report: "ValidationReport"):
        self.report = report
        super().__init__(report.format())


@dataclass
class ValidationReport:
    """Failures in check order, and max |Δ| per graph and output over all shape sets."""

    failures: list[str] = field(default_factory=list)
    max_abs_diff: dict[str, dict[str, float]] = field(default_factory=dict)
    sizes_list: list[dict[str, int]] = field(default_factory=list)
    frames: str = ""

    @property
    def ok(self) -> bool:
        return not self.failures

    def format(self) -> str:
        head = f"{len(self.failures)} validation failure(s)" if self.failures else "all graphs match"
        lines = [head + ":" if self.failures else head]
        lines += [f"  - {f}" for f in self.failures]
        for g, diffs in self.max_abs_diff.items():
            lines.append(f"  {g}: " + ", ".join(f"{k} max|Δ| {v:.2e}" for k, v in diffs.items()))
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "failures": list(self.failures),
            "max_abs_diff": self.max_abs_diff,
            "sizes_list": self.sizes_list,
            "frames": self.frames,
        }


def region_sizes(config) -> list[dict[str, int]]:
    """Shape sets of the encoder trunk: every side a rectangle can have, rows and columns paired in
    opposite orders (each side, and wide and tall rectangles), one object."""
    sides = config.spec_dims().region_sides
    return [{BATCH: 1, **region_axes(r, c, config.spec_dims())} for r, c in zip(sides, reversed(sides))]


def default_sizes(num_tokens: int) -> list[dict[str, int]]:
    """Two shape sets: all tokens kept / one object / 2 memory frames / 3 pointers / 2 points, and
    30% kept / two objects / uneven memory / 7 pointers / 4 points."""
    k = math.ceil(0.3 * num_tokens)
    return [
        {BATCH: 1, KEPT: num_tokens, MEMORY: 2 * num_tokens, POINTERS: 3, POINTS: 2},
        {BATCH: 2, KEPT: k, MEMORY: num_tokens + k + 5, POINTERS: 7, POINTS: 4},
    ]


def _load_frames(frames: Any, n: int = 2) -> tuple[list[np.ndarray], str]:
    """Up to ``n`` RGB uint8 frames from a folder / list of arrays, or a synthetic image."""
    if frames is None:
        yy, xx = np.mgrid[0:480, 0:640]
        img = np.stack([(xx * 255 / 640), (yy * 255 / 480), ((xx + yy) % 256)], axis=-1)
        img[150:330, 200:420] = (220, 40, 40)  # one clear "object"
        img = img.astype(np.uint8)
        return [img, np.ascontiguousarray(img[:, ::-1])][:n], "synthetic"
    if isinstance(frames, (str, Path)):
        from fastsam2.runtime.frames import open_frames

        out = []
        with open_frames(str(frames)) as src:
            for frame in src:
                out.append(frame.image)
                if len(out) == n:
                    break
        if not out:
            raise ValueError(f"no frames in {frames}")
        return out, str(frames)
    arrays = [np.asarray(f) for f in frames][:n]
    if not arrays:
        raise ValueError("frames is empty")
    return arrays, f"{len(arrays)} arrays"


class RealInputs:
    """Torch-stage activations on real frames, from which every graph's feed is cut."""

    def __init__(self, stages: dict[str, Any], config, frames: Any, seed: int = 0):
        import torch

        from fastsam2.runtime.preprocess import preprocess_frame

        self.config = config
        self.rng = np.random.default_rng(seed)
        images, self.source = _load_frames(frames)
        if len(images) == 1:
            images = images * 2
        S = config.image_size
        self.image = np.concatenate(
            [preprocess_frame(im, S, config.img_mean, config.img_std) for im in images]
        )
        run = lambda name, **kw: [  # noqa: E731
            o.numpy() for o in _as_tuple(stages[name](**{k: torch.from_numpy(v) for k, v in kw.items()}))
        ]
        with torch.inference_mode():
            self.fpn_s0, self.fpn_s1, self.vision_feats = run("image_encoder", image=self.image)
            no_mem = stages["memory_attention"].no_mem_embed.detach().numpy().reshape(1, -1, 1, 1)
            self.pix_feat = (self.vision_feats + no_mem).astype(np.float32)
            B = self.image.shape[0]
            # one positive click in the middle of each frame
            coords = np.full((B, 1, 2), S / 2, np.float32)
            labels = np.ones((B, 1), np.int32)
            HM = config.mask_size
            dec = run(
                "mask_decoder",
                pix_feat=self.pix_feat,
                fpn_s0=self.fpn_s0,
                fpn_s1=self.fpn_s1,
                point_coords=coords,
                point_labels=labels,
                mask_input=np.zeros((B, 1, HM, HM), np.float32),
                has_mask_input=np.zeros((B,), np.float32),
                multimask_output=np.ones((1,), np.float32),
            )
            self.low_res_masks, _, self.obj_ptr, self.object_score_logits = dec[:4]
            all_idx = np.tile(np.arange(config.num_tokens, dtype=np.int64), (B, 1))
            (self.memory_full,) = run(
                "memory_encoder",
                vision_feats=self.vision_feats,
                mask_logits=self.low_res_masks,
                object_score_logits=self.object_score_logits,
                binarize=np.asarray([1.0, 0.0][:B] + [0.0] * max(0, B - 2), np.float32),
                kept_idx=all_idx,
            )
        self.by_name = {}
        if ENCODER_EMBED in stages and ENCODER_TRUNK in stages:  # the region graphs' real inputs
            with torch.inference_mode():
                dims, t, S = config.spec_dims(), config.image_size // config.patch_stride, config.image_size
                side, y0 = dims.region_pixels(t), dims.region_first_pixel(0)
                # the whole frame with the patch embedding's halo (zeros beyond the frame)
                crop = np.zeros((*self.image.shape[:2], side, side), np.float32)
                crop[..., -y0:min(side, S - y0), -y0:min(side, S - y0)] = self.image[..., :side + y0, :side + y0]
                grid = np.tile(np.arange(t, dtype=np.int64), (self.image.shape[0], 1))
                (self.tokens,) = run(ENCODER_EMBED, image=crop, rows=grid, cols=grid)
                levels = run(ENCODER_TRUNK, tokens=self.tokens)
            self.by_name.update({"tokens": self.tokens}, **{f"level{i}": v for i, v in enumerate(levels)})
        self.by_name.update({
            "image": self.image,
            "fpn_s0": self.fpn_s0,
            "fpn_s1": self.fpn_s1,
            "vision_feats": self.vision_feats,
            "pix_feat": self.pix_feat,
            "mask_input": self.low_res_masks,
            "mask_logits": self.low_res_masks,
            "prev_mask_logits": self.low_res_masks,
            "object_score_logits": self.object_score_logits,
        })

    def _batch(self, x: np.ndarray, B: int) -> np.ndarray:
        reps = math.ceil(B / x.shape[0])
        return np.ascontiguousarray(np.concatenate([x] * reps)[:B])

    def feed(self, spec: GraphSpec, sizes: dict[str, int]) -> dict[str, np.ndarray]:
        """Valid inputs of ``spec`` (:meth:`GraphSpec.sample`) with the tensors a real frame gives
        (features, pointers, memory, object scores) taken from that frame instead of noise."""
        cfg = self.config
        B = sizes[BATCH]
        hw = cfg.num_tokens
        feed = spec.sample(sizes, self.rng)
        for t in spec.inputs:
            shape = t.concrete(sizes)
            name = t.name
            if name == "obj_ptrs":
                ptr = self._batch(self.obj_ptr, B)[:, None]
                noise = self.rng.standard_normal((B, shape[1], ptr.shape[-1])).astype(np.float32)
                feed[name] = (ptr + 0.1 * noise).astype(np.float32)
            elif name == "object_score_logits":
                value = self._batch(self.object_score_logits, B).copy()
                if B > 1:  # exercise SAM2's "object absent" path too
                    value[-1] = -abs(value[-1]) - 1.0
                feed[name] = value
            elif name in self.by_name and self.by_name[name].shape[1:] == tuple(shape[1:]):
                feed[name] = self._batch(self.by_name[name], B)
            elif name == "tokens" and "tokens" in self.by_name:  # a rectangle of the frame's tokens
                feed[name] = self._batch(self.by_name[name][:, -shape[1]:, :shape[2]], B)
            elif name.startswith("level") and name in self.by_name:  # the trunk's levels on a rectangle
                feed[name] = self._batch(self.by_name[name][:, :, -shape[2]:, :shape[3]], B)
            elif name == "multimask_output":  # the two shape sets (B = 1, 2) take both branches
                feed[name] = np.asarray([float(B % 2 == 0)], np.float32)
        if "memory_pos_idx" in spec.input_names:
            # each object (row) its own token positions, as the tracker's memory bank gives them
            M = sizes[MEMORY]
            pos = np.stack([
                np.concatenate([self.rng.permutation(hw) for _ in range(math.ceil(M / hw))])[:M]
                for _ in range(B)
            ]).astype(np.int64)
            frame_of = (np.arange(M) // hw).astype(np.int64)
            feed["memory_pos_idx"] = pos
            feed["memory_tpos_idx"] = np.tile((frame_of + 1) % cfg.num_maskmem, (B, 1))
            mem = self._batch(self.memory_full, B)  # [B, HW, Cm]
            feed["memory"] = np.ascontiguousarray(np.take_along_axis(mem, pos[..., None], axis=1))
        return {n: np.ascontiguousarray(feed[n].astype(spec.input(n).dtype, copy=False)) for n in spec.input_names}


def _as_tuple(x):
    return x if isinstance(x, tuple) else (x,)


def _declared_axes_problems(path: Path, spec: GraphSpec, label: str) -> list[str]:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    problems = []
    io = {v.name: v for v in (*model.graph.input, *model.graph.output)}
    for t in (*spec.inputs, *spec.outputs):
        if t.name not in io:
            continue  # reported by the name check
        dims = [d.dim_param or d.dim_value for d in io[t.name].type.tensor_type.shape.dim]
        if len(dims) != len(t.shape) or any(a != b for a, b in zip(dims, t.shape)):
            problems.append(f"{label}: {t.name} declared {tuple(dims)}, spec {t.shape}")
    return problems


def validate_graphs(
    out_dir: str | Path,
    stages: dict[str, Any],
    frames: Any = None,
    *,
    sizes_list: Sequence[dict[str, int]] | None = None,
    manifest: Manifest | None = None,
    providers: Sequence[str] = ("CPUExecutionProvider",),
    intra_op_threads: int | None = None,
) -> ValidationReport:
    """Run every graph of ``out_dir`` in ONNX Runtime against ``stages`` (torch modules by graph
    name); raise :class:`ValidationError` listing every failure, else return the report.

    ``sizes_list``: shape sets ({symbol: size}); default :func:`default_sizes` (two sets: all tokens
    and 30% of them, one and two objects, different M, P and point counts).
    """
    import onnxruntime as ort
    import torch

    out_dir = Path(out_dir)
    manifest = manifest or Manifest.read(out_dir)
    config = manifest.model_config
    sizes_list = list(sizes_list or default_sizes(config.num_tokens))
    real = RealInputs(stages, config, frames)
    report = ValidationReport(sizes_list=sizes_list, frames=real.source)
    # failures by check, reported in check order across graphs
    name_fails: list[str] = []
    axis_fails: list[str] = []
    shape_fails: list[str] = []
    value_fails: list[str] = []
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    if intra_op_threads:
        opts.intra_op_num_threads = intra_op_threads

    for label, file in manifest.graph_files():
        name = label.split("[")[0]  # a variant is checked against the same stage and spec
        spec = stages[name].spec if name in stages else manifest.graphs[name].spec
        path = out_dir / file
        sess = ort.InferenceSession(str(path), opts, providers=list(providers))
        # 1. names
        got_out = [o.name for o in sess.get_outputs()]
        got_in = [i.name for i in sess.get_inputs()]
        if got_out != spec.output_names:
            name_fails.append(f"{label}: outputs {got_out}, spec {spec.output_names}")
        if got_in != spec.input_names:
            name_fails.append(f"{label}: inputs {got_in}, spec {spec.input_names}")
        # 2. declared dynamic axes
        axis_fails.extend(_declared_axes_problems(path, spec, label))
        if got_out != spec.output_names or got_in != spec.input_names:
            continue
        # 3./4. shapes, then values, at every shape set
        worst: dict[str, float] = {o: 0.0 for o in spec.output_names}
        for sizes in sizes_list if REGION_ROWS not in spec.symbols() else region_sizes(config):
            sizes = {s: v for s, v in sizes.items() if s in spec.symbols()}
            feed = real.feed(spec, sizes)
            with torch.inference_mode():
                ref = _as_tuple(stages[name](**{k: torch.from_numpy(v) for k, v in feed.items()}))
            ref = [r.numpy() for r in ref]
            try:
                ours = sess.run(None, feed)
            except Exception as e:  # noqa: BLE001 - any ORT failure at a shape set is a finding
                shape_fails.append(f"{label} at {sizes}: ONNX Runtime failed: {str(e).splitlines()[0]}")
                continue
            for t, a, b in zip(spec.outputs, ref, ours):
                want = t.concrete(sizes)
                if a.shape != want or b.shape != want:
                    shape_fails.append(
                        f"{label}.{t.name} at {sizes}: ORT {b.shape}, torch {a.shape}, spec {want}"
                    )
                    continue
                diff = float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))) if a.size else 0.0
                worst[t.name] = max(worst[t.name], diff)
        report.max_abs_diff[label] = worst
        for o, d in worst.items():
            atol = spec.atol.get(o)
            if atol is not None and not d <= atol:
                value_fails.append(f"{label}.{o}: max |Δ| {d:.2e} > atol {atol:.0e}")
    report.failures = name_fails + axis_fails + shape_fails + value_fails
    if not report.ok:
        raise ValidationError(report)
    return report

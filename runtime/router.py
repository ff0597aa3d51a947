"""Token selection for pruned propagation (torch-free).

The router graph scores every token of the current frame (see ``fastsam2.export.router`` for the
cues and default weights); this module feeds it — current features, the object's projected text
embedding, the object's previous mask logits — and keeps the top-K tokens, in ascending grid order.
Router files are safetensors: the MLP (``router.*``) and, when fitted, the text projection
(``text_proj.weight`` [D_text, C], ``text_proj.bias`` [C]).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from .backends.base import StageRunner, infer_rows
from .config import NO_OBJ_SCORE
from .errors import UserError
from .specs import ROUTER
from .state import FrameFeatures, ObjectState


class RouterError(UserError, ValueError):
    """A router setup the user asked for cannot work (one-line message)."""


# The router's input cues, in the order of the MLP's first-layer columns (see fastsam2.export.router).
CUES = ("contrast", "edge", "relevance", "ambiguity", "band", "near", "variance")
ROUTER_FORMAT = "fastsam2-router-1"
DEFAULT_ROUTER = "default-weights"  # a manifest's router_weights for the built-in hand-set weights
MAX_RADIUS = 16  # the ``near`` cue's dilation in tokens; beyond it the cue covers a whole 1024-px frame


@dataclass
class RouterWeights:
    """A router file's contents: the MLP ``router.0.weight`` [hidden,7], ``router.0.bias`` [hidden],
    ``router.2.weight`` [1,hidden], ``router.2.bias`` [1] (float32), the ``near`` cue's radius in tokens
    and, when fitted, the text projection; ``sha256``: the file's hash (what an export records)."""

    mlp: dict[str, np.ndarray]
    hidden: int = 16
    radius: int = 2
    text_proj_weight: np.ndarray | None = None  # [D_text, C]
    text_proj_bias: np.ndarray | None = None  # [C]
    sha256: str | None = None

    def project(self, text_embedding: np.ndarray) -> np.ndarray:
        """CLIP text embedding [D_text] → visual-width vector [C] (the fitted ridge projection)."""
        if self.text_proj_weight is None or self.text_proj_bias is None:
            raise RouterError("these router weights have no text projection (fit one with calibration)")
        t = np.asarray(text_embedding, np.float32).reshape(-1)
        if t.shape[0] != self.text_proj_weight.shape[0]:
            raise RouterError(
                f"text embedding has {t.shape[0]} dims, the router's projection expects {self.text_proj_weight.shape[0]}"
            )
        return (t @ self.text_proj_weight + self.text_proj_bias).astype(np.float32)


def _meta_int(path: Path, meta: dict[str, str], key: str, default: int) -> int:
    try:
        return int(meta.get(key, default))
    except ValueError:
        raise RouterError(f"{path}: metadata {key}={meta[key]!r} is not an integer") from None


def router_file_problem(tensors: dict[str, np.ndarray], meta: dict[str, str]) -> str | None:
    """Why these safetensors contents are no usable router (None when they are): the tensor set and
    shapes, finite values, and the ``hidden``/``radius``/``cues`` metadata against the tensors."""
    if meta.get("format") != ROUTER_FORMAT:
        return f"not a fastsam2 router file (format {meta.get('format')!r})"
    if "cues" in meta and meta["cues"] != ",".join(CUES):
        return f"cues {meta['cues']!r}, this fastsam2's router takes {','.join(CUES)!r}"
    first = tensors.get("router.0.weight")
    hidden = first.shape[0] if first is not None and first.ndim == 2 else None
    want = {"router.0.weight": (hidden, len(CUES)), "router.0.bias": (hidden,),
            "router.2.weight": (1, hidden), "router.2.bias": (1,)}
    mlp = {k: v for k, v in tensors.items() if k.startswith("router.")}
    missing = sorted(set(want) - set(mlp))
    if missing:
        return f"missing tensor(s) {', '.join(missing)}"
    extra = sorted(set(mlp) - set(want))
    if extra:
        return f"unexpected tensor(s) {', '.join(extra)} (the router MLP is Linear(7,hidden), ReLU, Linear(hidden,1))"
    for name, shape in want.items():
        if tuple(mlp[name].shape) != shape:
            return f"{name} has shape {list(mlp[name].shape)}, expected {list(shape)}"
    try:
        declared = int(meta.get("hidden", str(hidden)))
        radius = int(meta.get("radius", "2"))
    except ValueError:
        return f"metadata hidden={meta.get('hidden')!r} radius={meta.get('radius')!r} are not integers"
    if declared != hidden:
        return f"metadata says hidden={declared}, the tensors have {hidden} hidden units"
    if not 0 <= radius <= MAX_RADIUS:
        return f"metadata radius={radius} is outside 0..{MAX_RADIUS} tokens"
    proj_w, proj_b = tensors.get("text_proj.weight"), tensors.get("text_proj.bias")
    if (proj_w is None) != (proj_b is None):
        return "text_proj.weight and text_proj.bias come together (one is missing)"
    if proj_w is not None and proj_b is not None and (proj_w.ndim != 2 or proj_b.shape != (proj_w.shape[1],)):
        return (f"text_proj.weight {list(proj_w.shape)} and text_proj.bias {list(proj_b.shape)} are no "
                "[D_text,C] projection with its [C] bias")
    for name, value in {**mlp, "text_proj.weight": proj_w, "text_proj.bias": proj_b}.items():
        if value is None:
            continue
        if not np.issubdtype(value.dtype, np.floating):
            return f"{name} is {value.dtype}, expected floating point"
        if not np.all(np.isfinite(value)):
            return f"{name} holds NaN or infinite values"
    return None


def read_router_file(path: str | Path) -> RouterWeights:
    """The validated contents of a router .safetensors file; every problem is one :class:`RouterError`
    line naming the file."""
    path = Path(path)
    if not path.is_file():
        raise RouterError(f"router weights not found: {path}")
    try:
        from safetensors import safe_open
    except ImportError:
        raise RouterError("reading router weights needs the safetensors package (pip install safetensors)") from None
    try:
        with safe_open(str(path), framework="numpy") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # noqa: BLE001 - any unreadable file is one user error
        raise RouterError(f"cannot read router weights {path}: {e}") from e
    problem = router_file_problem(tensors, meta)
    if problem is not None:
        raise RouterError(f"router file {path}: {problem}")
    from .manifest import file_sha256

    def f32(name: str) -> np.ndarray | None:
        value = tensors.get(name)
        return None if value is None else np.ascontiguousarray(value, np.float32)

    return RouterWeights(
        mlp={k: np.ascontiguousarray(v, np.float32) for k, v in tensors.items() if k.startswith("router.")},
        hidden=int(tensors["router.0.weight"].shape[0]),
        radius=int(meta.get("radius", 2)),
        text_proj_weight=f32("text_proj.weight"),
        text_proj_bias=f32("text_proj.bias"),
        sha256=file_sha256(path),
    )


def describe_router(sha256: str | None) -> str:
    """A manifest's / backend's router_weights for a message: "the built-in weights" or a short hash."""
    if sha256 is None:
        return "router weights it does not record"
    if sha256 == DEFAULT_ROUTER:
        return "the built-in router weights"
    return f"router file sha256 {sha256[:12]}"


def check_router_file(weights: RouterWeights, path: str | Path, runs: str | None, where: str) -> None:
    """Refuse a router file that is not the router ``where`` names (e.g. "exported in DIR"; ``runs``:
    its recorded hash, ``DEFAULT_ROUTER`` or None)."""
    if weights.sha256 != runs:
        raise RouterError(
            f"--router {path} (sha256 {str(weights.sha256)[:12]}) is not the router {where} "
            f"({describe_router(runs)}): export with fastsam2-export --router {path}, or drop --router"
        )


class TokenSelector(Protocol):
    """Chooses, for objects on their frames, the tokens that go through memory attention."""

    def select(self, items: list[tuple[ObjectState, FrameFeatures]], k: int) -> list[Any]:
        """Kept token indices [1,k] int64, ascending, per (object, frame) (backend arrays)."""


SELECTORS = ("router", "random", "grid")


@dataclass
class RandomSelector:
    """K tokens drawn uniformly without replacement: the baseline a router has to beat.

    The draw is seeded by (``seed``, object id, frame index), so a frame's tokens do not depend on
    which objects or frames were selected before it (batching or resuming gives the same masks).
    """

    ops: Any
    num_tokens: int
    seed: int = 0

    def select(self, items: list[tuple[ObjectState, FrameFeatures]], k: int) -> list[Any]:
        k = min(k, self.num_tokens)
        out = []
        for obj, feats in items:
            rng = np.random.default_rng([self.seed, obj.obj_id, feats.frame_idx])
            idx = np.sort(rng.choice(self.num_tokens, size=k, replace=False)).astype(np.int64)
            out.append(self.ops.asarray(idx.reshape(1, k)))
        return out


def dither_order(size: int) -> np.ndarray:
    """The token indices [size*size] int64 of a size x size grid in ordered-dither (Bayer) order.

    Every prefix of the order is spread evenly over the grid: on a power-of-two grid the first quarter
    is every second row and column, the first sixteenth every fourth; other sizes crop the next
    power-of-two matrix, which keeps that spread.
    """
    if size < 1:
        raise ValueError(f"grid size must be >= 1, got {size}")
    bayer = np.zeros((1, 1), np.int64)
    while bayer.shape[0] < size:
        bayer = np.block([[4 * bayer, 4 * bayer + 2], [4 * bayer + 3, 4 * bayer + 1]])
    return np.argsort(bayer[:size, :size].reshape(-1), kind="stable").astype(np.int64)


@dataclass
class GridSelector:
    """K tokens on a uniform grid over the frame, the same for every object and frame (no scores):
    the first K of :func:`dither_order`, ascending."""

    ops: Any
    feat_size: int
    _cache: dict[int, Any] = field(default_factory=dict, repr=False)

    def select(self, items: list[tuple[ObjectState, FrameFeatures]], k: int) -> list[Any]:
        if k not in self._cache:
            idx = np.sort(dither_order(self.feat_size)[:k])
            self._cache[k] = self.ops.asarray(idx.reshape(1, -1))
        return [self._cache[k]] * len(items)


@dataclass
class TopKRouter:
    """Keeps, per object and frame, the K tokens with the highest scores of the router graph.

    ``runner``: the backend's router stage; ``text_vectors``: {obj_id: projected text [C]};
    ``default_text``: for objects without their own. Objects with neither get a zero vector (the
    relevance cue is then 0).
    """

    runner: StageRunner
    ops: Any
    hidden_dim: int
    mask_size: int
    default_text: np.ndarray | None = None
    text_vectors: dict[int, np.ndarray] = field(default_factory=dict)
    max_batch: int | None = None  # objects per router call (None: all)
    last_scores: Any = None  # the most recent token_scores [1,HW] (last object), for inspection
    _uploaded: dict[int, tuple[Any, Any]] = field(default_factory=dict, repr=False)  # id(vec) -> (vec, array)

    def _feed(self, obj: ObjectState, feats: FrameFeatures) -> dict[str, Any]:
        ops = self.ops
        t = feats.frame_idx
        prev = obj.output_at(t - 1)
        if prev is None:
            earlier = [f for f in (*obj.cond, *obj.recent) if f < t]
            prev = obj.output_at(max(earlier)) if earlier else None
        if prev is not None:
            prev_logits = prev.pred_masks
        else:
            prev_logits = ops.full((1, 1, self.mask_size, self.mask_size), NO_OBJ_SCORE)
        return {
            "vision_feats": feats.vision_feats,
            "projected_text": self._text_array(self.text_vectors.get(obj.obj_id, self.default_text)),
            "prev_mask_logits": prev_logits,
        }

    def _text_array(self, vec: np.ndarray | None) -> Any:
        """The projected text [1,C] as a backend array, uploaded once per vector (not per frame)."""
        cached = self._uploaded.get(id(vec))
        if cached is None or cached[0] is not vec:
            host = np.zeros(self.hidden_dim, np.float32) if vec is None else np.asarray(vec, np.float32)
            cached = self._uploaded[id(vec)] = (vec, self.ops.asarray(host.reshape(1, -1)))
        return cached[1]

    def select(self, items: list[tuple[ObjectState, FrameFeatures]], k: int) -> list[Any]:
        feeds = [self._feed(obj, feats) for obj, feats in items]
        rows = infer_rows(self.runner, feeds, self.ops.cat, self.max_batch)
        self.last_scores = rows[-1]["token_scores"]
        return [self.ops.topk_sorted(r["token_scores"], k) for r in rows]


def make_selector(
    backend,
    kind: str = "router",
    *,
    seed: int = 0,
    text: str | None = None,
    texts_path: str | Path | None = None,
    weights_path: str | Path | None = None,
) -> TokenSelector:
    """The token selector ``kind`` (one of :data:`SELECTORS`) over ``backend``: "router" is
    :func:`make_router` (``text``, ``texts_path``, ``weights_path`` go to it), "random" a
    :class:`RandomSelector` seeded by ``seed``, "grid" a :class:`GridSelector`."""
    if kind not in SELECTORS:
        raise RouterError(f"unknown token selector {kind!r} (one of {', '.join(SELECTORS)})")
    if kind != "router" and (text is not None or weights_path is not None):
        raise RouterError(f"--text and --router configure the router; the {kind} selector uses neither")
    cfg = backend.config
    if kind == "random":
        return RandomSelector(backend.ops, cfg.num_tokens, seed)
    if kind == "grid":
        return GridSelector(backend.ops, cfg.feat_size)
    return make_router(backend, text=text, texts_path=texts_path, weights_path=weights_path)


def make_router(
    backend,
    *,
    text: str | None = None,
    texts_path: str | Path | None = None,
    weights_path: str | Path | None = None,
) -> TopKRouter:
    """A TopKRouter over ``backend``'s router stage (every backend has one: the torch backend builds
    it, exports include it unless ``--no-router``).

    ``text`` picks a row of ``texts_path`` (an .npz from ``fastsam2-export text``), projected with the
    router file's fitted text projection. ``weights_path`` must be the router file the backend runs
    (its hash is the backend's ``router_weights``): a different one is refused.
    """
    weights = read_router_file(weights_path) if weights_path else None
    if weights is not None and weights_path is not None:
        check_router_file(weights, weights_path, backend.router_weights, f"the {backend.name} backend runs")
    if ROUTER not in backend.runners:
        raise RouterError(
            f"the {backend.name} backend has no router stage: export with the router (fastsam2-export ...) "
            "or run with --keep 1.0"
        )
    cfg = backend.config
    router = TopKRouter(backend.runners[ROUTER], backend.ops, cfg.hidden_dim, cfg.mask_size,
                        max_batch=backend.limits.get("max_batch"))
    if text is not None:
        if texts_path is None:
            raise RouterError("--text needs --texts FILE.npz (precompute with: fastsam2-export text ...)")
        from .text_embeddings import load_text_embeddings

        try:
            emb = load_text_embeddings(texts_path).get(text)
        except KeyError as e:
            raise RouterError(str(e).strip("'\"")) from None
        if weights is None or weights.text_proj_weight is None:
            print(
                "fastsam2: router weights have no fitted text projection: the text cue is off "
                "(fit one with fastsam2 train-router / calibration)",
                file=sys.stderr,
            )
        else:
            router.default_text = weights.project(emb)
    return router


def object_text_vectors(
    object_texts: dict[int, str], *, texts_path: str | Path | None, weights_path: str | Path | None
) -> dict[int, np.ndarray]:
    """{obj_id: projected text [C] float32} for the router's text cue: each object's description
    looked up in ``texts_path`` (an .npz from ``fastsam2-export text``) and projected with the router
    file's fitted text projection. Unlike ``--text``, a missing file, text or projection is an error:
    a text-cue run without its cue would be mislabelled."""
    from .text_embeddings import load_text_embeddings

    if texts_path is None:
        raise RouterError("the text cue needs text embeddings (--texts FILE.npz from fastsam2-export text)")
    if weights_path is None:
        raise RouterError("the text cue needs a router file with a text projection (--router, made by "
                          "fastsam2 fit-text-projection)")
    weights = read_router_file(weights_path)
    if weights.text_proj_weight is None:
        raise RouterError(f"{weights_path} has no text projection (fit one with fastsam2 fit-text-projection)")
    embeddings = load_text_embeddings(texts_path)
    out = {}
    for oid, text in object_texts.items():
        try:
            out[int(oid)] = weights.project(embeddings.get(text))
        except KeyError as e:
            raise RouterError(f"{texts_path}: {str(e).strip(chr(34) + chr(39))}") from None
    return out

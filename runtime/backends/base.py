"""The stage/runner interface every backend implements (torch, ONNX Runtime, TensorRT).

A runner executes one graph described by a :class:`~fastsam2.runtime.specs.GraphSpec`. ``infer``
checks the feed against the spec before the backend runs, so that a wrong name, dtype or fixed size
fails with a message naming the tensor instead of deep inside a backend.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from ..config import ModelConfig
from ..specs import BATCH, GraphSpec
from ..errors import UserError


# CUDA graphs kept per stage runner, one per input-shape bucket (memory attention, whose kept, memory and
# pointer counts vary while the memory bank fills, uses the most); a shape past the budget runs without a
# graph instead of capturing more memory.
# The torch and TensorRT runners share this policy.
MAX_CUDA_GRAPHS = 64


class StageError(UserError, RuntimeError):
    """A feed does not fit a graph's spec, or a backend failed to run it."""


class StageRunner(ABC):
    """Runs one graph. Use as a context manager or call activate()/deactivate() explicitly."""

    def __init__(self, spec: GraphSpec, *, check_inputs: bool = True):
        self.spec = spec
        self.check_inputs = check_inputs
        self.is_active = False

    # -- lifecycle -------------------------------------------------------------------------------
    def activate(self) -> None:
        if not self.is_active:
            self.activate_impl()
            self.is_active = True

    def deactivate(self) -> None:
        if self.is_active:
            self.deactivate_impl()
            self.is_active = False

    def __enter__(self) -> "StageRunner":
        self.activate()
        return self

    def __exit__(self, *exc) -> None:
        self.deactivate()

    def activate_impl(self) -> None:  # noqa: B027 - optional hook
        pass

    def deactivate_impl(self) -> None:  # noqa: B027 - optional hook
        pass

    # -- inference -------------------------------------------------------------------------------
    def infer(self, feed: Mapping[str, Any]) -> dict[str, Any]:
        """Run the graph on ``feed`` ({input name: array}) and return {output name: array}."""
        if not self.is_active:
            self.activate()
        if self.check_inputs:
            problems = self.spec.check_feed(
                {k: (tuple(v.shape), dtype_name(v)) for k, v in feed.items()}
            )
            if problems:
                raise StageError(f"{self.spec.name}: " + "; ".join(problems))
        return self.infer_impl(feed)

    @abstractmethod
    def infer_impl(self, feed: Mapping[str, Any]) -> dict[str, Any]:
        """Backend-specific execution; ``feed`` has been checked against the spec."""


def infer_rows(
    runner: StageRunner,
    feeds: Sequence[Mapping[str, Any]],
    cat: Callable[[Sequence[Any]], Any],
    max_batch: int | None = None,
) -> list[dict[str, Any]]:
    """Run ``runner`` on many one-row feeds (batch axis of size 1) in as few calls as possible.

    Feeds whose inputs have equal shapes (batch axis aside) and share their batch-free inputs (the
    same array object, e.g. a flag) are concatenated along the batch axis with ``cat`` — at most
    ``max_batch`` rows per call — and each output is cut back into rows ``[i:i+1]``. Nothing is
    padded: every call computes exactly what the per-feed calls would, row by row. Returns one
    {output name: array [1,...]} per feed, in order.
    """
    spec = runner.spec
    batched = [t.name for t in spec.inputs if t.shape and t.shape[0] == BATCH]
    shared = [t.name for t in spec.inputs if t.name not in batched]
    rows_out = {t.name for t in spec.outputs if t.shape and t.shape[0] == BATCH}
    groups: dict[tuple, list[int]] = {}
    for i, feed in enumerate(feeds):
        key = tuple(tuple(feed[n].shape[1:]) for n in batched) + tuple(id(feed[n]) for n in shared)
        groups.setdefault(key, []).append(i)
    step = max_batch or len(feeds) or 1
    results: list[dict[str, Any]] = [{} for _ in feeds]
    for rows in groups.values():
        for start in range(0, len(rows), step):
            chunk = rows[start : start + step]
            feed = {n: cat([feeds[i][n] for i in chunk]) for n in batched}
            feed.update({n: feeds[chunk[0]][n] for n in shared})
            out = runner.infer(feed)
            for j, i in enumerate(chunk):
                results[i] = {n: v[j : j + 1] if n in rows_out and len(chunk) > 1 else v for n, v in out.items()}
    return results


def dtype_name(array: Any) -> str:
    """numpy-style dtype name of a numpy array or torch tensor ('float32', 'int64', ...)."""
    dt = array.dtype
    name = getattr(dt, "name", None)
    if name is not None:  # numpy
        return name
    return str(dt).removeprefix("torch.")  # torch.float32 -> float32


@dataclass
class Backend:
    """What the tracker drives: one runner per graph, the array ops that fit their arrays, and the
    small model constants the loop needs outside the graphs."""

    name: str
    runners: dict[str, StageRunner]
    ops: Any  # an ArrayOps implementation (see runtime/ops.py)
    config: ModelConfig
    # no_mem_embed [C]; mask_downsample_weight [1,1,4,4]; mask_downsample_bias [1] (host numpy arrays)
    constants: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    weights: str | None = None  # checkpoint sha256, "random-init", or None when unknown
    # the router stage's weights: a router file's sha256, "default-weights", or None (unknown / no router)
    router_weights: str | None = None
    precisions: dict[str, str] = field(default_factory=dict)  # {graph: "fp32" | "fp16" | "int8"}
    # What the backend's graphs cannot take, e.g. {"min_keep_ratio": 0.1, "max_cond_frames_in_attn": 4,
    # "max_batch": 1} for TensorRT engines built with bounded profiles (the tracker refuses options
    # outside them, and batches at most max_batch objects or streams per call).
    limits: dict[str, Any] = field(default_factory=dict)
    threads: Any = None  # the ThreadPlan its intra-op CPU threads were set from (runtime/threads.py), if any
    # encodes frames on rectangles around what is tracked (export/encoder_region.py: RegionEncoder),
    # for TrackerOptions.encoder_region; None where the backend's encoder computes whole frames only
    region_encoder: Any = None

    def close(self) -> None:
        for runner in self.runners.values():
            runner.deactivate()

"""fastsam2: SAM2 video object tracking with text-driven token pruning, exported to ONNX Runtime and
TensorRT.

    import fastsam2
    backend = fastsam2.open_backend("ort", "graphs/")          # or "torch" / "trt"
    tracker = fastsam2.SAM2Tracker.from_backend(backend, keep=0.3)
    for i, frame in enumerate(frames):                          # RGB uint8 [H,W,3]
        prompts = {1: fastsam2.Prompt(points=[[480, 300]], labels=[1])} if i == 0 else None
        result = tracker.track(frame, prompts)                  # result.masks {obj_id: bool [H,W]}

Public names: ``open_backend`` (a :class:`Backend` over torch, ONNX Runtime or TensorRT),
``SAM2Tracker`` (one video; ``from_backend`` assembles it with its token router), ``MultiStreamTracker``
(several cameras in one model), ``Prompt`` (points [N,2] + labels [N], a box [4] or a mask [H,W] in
video pixels), ``TrackerOptions``, ``TrackResult``, ``Backend``, ``ModelConfig``, ``open_frames``
(frames of a folder, video file or camera), ``FastSam2Error`` / ``UserError`` (every error a user can
cause is a ``UserError`` with a one-line message).

The rooms (``fastsam2.runtime``, ``fastsam2.calibration``, ``fastsam2.export``, ``fastsam2.tools``) are
the repository's top-level folders; this module is the front door. Importing it is light: each name is
loaded on first use, and ``open_backend("ort", ...)`` loads neither torch nor sam2.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "open_backend": "fastsam2.tools.api",
    "Backend": "fastsam2.runtime.backends.base",
    "SAM2Tracker": "fastsam2.runtime.tracker",
    "TrackerOptions": "fastsam2.runtime.tracker",
    "TrackResult": "fastsam2.runtime.tracker",
    "Prompt": "fastsam2.runtime.tracker",
    "open_frames": "fastsam2.runtime.frames",
    "MultiStreamTracker": "fastsam2.runtime.streams",
    "ModelConfig": "fastsam2.runtime.config",
    "FastSam2Error": "fastsam2.runtime.errors",
    "UserError": "fastsam2.runtime.errors",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from fastsam2.runtime.backends.base import Backend
    from fastsam2.runtime.config import ModelConfig
    from fastsam2.runtime.errors import FastSam2Error, UserError
    from fastsam2.runtime.streams import MultiStreamTracker
    from fastsam2.runtime.frames import open_frames
    from fastsam2.runtime.tracker import Prompt, SAM2Tracker, TrackerOptions, TrackResult
    from fastsam2.tools.api import open_backend


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'fastsam2' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

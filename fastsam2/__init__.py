"""fastsam2: SAM2 video object tracking with text-driven token pruning, exported to ONNX Runtime and
TensorRT.

The rooms (``fastsam2.runtime``, ``fastsam2.calibration``, ``fastsam2.export``, ``fastsam2.tools``) are
the repository's top-level folders; this module is the front door and re-exports the names a user
needs. Importing it is light: each name is loaded on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "SAM2Tracker": "fastsam2.runtime.tracker",
    "TrackerOptions": "fastsam2.runtime.tracker",
    "Prompt": "fastsam2.runtime.tracker",
    "MultiStreamTracker": "fastsam2.runtime.streams",
    "ModelConfig": "fastsam2.runtime.config",
    "FastSam2Error": "fastsam2.runtime.errors",
    "UserError": "fastsam2.runtime.errors",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from fastsam2.runtime.config import ModelConfig
    from fastsam2.runtime.errors import FastSam2Error, UserError
    from fastsam2.runtime.streams import MultiStreamTracker
    from fastsam2.runtime.tracker import Prompt, SAM2Tracker, TrackerOptions


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'fastsam2' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

"""Prompt parsing for the node (pure Python: no rclpy, no fastsam2 import).

Initial prompt parameters: ``box`` = "x0,y0,x1,y1" or ``point`` = "x,y" (frame pixels), for object
``obj_id``. Re-prompts arrive as std_msgs/String JSON on ``~/prompt``::

    {"obj_id": 1, "box": [x0, y0, x1, y1]}
    {"obj_id": 2, "points": [[x, y], [x, y]], "labels": [1, 0]}     # labels default to all 1

A new ``obj_id`` adds an object; an existing one is re-initialised on the next frame.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any


class PromptError(ValueError):
    """A prompt the node cannot use (one line, logged and ignored)."""


@dataclass(frozen=True)
class PromptSpec:
    obj_id: int
    box: tuple[float, float, float, float] | None = None
    points: tuple[tuple[float, float], ...] | None = None
    labels: tuple[int, ...] | None = None

    def as_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``fastsam2.runtime.tracker.Prompt``."""
        if self.box is not None:
            return {"box": list(self.box)}
        return {"points": [list(p) for p in self.points], "labels": list(self.labels)}


def _numbers(values: Any, what: str) -> list[float]:
    try:
        out = [float(v) for v in values]
    except (TypeError, ValueError):
        raise PromptError(f"{what} must be numbers, got {values!r}") from None
    if not all(math.isfinite(v) for v in out):
        raise PromptError(f"{what} must be finite, got {values!r}")
    return out


def _obj_id(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 255:
        raise PromptError(f"obj_id must be an integer in 1..255 (the mono8 mask value), got {value!r}")
    return value


def make_box(values: Any, obj_id: int) -> PromptSpec:
    box = _numbers(values, "box")
    if len(box) != 4:
        raise PromptError(f"box needs 4 numbers x0,y0,x1,y1, got {len(box)}")
    x0, y0, x1, y1 = box
    if not (x1 > x0 and y1 > y0):
        raise PromptError(f"box needs x1 > x0 and y1 > y0, got {box}")
    return PromptSpec(_obj_id(obj_id), box=(x0, y0, x1, y1))


def make_points(points: Any, labels: Any, obj_id: int) -> PromptSpec:
    if not isinstance(points, (list, tuple)) or not points:
        raise PromptError(f"points must be a non-empty list of [x, y], got {points!r}")
    pts = []
    for p in points:
        xy = _numbers(p, "point") if isinstance(p, (list, tuple)) else None
        if xy is None or len(xy) != 2:
            raise PromptError(f"each point must be [x, y], got {p!r}")
        pts.append((xy[0], xy[1]))
    if labels is None:
        labs = [1] * len(pts)
    else:
        if not isinstance(labels, (list, tuple)) or len(labels) != len(pts):
            raise PromptError(f"labels must be a list of {len(pts)} values (1 positive, 0 negative), got {labels!r}")
        if any(lab not in (0, 1) or isinstance(lab, bool) for lab in labels):
            raise PromptError(f"labels must be 0 or 1, got {labels!r}")
        labs = [int(lab) for lab in labels]
    return PromptSpec(_obj_id(obj_id), points=tuple(pts), labels=tuple(labs))


def from_parameters(box: str, point: str, obj_id: int) -> PromptSpec | None:
    """The initial prompt from the ``box`` / ``point`` string parameters (None when both empty)."""
    box, point = box.strip(), point.strip()
    if box and point:
        raise PromptError("set the box parameter or the point parameter, not both")
    if box:
        return make_box(box.split(","), obj_id)
    if point:
        return make_points([point.split(",")], None, obj_id)
    return None


def from_json(text: str, default_obj_id: int = 1) -> PromptSpec:
    """A re-prompt from the ``~/prompt`` topic's JSON text."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise PromptError(f"prompt is not JSON: {e}") from None
    if not isinstance(data, dict):
        raise PromptError(f"prompt must be a JSON object, got {type(data).__name__}")
    unknown = sorted(set(data) - {"obj_id", "box", "points", "labels"})
    if unknown:
        raise PromptError(f"unknown prompt keys {unknown}")
    obj_id = data.get("obj_id", default_obj_id)
    has_box, has_points = "box" in data, "points" in data
    if has_box == has_points:
        raise PromptError('a prompt needs exactly one of "box" or "points"')
    if has_box:
        if "labels" in data:
            raise PromptError('"labels" go with "points", not "box"')
        return make_box(data["box"], obj_id)
    return make_points(data["points"], data.get("labels"), obj_id)

"""What an engine was built with, saved as JSON beside it (``<graph>.engine.json``).

A TensorRT engine only runs on the TensorRT version and GPU it was built for, and it bakes in the
export it came from. The runtime reads this file and calls :func:`check_engine_metadata` *before*
deserializing, so a stale engine fails with one line saying what differs and how to rebuild,
instead of a deserialization error or silently wrong masks.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .base import StageError

from .trt_profiles import Profile

METADATA_SUFFIX = ".engine.json"
PRECISIONS = ("fp32", "fp16", "int8", "fp8")


class EngineMismatchError(StageError):
    """An engine does not fit this machine or this export; the message says how to rebuild.

    A StageError, so every CLI that reports stage errors in one line (``fastsam2 track/demo/eval``,
    ``check-engines``) prints the rebuild hint instead of a traceback."""


@dataclass
class EngineMetadata:
    """Facts about one built engine. ``profiles`` are Profile.to_json() dicts."""

    graph: str
    precision: str
    tensorrt_version: str
    gpu_name: str
    # "8.7" (Jetson Orin), "9.0" (H100); TensorRT-RTX: the targets, "8.0,8.6,8.9,12.0,12.1"
    compute_capability: str
    manifest_sha256: str  # sha256 of the export's manifest.json the ONNX graphs came from
    profiles: list[dict[str, dict[str, list[int]]]] = field(default_factory=list)
    # Build options: workspace_mib, fp32_layers (patterns), fp32_layers_matched (count),
    # obey_precision_constraints, calibration_cache, timing_cache, profile kind...
    build_options: dict[str, Any] = field(default_factory=dict)
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    config_name: str = ""  # the model config (tiny, small, ...) for the rebuild hint
    tensorrt_flavor: str = "tensorrt"  # "tensorrt" or "tensorrt_rtx": which library built it

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")

    def profile_objects(self) -> list[Profile]:
        return [Profile.from_json(p) for p in self.profiles]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "EngineMetadata":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown engine metadata keys {unknown} (written by a newer fastsam2?)")
        return cls(**data)

    def save(self, path: Path) -> None:
        from ..outdir import write_bytes_atomic

        write_bytes_atomic(Path(path), (json.dumps(self.to_json(), indent=2, sort_keys=True) + "\n").encode())

    @classmethod
    def load(cls, path: Path) -> "EngineMetadata":
        path = Path(path)
        if not path.is_file():
            raise EngineMismatchError(
                f"{path} is missing: the engine has no build metadata; rebuild it with "
                "`fastsam2-export --config NAME --out DIR --trt ...`"
            )
        return cls.from_json(json.loads(path.read_text()))


def metadata_path(engine_path: Path) -> Path:
    """``dir/<graph>.engine`` -> ``dir/<graph>.engine.json``."""
    engine_path = Path(engine_path)
    return engine_path.with_name(engine_path.name + ".json")


PRECISION_FLAGS = {"fp32": "", "fp16": " --fp16", "int8": " --int8 --calib FRAMES_DIR"}


def rebuild_hint(meta: EngineMetadata) -> str:
    """The fastsam2-export command (flags that exist) that rebuilds ``meta``'s engines here."""
    config = meta.config_name or "NAME"
    kind = meta.build_options.get("profile_kind", "desktop")
    return (
        f"rebuild the engines on this machine: fastsam2-export --config {config} --out DIR --trt"
        f"{PRECISION_FLAGS[meta.precision]} --profile {kind}"
    )


def check_engine_metadata(
    meta: EngineMetadata,
    *,
    tensorrt_version: str | None = None,
    gpu_name: str | None = None,
    compute_capability: str | None = None,
    manifest_sha256: str | None = None,
    tensorrt_flavor: str | None = None,
) -> None:
    """Raise EngineMismatchError (one line: the field, both values, the rebuild command) when the
    engine was built for another TensorRT, GPU or export. A None argument is not checked.

    TensorRT-RTX engines are portable: their ``compute_capability`` lists the targets and the GPU
    name is not checked; TensorRT engines must match the GPU and its compute capability exactly."""
    if tensorrt_flavor is not None and meta.tensorrt_flavor != tensorrt_flavor:
        raise EngineMismatchError(
            f"{meta.graph} engine was built by {meta.tensorrt_flavor} but this is {tensorrt_flavor}; "
            + rebuild_hint(meta)
        )
    rtx = meta.tensorrt_flavor == "tensorrt_rtx"
    if rtx and compute_capability is not None:
        from .trt_api import RTX_DEFAULT_TARGETS

        targets = tuple(meta.compute_capability.split(","))
        major = int(compute_capability.split(".")[0])
        ok = compute_capability in targets or (targets == RTX_DEFAULT_TARGETS and major > 12)
        if not ok:
            raise EngineMismatchError(
                f"{meta.graph} engine was built by TensorRT-RTX for compute capabilities "
                f"{meta.compute_capability} but this GPU is {compute_capability}; " + rebuild_hint(meta)
            )
    checks = (
        ("TensorRT version", meta.tensorrt_version, tensorrt_version),
        ("compute capability", meta.compute_capability, None if rtx else compute_capability),
        ("GPU", meta.gpu_name, None if rtx else gpu_name),
        ("export manifest sha256", meta.manifest_sha256, manifest_sha256),
    )
    for what, built, here in checks:
        if here is not None and str(built) != str(here):
            raise EngineMismatchError(
                f"{meta.graph} engine was built for {what} {built!r} but this is {here!r}; "
                + rebuild_hint(meta)
            )

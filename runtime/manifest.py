"""An export directory's ``manifest.json``: what was exported, from which weights, with which specs.

Written by ``fastsam2.export.onnx_export`` next to the ``.onnx`` graphs and ``constants.npz``; read by
torch-free runtimes (ONNX Runtime, TensorRT) to check that the graphs are the ones the manifest
names (sha256), from the expected config and fastsam2 version. Pure Python + json.

Each graph's interface is recorded in full (names, dtypes, shapes with named dynamic axes, atol), so
a runtime can rebuild the :class:`~fastsam2.runtime.specs.GraphSpec` of a graph whose spec is not in
this fastsam2 (e.g. a router with another text width) from the manifest alone.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import ModelConfig
from .specs import REQUIRED_GRAPHS, GraphSpec, TensorSpec
from .errors import UserError

MANIFEST_NAME = "manifest.json"
CONSTANTS_NAME = "constants.npz"
MANIFEST_FORMAT = 1


class ManifestError(UserError, ValueError):
    """A manifest is missing, unreadable, or does not match what the caller expects (one line)."""


def fastsam2_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("fastsam2")
    except PackageNotFoundError:  # running from a source tree that is not installed
        return "0+unknown"


def _tensor_json(t: TensorSpec) -> dict[str, Any]:
    return {
        "name": t.name,
        "dtype": t.dtype,
        "shape": list(t.shape),
        "dynamic_axes": {str(k): v for k, v in t.dynamic_axes.items()},
    }


def spec_to_json(spec: GraphSpec) -> dict[str, Any]:
    return {
        "inputs": [_tensor_json(t) for t in spec.inputs],
        "outputs": [_tensor_json(t) for t in spec.outputs],
        "atol": dict(spec.atol),
    }


def spec_from_json(name: str, data: dict[str, Any]) -> GraphSpec:
    def tensors(items):
        return tuple(TensorSpec(t["name"], t["dtype"], tuple(t["shape"])) for t in items)

    return GraphSpec(
        name=name,
        inputs=tensors(data["inputs"]),
        outputs=tensors(data["outputs"]),
        atol={k: float(v) for k, v in data.get("atol", {}).items()},
    )


@dataclass
class GraphEntry:
    """One exported graph: its file (relative to the export directory), sha256 and interface."""

    name: str
    file: str
    sha256: str
    spec: GraphSpec

    def to_json(self) -> dict[str, Any]:
        return {"file": self.file, "sha256": self.sha256, **spec_to_json(self.spec)}

    @classmethod
    def from_json(cls, name: str, data: dict[str, Any]) -> "GraphEntry":
        return cls(name=name, file=data["file"], sha256=data["sha256"], spec=spec_from_json(name, data))


@dataclass
class Manifest:
    """Contents of ``manifest.json`` (see the module docstring)."""

    config_name: str
    model_config: ModelConfig
    weights: str  # checkpoint sha256, or "random-init"
    opset: int
    fill: str
    graphs: dict[str, GraphEntry]
    router_weights: str | None = None  # sha256 of the router's weights file, or None
    fastsam2_version: str = field(default_factory=fastsam2_version)
    versions: dict[str, str | None] = field(default_factory=dict)  # torch, sam2, onnx, onnxruntime
    validation: dict[str, Any] | None = None  # max |Δ| per graph/output when validated at export
    format: int = MANIFEST_FORMAT

    def to_json(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "fastsam2_version": self.fastsam2_version,
            "config_name": self.config_name,
            "model_config": self.model_config.to_json(),
            "weights": self.weights,
            "router_weights": self.router_weights,
            "opset": self.opset,
            "fill": self.fill,
            "graphs": {name: g.to_json() for name, g in self.graphs.items()},
            "versions": dict(self.versions),
            "validation": self.validation,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Manifest":
        if not isinstance(data, dict) or not isinstance(data.get("graphs"), dict):
            raise ManifestError("not a fastsam2 manifest (expected an object with a \"graphs\" object)")
        if data.get("format") != MANIFEST_FORMAT:
            raise ManifestError(
                f"manifest format {data.get('format')!r} is not {MANIFEST_FORMAT} "
                "(written by another fastsam2 version?)"
            )
        return cls(
            format=data["format"],
            fastsam2_version=data["fastsam2_version"],
            config_name=data["config_name"],
            model_config=ModelConfig.from_json(data["model_config"]),
            weights=data["weights"],
            router_weights=data.get("router_weights"),
            opset=int(data["opset"]),
            fill=data["fill"],
            graphs={n: GraphEntry.from_json(n, g) for n, g in data["graphs"].items()},
            versions=dict(data.get("versions", {})),
            validation=data.get("validation"),
        )

    def write(self, directory: str | Path) -> Path:
        path = Path(directory) / MANIFEST_NAME
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=2, sort_keys=False) + "\n")
        tmp.replace(path)
        return path

    @classmethod
    def read(cls, directory: str | Path) -> "Manifest":
        path = Path(directory) / MANIFEST_NAME
        if not path.is_file():
            raise ManifestError(f"no {MANIFEST_NAME} in {directory} (not a fastsam2 export directory?)")
        try:
            manifest = cls.from_json(json.loads(path.read_text()))
        except ManifestError as e:
            raise ManifestError(f"{path}: {e}") from None
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise ManifestError(f"{path}: unreadable manifest ({type(e).__name__}: {e})") from e
        missing = [g for g in REQUIRED_GRAPHS if g not in manifest.graphs]
        if missing:
            raise ManifestError(f"{path}: no {', '.join(missing)} graph listed (incomplete export): re-export")
        return manifest

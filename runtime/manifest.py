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
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .config import ModelConfig
from .specs import REAL, REQUIRED_GRAPHS, GraphSpec, SpecDims, TensorSpec, Values
from .errors import UserError

MANIFEST_NAME = "manifest.json"
CONSTANTS_NAME = "constants.npz"
MANIFEST_FORMAT = 1
GRAPH_CONFIG_KEY = "fastsam2.model_config"  # an exported graph's metadata_props key: its ModelConfig JSON


class ManifestError(UserError, ValueError):
    """A manifest is missing, unreadable, or does not match what the caller expects (one line)."""


class GraphLoadError(UserError, ValueError):
    """A graph or engine file that is missing, corrupt, or not the one the manifest names (one line)."""


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks (graphs and checkpoints can be GBs)."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


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
        "values": {"kind": t.values.kind, "low": t.values.low, "high": t.values.high,
                   "choices": list(t.values.choices)},
    }


def spec_to_json(spec: GraphSpec) -> dict[str, Any]:
    return {
        "inputs": [_tensor_json(t) for t in spec.inputs],
        "outputs": [_tensor_json(t) for t in spec.outputs],
        "atol": dict(spec.atol),
    }


def spec_from_json(name: str, data: dict[str, Any]) -> GraphSpec:
    def values(v: dict[str, Any] | None) -> Values:
        if not v:
            return REAL
        return Values(v["kind"], float(v["low"]), float(v["high"]), tuple(v.get("choices", ())))

    def tensors(items):
        return tuple(TensorSpec(t["name"], t["dtype"], tuple(t["shape"]), values(t.get("values"))) for t in items)

    return GraphSpec(
        name=name,
        inputs=tensors(data["inputs"]),
        outputs=tensors(data["outputs"]),
        atol={k: float(v) for k, v in data.get("atol", {}).items()},
    )


# Graph variants: the same stage, spec and weights written for one runtime. "ort": attention as
# ONNX Runtime's com.microsoft.MultiHeadAttention (its fused flash kernel on the CPU, no K x M score
# matrix); the plain file is standard ONNX, the one TensorRT parses.
ORT_VARIANT = "ort"


@dataclass
class GraphVariant:
    """Another file of a graph (same spec, same weights) for one runtime, and what differs."""

    file: str
    sha256: str
    runtime: str  # the runtime it is written for ("onnxruntime")
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"file": self.file, "sha256": self.sha256, "runtime": self.runtime, "note": self.note}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "GraphVariant":
        return cls(file=data["file"], sha256=data["sha256"], runtime=data["runtime"], note=data.get("note", ""))


@dataclass
class GraphEntry:
    """One exported graph: its file (relative to the export directory), sha256 and interface, plus
    runtime-specific variants of it ({variant name: :class:`GraphVariant`})."""

    name: str
    file: str
    sha256: str
    spec: GraphSpec
    variants: dict[str, GraphVariant] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out = {"file": self.file, "sha256": self.sha256, **spec_to_json(self.spec)}
        if self.variants:
            out["variants"] = {k: v.to_json() for k, v in self.variants.items()}
        return out

    @classmethod
    def from_json(cls, name: str, data: dict[str, Any]) -> "GraphEntry":
        variants = {k: GraphVariant.from_json(v) for k, v in data.get("variants", {}).items()}
        return cls(name=name, file=data["file"], sha256=data["sha256"], spec=spec_from_json(name, data),
                   variants=variants)

    def file_for(self, variant: str | None) -> tuple[str, str]:
        """(file, sha256) of ``variant`` where this graph has it, else of the plain graph."""
        v = self.variants.get(variant) if variant else None
        return (v.file, v.sha256) if v is not None else (self.file, self.sha256)


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

    def graph_files(self) -> list[tuple[str, str]]:
        """[(label, file)] of every graph file: ``name`` for a plain graph, ``name[variant]`` for a
        variant (the labels validation reports under)."""
        out = []
        for name, g in self.graphs.items():
            out.append((name, g.file))
            out.extend((f"{name}[{v}]", var.file) for v, var in g.variants.items())
        return out

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


def graph_config_problem(metadata: dict[str, str], manifest: Manifest, graph: str) -> str | None:
    """Why the manifest's model config is not the one ``graph`` was exported with (its
    ``metadata_props``, ``metadata``), or None. Every field is compared: the tracker loop runs on them
    (``num_maskmem`` memory frames, pointer counts, thresholds, normalisation), and an edited one gives
    wrong masks with no error."""
    made_for = metadata.get("fastsam2.config_name")
    if made_for is not None and made_for != manifest.config_name:
        return f"{graph} was exported from {made_for!r}, but {MANIFEST_NAME} says {manifest.config_name!r} (edited?): re-export"
    text = metadata.get(GRAPH_CONFIG_KEY)
    if text is None:
        return None  # a graph from before graphs carried their config: the spec checks still apply
    try:
        theirs = ModelConfig.from_json(json.loads(text)).to_json()
    except (ValueError, TypeError) as e:
        return f"{graph}: unreadable {GRAPH_CONFIG_KEY} metadata ({e}): re-export"
    ours = manifest.model_config.to_json()
    differ = [k for k in ours if ours[k] != theirs.get(k)]
    if differ:
        shown = ", ".join(f"{k}={ours[k]!r} (graph: {theirs.get(k)!r})" for k in differ[:3])
        return f"{MANIFEST_NAME} says {shown}, but {graph} was exported otherwise (edited?): re-export"
    return None


@dataclass
class ExportDir:
    """An export directory as every backend loads it: the manifest (checked against this fastsam2's
    specs and version), the model constants and the hashes of the files it lists.

    ``fastsam2-export`` writes it (``<graph>.onnx``, ``constants.npz``, ``manifest.json``; engines
    and their metadata beside them with ``--trt``); the ONNX Runtime and TensorRT backends open it
    with :meth:`open` and take every file through :meth:`graph_file` / :meth:`verified`.
    """

    path: Path
    manifest: Manifest

    @classmethod
    def open(cls, path: str | Path, *, expect_config: str | None = None, check_version: bool = True) -> "ExportDir":
        """Read and check ``path``; every problem is one :class:`ManifestError` naming the file."""
        from .specs import graph_specs

        path = Path(path)
        if not path.is_dir():
            raise ManifestError(f"export directory not found: {path}")
        manifest = Manifest.read(path)
        if expect_config is not None and manifest.config_name != expect_config:
            raise ManifestError(f"export is for config {manifest.config_name!r}, expected {expect_config!r}")
        if check_version and manifest.fastsam2_version != fastsam2_version():
            raise ManifestError(
                f"export was written by fastsam2 {manifest.fastsam2_version}, this is "
                f"{fastsam2_version()}: re-export the graphs"
            )
        known = graph_specs(manifest.model_config.spec_dims())

        def interface(spec: GraphSpec) -> list:  # allowed values too: num_maskmem bounds memory_tpos_idx
            return [(t.name, t.dtype, t.shape, t.values) for t in (*spec.inputs, *spec.outputs)]

        for name, entry in manifest.graphs.items():
            # The router's text width is the router's; the SAM2 graphs must match this fastsam2's specs.
            if name in known and name != "router" and interface(entry.spec) != interface(known[name]):
                raise ManifestError(
                    f"graph {name}: the interface manifest.json records does not fit its model_config "
                    f"({', '.join(f.name for f in fields(SpecDims) if f.name != 'text_dim')}) or this "
                    "fastsam2's spec (edited, or exported by another version?): re-export the graphs"
                )
        return cls(path, manifest)

    @property
    def config(self) -> ModelConfig:
        return self.manifest.model_config

    def entry(self, name: str) -> GraphEntry:
        if name not in self.manifest.graphs:
            raise ManifestError(f"graph {name!r} is not in {self.path / MANIFEST_NAME}")
        return self.manifest.graphs[name]

    def graph_file(self, name: str) -> Path:
        """The ``.onnx`` file of graph ``name`` (checked to exist)."""
        path = self.path / self.entry(name).file
        if not path.is_file():
            raise GraphLoadError(f"graph file missing: {path}")
        return path

    def verified(self, path: Path, sha256: str | None, *, check: bool = True) -> Path:
        """``path`` after checking it exists and (with ``check``) has the sha256 the export recorded."""
        if not path.is_file():
            raise GraphLoadError(f"graph file missing: {path}")
        if check and sha256 is not None and file_sha256(path) != sha256:
            raise GraphLoadError(f"{path} does not match the manifest (sha256 differs): re-export")
        return path

    def constants(self) -> dict[str, Any]:
        """The small model constants the tracker loop needs ({name: numpy array})."""
        from .npz import read_npz

        path = self.path / CONSTANTS_NAME
        if not path.is_file():
            raise GraphLoadError(f"constants file missing: {path}")
        consts = read_npz(path, what="the export's model constants (re-export to fix)", error=GraphLoadError)
        C = self.manifest.model_config.hidden_dim if self.manifest is not None else None
        sizes = {"no_mem_embed": C, "no_obj_ptr": C, "mask_downsample_weight": None, "mask_downsample_bias": None}
        for name, size in sizes.items():
            if name not in consts or (size not in (None, consts[name].size)):
                found = "missing" if name not in consts else f"{consts[name].size} values, expected {size}"
                raise GraphLoadError(f"{path}: constant {name!r} {found} (re-export to fix)")
        return consts

    def manifest_sha256(self) -> str:
        return file_sha256(self.path / MANIFEST_NAME)

"""Export the SAM2 stages (and an optional token router) to ONNX, one graph per spec.

    model = build_sam2("tiny", "sam2.1_hiera_tiny.pt")
    manifest = export_graphs(model, "out/tiny", validate=True, frames="frames/")

Every name, dtype and dynamic axis comes from the stage's :class:`~fastsam2.runtime.specs.GraphSpec`.
Graphs are traced once each with the TorchScript exporter (``dynamo=False``: at opset 17 it gives the
plainest graphs for TensorRT's parser; Hiera's position embedding is traced as a constant, the image
size being fixed), attention as ONNX Runtime's fused node (:mod:`fastsam2.export.attention`), then
cleaned by the onnxscript optimizer (constant folding, shape arithmetic: about half the nodes),
checked for frozen dynamic axes, given the spec's IO shapes and written twice where the graph has
attention: as ``<graph>.ort.onnx`` (ONNX Runtime) and, attention in standard operators, as
``<graph>.onnx`` (TensorRT, and the static TensorRT-10 compatibility check), each checked by
``onnx.checker``. Everything is written into a temporary directory beside ``out_dir`` and renamed at
the end, so a failed export leaves nothing.
"""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from fastsam2.runtime.config import ModelConfig
from fastsam2.runtime.manifest import (
    CONSTANTS_NAME,
    GRAPH_CONFIG_KEY,
    ORT_VARIANT,
    GraphEntry,
    GraphVariant,
    Manifest,
)
from fastsam2.runtime.specs import (
    IMAGE_ENCODER,
    MASK_DECODER,
    MEMORY_ATTENTION,
    REGION_GRAPHS,
    MEMORY_ENCODER,
    ROUTER,
    GraphSpec,
)
from fastsam2.runtime.errors import UserError
from fastsam2.runtime.outdir import atomic_output_dir

DEFAULT_OPSET = 17
GRAPH_ORDER = (IMAGE_ENCODER, ROUTER, MEMORY_ATTENTION, MASK_DECODER, MEMORY_ENCODER, *REGION_GRAPHS)
# ONNX protobufs cannot exceed 2 GiB; larger graphs keep their weights in a side file.
_EXTERNAL_DATA_BYTES = 1_800_000_000


class ExportError(UserError, ValueError):
    """An export that cannot be done or failed a check (one-line message for the CLI)."""


def graph_file(name: str, variant: str | None = None) -> str:
    """``<graph>.onnx``, or ``<graph>.<variant>.onnx`` for a runtime-specific variant."""
    return f"{name}.onnx" if variant is None else f"{name}.{variant}.onnx"


# -- dummy inputs ---------------------------------------------------------------------------------


def dummy_inputs(spec: GraphSpec, *, seed: int = 0) -> dict[str, Any]:
    """Valid torch inputs for tracing ``spec``: :meth:`GraphSpec.sample` at ``spec.trace_sizes``
    (never 1 on a dynamic axis, so that the trace freezes none)."""
    import torch

    sample = spec.sample(spec.trace_sizes, np.random.default_rng(seed))
    return {name: torch.from_numpy(value) for name, value in sample.items()}


# -- one graph ------------------------------------------------------------------------------------


def _io_dims(value_info) -> list[int | str | None]:
    dims = []
    for d in value_info.type.tensor_type.shape.dim:
        dims.append(d.dim_param if d.dim_param else (d.dim_value if d.HasField("dim_value") else None))
    return dims


def frozen_axes(model, spec: GraphSpec) -> list[str]:
    """Dynamic axes of ``spec`` that the exported graph's IO declares with a fixed size."""
    problems = []
    io = {v.name: v for v in (*model.graph.input, *model.graph.output)}
    for t in (*spec.inputs, *spec.outputs):
        if t.name not in io:
            problems.append(f"{t.name}: not in the graph")
            continue
        dims = _io_dims(io[t.name])
        for axis, sym in t.dynamic_axes.items():
            if axis < len(dims) and isinstance(dims[axis], int) and dims[axis] > 0:
                problems.append(f"{t.name} axis {axis} ({sym}) frozen to {dims[axis]}")
    return problems


def _set_io_shapes(model, spec: GraphSpec) -> None:
    """Declare the graph IO exactly as the spec does (fixed sizes and named dynamic axes); the
    exporter leaves generated names such as ``Wherelow_res_masks_dim_1`` on outputs."""
    io = {v.name: v for v in (*model.graph.input, *model.graph.output)}
    for t in (*spec.inputs, *spec.outputs):
        shape = io[t.name].type.tensor_type.shape
        del shape.dim[:]
        for d in t.shape:
            dim = shape.dim.add()
            if isinstance(d, str):
                dim.dim_param = d
            else:
                dim.dim_value = d
    # Intermediate shapes inferred before the IO was renamed may carry the generated symbols.
    del model.graph.value_info[:]


@contextlib.contextmanager
def _static_position_embeddings(module: Any, config: ModelConfig):
    """Trace Hiera's position embedding as a constant.

    ``Hiera._get_pos_embed`` resizes its table to the patch grid and tiles the window embedding by
    sizes read from tensor shapes; traced, that is Shape→Div→Tile arithmetic (and ``If`` nodes) that
    TensorRT rejects (Tile repeats from a shape). The image size is fixed per export, so the table
    is computed once, eagerly, by the same sam2 code, and returned as a constant while tracing.
    """
    import torch

    trunks = [m for m in module.modules() if hasattr(m, "_get_pos_embed") and hasattr(m, "patch_embed")]
    saved = []
    for trunk in trunks:
        stride = trunk.patch_embed.proj.stride
        hw = (config.image_size // stride[0], config.image_size // stride[1])
        with torch.no_grad():
            table = trunk._get_pos_embed(hw).detach().clone()

        def fixed(size, _table=table, _hw=hw):
            return _table

        saved.append((trunk, trunk.__dict__.get("_get_pos_embed")))
        trunk._get_pos_embed = fixed
    try:
        yield
    finally:
        for trunk, before in saved:
            if before is None:
                del trunk._get_pos_embed
            else:
                trunk._get_pos_embed = before


def _optimize(model):
    import onnxscript.optimizer

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return onnxscript.optimizer.optimize(model)


def graph_metadata(config: ModelConfig) -> dict[str, str]:
    """The model facts written into every exported graph's ``metadata_props`` (the whole
    :class:`ModelConfig`, which the ONNX Runtime backend checks the manifest's copy against)."""
    return {"fastsam2.config_name": config.config_name, "fastsam2.image_size": str(config.image_size),
            GRAPH_CONFIG_KEY: config.dumps()}


def trace_graph(
    module: Any,
    spec: GraphSpec,
    config: ModelConfig,
    *,
    opset: int = DEFAULT_OPSET,
    optimize: bool = True,
    scratch: str | Path,
) -> Any:
    """Trace one stage module into an ``onnx.ModelProto`` with its attention as ONNX Runtime's
    MultiHeadAttention (:mod:`fastsam2.export.attention`), IO declared as the spec says.

    ``scratch``: a file path the exporter writes through (removed after; a graph in a BytesIO would
    be one more in-memory copy of its weights). Raises :class:`ExportError` naming the graph when the
    trace froze a dynamic axis.
    """
    import onnx
    import torch

    from .attention import ort_attention

    feeds = dummy_inputs(spec)
    scratch = Path(scratch)
    with torch.no_grad(), warnings.catch_warnings(), _static_position_embeddings(module, config), ort_attention():
        # TracerWarnings about Python ints taken from shapes are expected: fixed sizes (S, H, W, C)
        # become constants, and the frozen-axis check below catches any dynamic one.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            tuple(feeds[n] for n in spec.input_names),
            str(scratch),
            input_names=spec.input_names,
            output_names=spec.output_names,
            dynamic_axes=spec.dynamic_axes(),
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
    del feeds
    try:
        model = onnx.load(str(scratch))
    finally:
        scratch.unlink(missing_ok=True)
    frozen = frozen_axes(model, spec)
    if frozen:
        raise ExportError(f"{spec.name}: the trace froze dynamic axes: {'; '.join(frozen)}")
    if optimize:
        model = _optimize(model)
    _set_io_shapes(model, spec)
    model.producer_name = "fastsam2"
    # The graph names the model it came from, so a runtime can refuse a manifest edited to another.
    for key, value in graph_metadata(config).items():
        model.metadata_props.add(key=key, value=value)
    return model


def save_graph(model: Any, spec: GraphSpec, path: str | Path) -> Path:
    """Write ``model`` to ``path`` (weights in a side file past protobuf's 2 GiB) and run
    ``onnx.checker`` (full check) on the file; :class:`ExportError` when it rejects the graph."""
    import onnx

    path = Path(path)
    if model.ByteSize() > _EXTERNAL_DATA_BYTES:
        onnx.save(model, path, save_as_external_data=True, location=path.name + ".data")
    else:
        onnx.save(model, path)
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except onnx.checker.ValidationError as e:
        first = str(e).strip().splitlines()[0]
        raise ExportError(f"{spec.name}: onnx.checker rejects the exported graph: {first}") from e
    return path


def trt_compat_report(model_or_path: Any, spec: GraphSpec, config: ModelConfig):
    """The static TensorRT-10 check of one graph (export/trt/compat.py) with the desktop profiles."""
    from .trt.compat import check_onnx_for_trt
    from fastsam2.runtime.backends.trt_profiles import profiles_for

    return check_onnx_for_trt(model_or_path, spec, profiles_for(spec, config, kind="desktop"))


# -- all graphs -----------------------------------------------------------------------------------


def package_versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {}
    for pkg in ("torch", "sam2", "onnx", "onnxruntime", "onnxscript"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def export_graphs(
    model: Any,
    out_dir: str | Path,
    *,
    opset: int = DEFAULT_OPSET,
    fill: str = "norm",
    router_stage: Any = None,
    router_weights: str | Path | None = None,
    validate: bool = True,
    frames: Any = None,
    overwrite: bool = False,
    trt_check: bool = True,
    ort_variants: bool = True,
    optimize: bool = True,
    encoder_region: bool = False,
    log: Any = None,
) -> Manifest:
    """Export ``model``'s stages (+ ``router_stage``, any module with a ``.spec``) to ``out_dir``.

    Writes ``<graph>.onnx`` per graph, ``constants.npz`` (:func:`model_constants`) and
    ``manifest.json``. ``validate``: compare every graph in ONNX Runtime against its torch stage on
    ``frames`` (a folder of frames, a list of RGB uint8 arrays, or None for a synthetic image) at two
    shape sets (see :func:`fastsam2.export.validate.validate_graphs`); a failure raises
    :class:`~fastsam2.export.validate.ValidationError` listing every problem. ``trt_check``: a graph
    that fails the static TensorRT-10 check raises :class:`ExportError` with the full report.
    ``router_weights``: the router's weights file, hashed into the manifest. ``ort_variants``: also
    write ``<graph>.ort.onnx`` for every graph with attention (``MultiHeadAttention`` for ONNX
    Runtime; the manifest lists it as the graph's "ort" variant, the plain file stays TensorRT's).
    ``optimize``: clean each graph with the onnxscript optimizer (about half the nodes: shape
    arithmetic folded; 10 s of a 1024-px export). Without it the graphs compute the same and pass
    the same checks (ONNX Runtime folds at session start); ``fastsam2 demo`` skips it.
    ``encoder_region``: also the three region graphs (``REGION_GRAPHS``: the image encoder split so
    that ``TrackerOptions.encoder_region`` runs on the exported graphs too).
    """
    from fastsam2.export.models import file_sha256, model_config
    from fastsam2.export.stages import FILL_MODES, build_stages, model_constants

    from .attention import decompose_attention, has_fused_attention

    if fill not in FILL_MODES:
        raise ExportError(f"fill must be one of {FILL_MODES}, got {fill!r}")
    if opset < 17:
        raise ExportError(f"opset {opset} < 17: LayerNormalization needs opset 17")
    say = log or (lambda msg: None)
    config = model_config(model)
    stages: dict[str, Any] = dict(build_stages(model, fill=fill))
    if encoder_region:
        from .encoder_region import region_stages

        stages.update(region_stages(model))
    if router_stage is not None:
        if getattr(router_stage, "spec", None) is None:
            raise ExportError("router_stage has no .spec (a GraphSpec)")
        router_stage.eval()
        stages[router_stage.spec.name] = router_stage
    order = [n for n in GRAPH_ORDER if n in stages] + [n for n in stages if n not in GRAPH_ORDER]

    out_dir = Path(out_dir)
    with atomic_output_dir(out_dir, overwrite=overwrite, kind="export") as tmp:
        entries: dict[str, GraphEntry] = {}
        compat: dict[str, list[str]] = {}
        for name in order:
            stage = stages[name]
            spec = stage.spec
            path = tmp / graph_file(name)
            say(f"exporting {name} -> {path.name}")
            # one trace: its attention as ONNX Runtime's fused node (the "ort" variant), then the
            # same graph with attention in standard operators (the plain graph TensorRT parses)
            onnx_model = trace_graph(stage, spec, config, opset=opset, optimize=optimize,
                                     scratch=tmp / f".{name}.trace")
            if ort_variants and has_fused_attention(onnx_model):
                vpath = save_graph(onnx_model, spec, tmp / graph_file(name, ORT_VARIANT))
                variants = {ORT_VARIANT: GraphVariant(
                    file=vpath.name, sha256=file_sha256(vpath), runtime="onnxruntime",
                    note="attention as com.microsoft.MultiHeadAttention (fused CPU kernel)",
                )}
            else:
                variants = {}
            save_graph(decompose_attention(onnx_model), spec, path)
            if trt_check:
                report = trt_compat_report(onnx_model, spec, config)
                compat[name] = list(report.problems)
                if not report.ok:
                    raise ExportError(report.format().replace("\n", " "))
            entries[name] = GraphEntry(name=name, file=path.name, sha256=file_sha256(path), spec=spec,
                                       variants=variants)
            del onnx_model
        np.savez(tmp / CONSTANTS_NAME, **model_constants(model))
        if router_weights is not None:
            router_hash = file_sha256(router_weights)
        else:
            router_hash = getattr(router_stage, "fastsam2_weights", None) if router_stage is not None else None
        manifest = Manifest(
            config_name=config.config_name,
            model_config=config,
            weights=getattr(model, "fastsam2_weights", "unknown"),
            opset=opset,
            fill=fill,
            graphs=entries,
            router_weights=router_hash,
            versions=package_versions(),
        )
        if validate:
            from .validate import validate_graphs

            say("validating graphs in ONNX Runtime against torch")
            report = validate_graphs(tmp, stages, frames, manifest=manifest)
            manifest.validation = report.to_json()
        manifest.write(tmp)
    return manifest


def export_summary(manifest: Manifest, out_dir: str | Path) -> list[str]:
    """Human-readable lines: one per graph (file, size, max |Δ| when validated)."""
    lines = []
    val = (manifest.validation or {}).get("max_abs_diff", {})
    for label, file in manifest.graph_files():
        size = (Path(out_dir) / file).stat().st_size / 2**20
        diffs = val.get(label)
        extra = ""
        if diffs:
            extra = "  max|Δ| " + ", ".join(f"{k}={v:.1e}" for k, v in diffs.items())
        lines.append(f"{file:28s} {size:8.1f} MiB{extra}")
    return lines


"""One way to open a backend: ``open_backend("torch" | "ort" | "trt", ...)``, used by every command,
the benchmarks, the Jetson scripts and the ROS node, and re-exported as ``fastsam2.open_backend``.

It lives in the top room because the torch backend is built from ``fastsam2.export``; every engine
library (torch, sam2, onnxruntime, tensorrt) is imported inside the branch that needs it, so opening
an ONNX Runtime export loads neither torch nor sam2. Option problems are one :class:`UsageError` line
naming the option as the command line spells it (the keyword arguments carry the same names).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from fastsam2.runtime.errors import UsageError

if TYPE_CHECKING:
    from fastsam2.runtime.backends.base import Backend
    from fastsam2.runtime.router import RouterWeights

KINDS = ("torch", "ort", "trt")
DTYPES = ("float32", "bfloat16", "float16")
RANDOM_WEIGHTS_NOTE = "RANDOM weights: masks are meaningless (timings are real)"
_DEVICE = re.compile(r"(cpu|cuda)(?::(\d+))?")


def require_cuda(what: str) -> None:
    """Refuse ``what`` in one line where torch sees no CUDA GPU (the GPU paths hold torch CUDA buffers)."""
    try:
        import torch
    except ImportError:
        raise UsageError(f"{what} needs torch with CUDA (torch is not installed)") from None
    if not torch.cuda.is_available():
        raise UsageError(f"{what} needs a CUDA GPU, and torch sees none on this machine")


def parse_device(name: str) -> tuple[str, int | None]:
    """("cpu" | "cuda", index or None) of a device name, refusing anything else in one line."""
    match = _DEVICE.fullmatch(name.strip())
    if match is None:
        raise UsageError(f"--device {name!r} is not a device (use cpu, cuda or cuda:N)")
    return match.group(1), None if match.group(2) is None else int(match.group(2))


def torch_device(name: str):
    """A torch.device for --device, refusing unknown names and a CUDA device that is not there."""
    kind, index = parse_device(name)
    try:
        import torch
    except ImportError as e:
        raise UsageError(f"--backend torch needs torch and sam2 (pip install fastsam2[export]): {e}") from None
    if kind == "cuda":
        require_cuda(f"--device {name}")
        if index is not None and index >= torch.cuda.device_count():
            raise UsageError(f"--device {name}: torch sees {torch.cuda.device_count()} CUDA device(s)")
    return torch.device(name)


def check_backend_options(
    kind: str,
    graphs: str | Path | None = None,
    *,
    checkpoint: str | Path | None = None,
    config: str | None = None,
    device: str | None = None,
    dtype: str = "float32",
    router: str | Path | None = None,
) -> RouterWeights | None:
    """Refuse contradictory or impossible backend options before anything heavy is built; returns the
    router file's validated contents (a broken file, or one that is not the export's, is refused)."""
    if kind not in KINDS:
        raise UsageError(f"--backend {kind!r}: choose one of {', '.join(KINDS)}")
    if dtype not in DTYPES:
        raise UsageError(f"--dtype {dtype!r}: choose one of {', '.join(DTYPES)}")
    if router and not Path(router).is_file():
        raise UsageError(f"--router: file not found: {router}")
    weights = None
    if router:
        from fastsam2.runtime.router import read_router_file

        weights = read_router_file(router)
    if kind == "torch":
        from fastsam2.runtime.config import resolve_model

        resolve_model(config, None if checkpoint is None else str(checkpoint))  # a shipped name or a file
        if graphs:
            raise UsageError("--graphs is for --backend ort/trt; --backend torch builds the model itself")
        torch_device(device or "cpu")
        return weights
    if not graphs:
        made_by = "fastsam2-export" if kind == "ort" else "fastsam2-export --trt"
        raise UsageError(f"--backend {kind} needs --graphs DIR (made by {made_by})")
    given = [f"--{n}" for n, v in (("checkpoint", checkpoint), ("dtype", dtype)) if v not in (None, "float32")]
    if given:
        raise UsageError(
            f"{', '.join(given)}: fixed when the graphs were exported; with --backend {kind} "
            "re-export instead (or use --backend torch)"
        )
    if device is not None and kind == "ort":
        from fastsam2.runtime.backends.ort import cuda_device_index, require_cuda_provider

        if cuda_device_index(device) is not None:  # ONNX Runtime's own device rule
            require_cuda_provider(device)
    elif device is not None and parse_device(device)[0] != "cuda":
        raise UsageError(f"--device {device}: TensorRT engines run on cuda")
    if kind == "trt":
        require_cuda("--backend trt")
    if weights is not None and router is not None:
        from fastsam2.runtime.manifest import Manifest
        from fastsam2.runtime.router import check_router_file

        check_router_file(weights, router, Manifest.read(graphs).router_weights, f"exported in {graphs}")
    return weights


def open_backend(
    kind: str,
    graphs: str | Path | None = None,
    *,
    checkpoint: str | Path | None = None,
    config: str | None = None,
    image_size: int | None = None,
    device: str | None = None,
    dtype: str = "float32",
    threads: int | None = None,
    router: str | Path | None = None,
    cuda_graphs: bool = False,
    precision: str = "fp32",
    providers: Sequence[Any] | None = None,
    quiet: bool = False,
) -> Backend:
    """The backend that runs the SAM2 graphs: what a tracker drives.

    ``kind``: "torch" (SAM2 built in torch from ``config`` — tiny, small, base_plus, large — and
    ``checkpoint``, an official .pt; without one, seeded RANDOM weights; ``device`` cpu/cuda[:N],
    ``dtype`` the CUDA autocast dtype, ``image_size`` the model input side), "ort" (ONNX Runtime over
    ``graphs``, a ``fastsam2-export`` directory; ``device`` cuda[:N] uses ONNX Runtime's CUDA provider;
    ``precision`` "int8" the calibrated graphs, "fp16"/"fp8" those precisions' graphs; torch: "fp8" the
    FP8 trunk of :mod:`fastsam2.export.fp8`; ``providers`` ONNX Runtime's execution providers,
    in place of the device's) or "trt" (TensorRT engines built into ``graphs`` with
    ``fastsam2-export --trt``; ``cuda_graphs`` replays each engine's launch per input shape).
    ``config``/``image_size`` given with an export must be the export's; ``checkpoint`` may also name
    a shipped model (its config comes with it). ``threads``: intra-op CPU
    threads of torch / ONNX Runtime (default: the idle cores, :func:`~fastsam2.runtime.threads.plan_threads`),
    recorded in ``backend.threads``. ``router``: a router .safetensors — the torch backend runs its
    MLP; an export must have been made with it (its hash is the manifest's ``router_weights``).
    ``quiet``: no banner on stderr (random weights are announced otherwise).
    """
    from fastsam2.runtime.threads import plan_threads

    check_backend_options(kind, graphs, checkpoint=checkpoint, config=config, device=device, dtype=dtype,
                          router=router)
    plan = plan_threads(threads)
    if kind == "torch":
        backend = _open_torch(config, checkpoint, image_size, device or "cpu", dtype, plan.threads, router,
                              cuda_graphs, quiet, precision)
    else:
        assert graphs is not None  # check_backend_options refused an ort/trt backend without graphs
        if kind == "ort":
            from fastsam2.runtime.backends.ort import load_ort_backend

            backend = load_ort_backend(Path(graphs), providers=providers, intra_op_threads=plan.threads,
                                       precision=precision, device=device or "cpu")
        else:
            from fastsam2.runtime.backends.trt import load_trt_backend

            backend = load_trt_backend(Path(graphs), device=device or "cuda", cuda_graphs=cuda_graphs)
        from fastsam2.runtime.config import same_config

        cfg = backend.config
        if config is not None and not same_config(config, cfg.config_name):
            backend.close()
            raise UsageError(f"--config {config}: the graphs in {graphs} are {cfg.config_name!r}")
        if image_size is not None and image_size != cfg.image_size:
            backend.close()
            raise UsageError(f"--image-size {image_size}: the graphs in {graphs} take {cfg.image_size}")
    backend.threads = plan
    if backend.weights == "random-init" and kind != "torch" and not quiet:  # build_sam2 says it for torch
        print(f"fastsam2: the graphs in {graphs} were exported with {RANDOM_WEIGHTS_NOTE}", file=sys.stderr)
    return backend


def _open_torch(config: str | None, checkpoint: Any, image_size: int | None, device: str, dtype: str,
                threads: int, router: Any, cuda_graphs: bool, quiet: bool, precision: str) -> Backend:
    try:
        import sam2  # noqa: F401
        import torch

        from fastsam2.export.models import build_sam2
        from fastsam2.export.torch_backend import build_torch_backend
    except ImportError as e:
        raise UsageError(f"--backend torch needs torch and sam2 (pip install fastsam2[export]): {e}") from None
    from fastsam2.runtime.errors import out_of_memory_as_error

    torch.set_num_threads(threads)
    what = config or checkpoint or "tiny"
    with out_of_memory_as_error(f"building {what!r} at image size {image_size or 'the config default'}"):
        model = build_sam2(
            config,
            None if checkpoint is None else str(checkpoint),
            device=device,
            image_size=image_size,
            # random weights make SAM2's object-score head say "absent" and blank every mask; a positive
            # bias keeps demo masks visible (they remain meaningless)
            object_score_bias=5.0 if checkpoint is None else None,
            quiet=quiet,
        )
    return build_torch_backend(model, autocast_dtype=None if dtype == "float32" else dtype,
                               router_weights=None if router is None else str(router), cuda_graphs=cuda_graphs,
                               precision=precision)


def open_backend_from_args(args: Any, *, quiet: bool = False) -> tuple[Backend, dict]:
    """:func:`open_backend` with a command's model options (``add_model_args``), plus the report's
    description of it (backend, config, weights, threads, ...)."""
    backend = open_backend(
        args.backend, args.graphs, checkpoint=args.checkpoint, config=args.config, image_size=args.image_size,
        device=args.device, dtype=args.dtype, threads=getattr(args, "threads", None), router=args.router,
        precision=getattr(args, "precision", "fp32"), quiet=quiet,
    )
    cfg = backend.config
    info: dict = {"backend": args.backend, "config": cfg.config_name, "image_size": cfg.image_size,
                  "weights": backend.weights, "router_weights": backend.router_weights,
                  "threads": backend.threads.to_json()}
    if args.backend != "torch":
        info["runtime"] = backend.description
    if backend.precisions:
        info["precisions"] = dict(backend.precisions)
    if backend.weights == "random-init":
        info["note"] = "random weights: masks are meaningless (timings are real)"
        if args.backend == "torch":
            info["note"] = "random weights (object-score bias +5 so masks are non-empty): masks are meaningless"
    return backend, info


def tracker_from_args(backend: Backend, args: Any, keep: float, *, text: str | None = None,
                      selector: str | None = None):
    """A SAM2Tracker over ``backend`` at ``keep`` with a command's token selector, router and loop
    options (``text``: the router's text, else ``--text``; ``selector``: else ``--selector``)."""
    from fastsam2.runtime.tracker import SAM2Tracker

    selector = selector or getattr(args, "selector", "router")
    return SAM2Tracker.from_backend(
        backend, keep=keep, text=text if text is not None else args.text, texts=args.texts, router=args.router,
        selector=selector, seed=getattr(args, "selector_seed", 0), fill_hole_area=args.fill_hole_area,
        encoder_region=getattr(args, "encoder_region", None), encoder_refresh=getattr(args, "encoder_refresh", 0),
        encoder_lag=getattr(args, "encoder_lag", 0),
    )

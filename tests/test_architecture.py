"""The rooms and their arrows (ARCHITECTURE.md), read from the source: every import statement at any
depth (module level, inside functions, under ``if TYPE_CHECKING``) is checked, not only what happens
to be imported when a module loads.

Rooms, lowest first: ``runtime`` (numpy only; its ``backends`` may use their own engine library),
``calibration`` (+ onnxruntime), ``export`` (+ torch, sam2, onnx, open_clip, TensorRT's builder),
``tools`` (the command lines: may use everything). A room imports only rooms at or below it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ROOMS = ("runtime", "calibration", "export", "tools")  # lowest first
HEAVY = {"torch", "torchvision", "sam2", "open_clip", "hydra", "omegaconf", "onnx", "onnxscript",
         "onnxruntime", "polygraphy", "tensorrt", "tensorrt_rtx", "tensorrt_rtx_bindings", "ray",
         "modelopt", "onnxconverter_common"}
# The runtime's backends each bring their engine library, imported inside the module that runs it.
BACKEND_LIBS = {
    "runtime/backends/torch_device.py": {"torch"},
    "runtime/backends/ort.py": {"onnxruntime", "torch"},  # torch: the CUDA provider's device buffers
    "runtime/backends/trt.py": {"torch", "tensorrt", "tensorrt_rtx", "tensorrt_rtx_bindings"},
    "runtime/backends/trt_api.py": {"torch", "tensorrt", "tensorrt_rtx", "tensorrt_rtx_bindings"},
    "runtime/backends/torch_ops.py": {"torch"},
}
ROOM_LIBS = {
    "calibration": {"onnxruntime", "onnx"},
    "export": HEAVY - {"ray"},
    "tools": HEAVY,
}


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in ``path``, relative ones resolved."""
    package = ["fastsam2", *path.relative_to(REPO).parent.parts]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            found.append((node.lineno, name))
    return found


def _sources(room: str) -> list[Path]:
    return sorted((REPO / room).rglob("*.py"))


def test_every_room_exists_and_is_a_package():
    for room in ROOMS:
        assert (REPO / room).is_dir() and _sources(room), room


@pytest.mark.parametrize("room", ROOMS)
def test_imports_follow_the_arrows(room):
    allowed_rooms = set(ROOMS[: ROOMS.index(room) + 1])
    problems = []
    for path in _sources(room):
        rel = path.relative_to(REPO).as_posix()
        libs = ROOM_LIBS.get(room, set()) | BACKEND_LIBS.get(rel, set())
        for line, name in _imports(path):
            top, *rest = name.split(".")
            if top == "fastsam2":
                target = rest[0] if rest else ""
                if target not in allowed_rooms:
                    problems.append(f"{rel}:{line} imports {name} (an arrow up from {room} to {target})")
            elif top in HEAVY and top not in libs:
                problems.append(f"{rel}:{line} imports {name} ({room} may not use {top})")
    assert not problems, "\n".join(problems)


def test_the_checker_sees_function_level_imports(tmp_path):
    # The test above must catch what an import-time check cannot: an import inside a function.
    src = REPO / "runtime" / "_probe_for_test.py"
    src.write_text("def f():\n    import torch\n    from ..export import models\n")
    try:
        names = [n for _, n in _imports(src)]
    finally:
        src.unlink()
    assert names == ["torch", "fastsam2.export"]

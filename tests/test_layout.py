"""Package layout promises: namespaced subpackages, and a runtime that imports without the export
stack (a Jetson install has the runtime and numpy, not torch / sam2 / open_clip)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

BLOCK_HEAVY = textwrap.dedent(
    """
    import importlib.abc, sys
    BLOCKED = {"torch", "torchvision", "sam2", "open_clip", "hydra", "tensorrt"}
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"blocked heavy import: {name}")
            return None
    sys.meta_path.insert(0, Block())
    """
)


def run_py(code: str, cwd: str = "/") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_no_bare_top_level_packages():
    for bare in ("export", "runtime", "calibration"):
        r = run_py(f"import {bare}")
        assert r.returncode != 0 and "ModuleNotFoundError" in r.stderr, (bare, r.stderr)
    r = run_py("import fastsam2.export, fastsam2.runtime, fastsam2.calibration; print('ok')")
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


def test_runtime_imports_without_torch_sam2_open_clip():
    modules = [
        "fastsam2.runtime.specs",
        "fastsam2.runtime.config",
        "fastsam2.runtime.tracker",
        "fastsam2.runtime.router",
        "fastsam2.runtime.ops",
        "fastsam2.runtime.frames",
        "fastsam2.runtime.postprocess",
        "fastsam2.runtime.output",
        "fastsam2.runtime.evaluation",
        "fastsam2.runtime.text_embeddings",
        "fastsam2.runtime.backends.base",
        "fastsam2.runtime.backends.ort",
        "fastsam2.tools.cli",
    ]
    code = BLOCK_HEAVY + "\n".join(f"import {m}" for m in modules) + "\nprint('imported', len(sys.modules))"
    r = run_py(code)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("imported")


def test_cli_lists_commands_without_torch():
    code = BLOCK_HEAVY + "from fastsam2.tools.cli import build_parser\nprint(build_parser().format_help())"
    r = run_py(code)
    assert r.returncode == 0, r.stderr
    for cmd in ("track", "demo", "eval", "label"):
        assert cmd in r.stdout


def test_torch_backend_reports_missing_export_stack(tmp_path):
    """Asking for the torch backend without torch installed is one clear user error."""
    code = BLOCK_HEAVY + textwrap.dedent(
        f"""
        from fastsam2.tools.cli import main
        raise SystemExit(main(["track", "--video", {str(tmp_path)!r}, "--point", "1,1", "--out", {str(tmp_path / 'o')!r}]))
        """
    )
    from PIL import Image

    Image.new("RGB", (8, 8)).save(tmp_path / "00000.jpg")
    r = run_py(code)
    assert r.returncode == 1, r.stderr
    assert "pip install fastsam2[export]" in r.stderr and "Traceback" not in r.stderr

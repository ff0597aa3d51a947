"""``import fastsam2`` is the front door: every public name resolves, has a docstring, and opening an
ONNX Runtime export through it loads neither torch nor sam2."""

from __future__ import annotations

import textwrap

from test_layout import BLOCK_HEAVY, run_py


def test_every_public_name_resolves_with_a_docstring():
    import fastsam2

    assert "open_backend" in fastsam2.__all__ and "SAM2Tracker" in fastsam2.__all__
    for name in fastsam2.__all__:
        value = getattr(fastsam2, name)
        assert (value.__doc__ or "").strip(), name
    assert "from_backend" in vars(fastsam2.SAM2Tracker) and "from_backend" in vars(fastsam2.MultiStreamTracker)


def test_open_backend_ort_without_torch(onnx_tiny512):
    code = BLOCK_HEAVY + textwrap.dedent(
        f"""
        import numpy as np
        import fastsam2
        backend = fastsam2.open_backend("ort", {str(onnx_tiny512)!r}, threads=1, quiet=True)
        tracker = fastsam2.SAM2Tracker.from_backend(backend, keep=0.3, fill_hole_area=0)
        frame = np.zeros((64, 96, 3), np.uint8)
        result = tracker.track(frame, {{1: fastsam2.Prompt(points=[[40, 30]], labels=[1])}})
        print(backend.name, backend.threads.threads, result.masks[1].shape, backend.router_weights)
        """
    )
    r = run_py(code)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["onnxruntime", "1", "(64,", "96)", "default-weights"]


def test_open_backend_refuses_in_one_line(onnx_tiny512, tmp_path):
    import pytest

    import fastsam2

    for kwargs, match in (({"kind": "onnx"}, "choose one of"),
                          ({"kind": "ort"}, "needs --graphs"),
                          ({"kind": "ort", "graphs": onnx_tiny512, "checkpoint": None, "dtype": "float16"}, "--dtype"),
                          ({"kind": "ort", "graphs": onnx_tiny512, "config": "large"}, "--config large"),
                          ({"kind": "ort", "graphs": onnx_tiny512, "device": "gpu"}, "runs on cpu, cuda or cuda:N")):
        with pytest.raises(fastsam2.UserError, match=match) as info:
            fastsam2.open_backend(**kwargs, threads=1, quiet=True)
        assert "\n" not in str(info.value)

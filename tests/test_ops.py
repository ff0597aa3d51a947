"""NumpyOps (ONNX Runtime) and TorchOps (torch/TensorRT) compute the same tracker-loop operations."""

from __future__ import annotations

import numpy as np
import torch
from tolerances import interpolation_atol

from fastsam2.runtime.backends.torch_ops import TorchOps
from fastsam2.runtime.ops import NumpyOps


def test_ops_agree():
    rng = np.random.default_rng(0)
    n, t = NumpyOps(), TorchOps("cpu")
    x = (rng.normal(size=(3, 1, 64, 64)) * 10).astype(np.float32)
    np.testing.assert_allclose(n.resize_bilinear(x, (90, 160)), t.to_numpy(t.resize_bilinear(t.asarray(x), (90, 160))),
                               rtol=0, atol=interpolation_atol(x, 64))  # |x| ~ 40: see tests/tolerances.py
    np.testing.assert_array_equal(n.non_overlapping(x), t.to_numpy(t.non_overlapping(t.asarray(x))))
    assert (n.non_overlapping(x) <= -10).sum() > 0  # something was suppressed
    mem = rng.normal(size=(1, 50, 64)).astype(np.float32)
    np.testing.assert_array_equal(n.unpack_memory(n.pack_memory(mem)), t.to_numpy(t.unpack_memory(t.pack_memory(t.asarray(mem)))))
    scores = rng.random(1024).astype(np.float32)
    np.testing.assert_array_equal(n.topk_sorted(scores, 300), t.to_numpy(t.topk_sorted(t.asarray(scores), 300)))
    assert list(n.topk_sorted(scores, 5000)) == list(range(1024))
    assert n.pack_memory(mem).nbytes == mem.nbytes // 2  # bf16 bank: half the bytes
    assert torch.equal(t.cat([t.arange(3), t.arange(2)]), torch.tensor([0, 1, 2, 0, 1]))

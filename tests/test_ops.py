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
    scores = rng.random((3, 1024)).astype(np.float32)  # one row per object
    top = n.topk_sorted(scores, 300)
    np.testing.assert_array_equal(top, t.to_numpy(t.topk_sorted(t.asarray(scores), 300)))
    assert top.shape == (3, 300) and (np.diff(top, axis=-1) > 0).all()
    for row, kept in zip(scores, top):  # each row keeps its own top 300
        assert set(kept) == set(np.argsort(-row)[:300])
    assert n.topk_sorted(scores, 5000).tolist() == [list(range(1024))] * 3
    assert n.pack_memory(mem).nbytes == mem.nbytes // 2  # bf16 bank: half the bytes
    assert torch.equal(t.cat([t.arange(3), t.arange(2)]), torch.tensor([0, 1, 2, 0, 1]))


def test_paste_writes_a_window_in_place_also_into_inference_tensors():
    rng = np.random.default_rng(1)
    n, t = NumpyOps(), TorchOps("cpu")
    dst = rng.normal(size=(1, 4, 8, 8)).astype(np.float32)
    src = rng.normal(size=(4, 3, 5)).astype(np.float32)
    with torch.inference_mode():  # what a stage runner returns
        dst_t = torch.from_numpy(dst.copy())
    before = dst.copy()
    n.paste(dst, src, slice(2, 5), slice(3, 8))
    t.paste(dst_t, torch.from_numpy(src), slice(2, 5), slice(3, 8))
    np.testing.assert_array_equal(dst, dst_t.numpy())
    np.testing.assert_array_equal(dst[0, :, 2:5, 3:8], src)
    dst[0, :, 2:5, 3:8] = before[0, :, 2:5, 3:8]
    np.testing.assert_array_equal(dst, before)  # nothing outside the window changed


def test_mask_boxes_on_host_and_device_agree_and_mark_empty_masks():
    logits = np.full((4, 1, 16, 20), -1.0, np.float32)
    logits[0, 0, 3:7, 5:9] = 2.0  # a block
    logits[1, 0, 0, 19] = 1.0  # one pixel in a corner
    logits[3, 0, 15, 0] = 0.5
    logits[3, 0, 2, 10] = 0.5  # two pixels: the box spans both
    want = np.array([[5, 3, 9, 7], [19, 0, 20, 1], [-1, -1, -1, -1], [0, 2, 11, 16]])
    assert np.array_equal(NumpyOps().mask_boxes(logits), want)
    assert np.array_equal(TorchOps("cpu").mask_boxes(torch.from_numpy(logits)).numpy(), want)

"""Frame preprocessing on the device (DeviceTorchOps.preprocess_frames, runtime/backends/torch_device.py): PIL's
bicubic resize as gathered taps, equal to torch's antialiased bicubic kernel and to the host path
(PIL) that gives the official predictor's input."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tolerances import EPS32, reduction_atol

torch = pytest.importorskip("torch")
F = torch.nn.functional

from fastsam2.runtime.backends.torch_device import normalize_frames, pil_bicubic_taps, resample_axis  # noqa: E402
from fastsam2.runtime.preprocess import preprocess_frame  # noqa: E402

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
LEVEL = 1.0 / 255.0 / min(STD)  # one uint8 level after normalization
SAME = 8 * EPS32 * 2.7  # float32 normalization of a value up to ~2.6 in another order of operations


def _cpu_reference(x, size: int):
    """normalize_frames on the CPU: uint8 [B,H,W,3] → [B,3,size,size]."""
    h, w = x.shape[1:3]
    mean, std = torch.tensor(MEAN).reshape(1, 3, 1, 1), torch.tensor(STD).reshape(1, 3, 1, 1)
    return normalize_frames(x, *pil_bicubic_taps(w, size, "cpu"), *pil_bicubic_taps(h, size, "cpu"), mean, std)


@pytest.mark.parametrize("n_in,n_out", [(540, 1024), (960, 1024), (1920, 1024), (1080, 512), (300, 256)])
def test_taps_resample_like_torch_antialiased_bicubic(n_in, n_out):
    g = torch.Generator().manual_seed(n_in)
    x = torch.randint(0, 256, (2, 3, 7, n_in), generator=g).float()
    idx, w = pil_bicubic_taps(n_in, n_out, "cpu")
    assert idx.shape == w.shape and idx.shape[0] == n_out
    assert torch.allclose(w.sum(1), torch.ones(n_out), atol=idx.shape[1] * EPS32 * 4)
    ref = F.interpolate(x, size=(7, n_out), mode="bicubic", align_corners=False, antialias=True)
    # the same weights, summed in another order: T terms of up to 255 each
    atol = reduction_atol(255.0 * float(w.abs().max()), idx.shape[1])
    assert (resample_axis(x, idx, w, -1) - ref).abs().max().item() <= atol
    # along the height axis too
    xt = x.transpose(-1, -2).contiguous()
    ref_t = F.interpolate(xt, size=(n_out, 7), mode="bicubic", align_corners=False, antialias=True)
    assert (resample_axis(xt, idx, w, -2) - ref_t).abs().max().item() <= atol


def test_taps_are_not_bilinear_or_nearest():
    # a wrong filter (bilinear's 2 taps when enlarging, or a shifted centre) moves values by levels
    x = torch.arange(540, dtype=torch.float32).reshape(1, 1, 1, 540) % 17 * 15
    idx, w = pil_bicubic_taps(540, 1024, "cpu")
    got = resample_axis(x, idx, w, -1)
    bilinear = F.interpolate(x, size=(1, 1024), mode="bilinear", align_corners=False, antialias=True)
    assert idx.shape[1] == 4 and (w < 0).any()  # bicubic's negative lobes
    assert (got - bilinear).abs().max().item() > 1.0


def test_normalize_frames_matches_the_host_path(bedroom):
    """The device arithmetic on real frames (run here on the CPU) against PIL's resize: equal except
    for one uint8 level on rare values (PIL's fixed-point rounding)."""
    images = [np.asarray(Image.open(p).convert("RGB")) for p in sorted(bedroom.glob("*.jpg"))[:2]]
    for size in (1024, 512):
        got = _cpu_reference(torch.from_numpy(np.stack(images)), size)
        assert got.shape == (2, 3, size, size) and got.dtype == torch.float32
        ref = np.concatenate([preprocess_frame(im, size, MEAN, STD) for im in images])
        diff = np.abs(got.numpy() - ref)
        same = diff <= SAME
        assert diff.max() <= LEVEL * 1.001
        assert 1.0 - same.mean() < 1e-3, f"{1.0 - same.mean():.2e} of the values differ by a level"


@pytest.mark.gpu
@pytest.mark.parametrize("compile", [False, True])
def test_device_preprocess_equals_cpu_arithmetic(bedroom, compile):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU (run pytest -m gpu tests/test_device_preprocess.py on one)")
    from fastsam2.runtime.backends.torch_device import DeviceTorchOps

    images = [np.asarray(Image.open(p).convert("RGB")) for p in sorted(bedroom.glob("*.jpg"))[:3]]
    images.append(np.ascontiguousarray(images[0][:300, :500]))  # a second frame size in the batch
    ops = DeviceTorchOps("cuda", compile=compile)
    got = ops.preprocess_frames(images, 1024, MEAN, STD)
    for im, g in zip(images, got):
        diff = (g.cpu() - _cpu_reference(torch.from_numpy(im[None]), 1024)).abs()
        assert diff.max().item() <= LEVEL * 1.001
        assert (diff > SAME).float().mean().item() < 1e-4
    # windows (a frame encoded on a rectangle): the whole frame's values there
    windows = [(221, 675, 445, 899), (0, 227, 0, 451), None, (797, 1024, 573, 1024)]
    for g, win, full in zip(ops.preprocess_frames(images, 1024, MEAN, STD, windows), windows, got):
        y0, y1, x0, x1 = win or (0, 1024, 0, 1024)
        diff = (g - full[..., y0:y1, x0:x1]).abs()
        assert diff.max().item() <= LEVEL * 1.001 and (diff > SAME).float().mean().item() < 1e-4, win


def test_a_window_equals_that_part_of_the_whole_frame_and_reads_only_its_pixels(bedroom):
    """preprocess_frames(windows=...) (what a frame encoded on a rectangle needs): the window's values
    are the whole frame's there, bit for bit, and input pixels its taps do not read change nothing."""
    from fastsam2.runtime.backends.torch_device import DeviceTorchOps, window_taps

    images = [np.asarray(Image.open(p).convert("RGB")) for p in sorted(bedroom.glob("*.jpg"))[:3]]
    ops = DeviceTorchOps("cpu")
    whole = ops.preprocess_frames(images, 1024, MEAN, STD)
    # an inner window, one on the top-left corner, one on the bottom-right, and a whole frame
    windows = [(221, 675, 445, 899), (0, 227, 0, 451), None]
    got = ops.preprocess_frames(images, 1024, MEAN, STD, windows)
    for w, g, win in zip(whole, got, windows):
        y0, y1, x0, x1 = win or (0, 1024, 0, 1024)
        assert g.shape == (1, 3, y1 - y0, x1 - x0)
        assert torch.equal(g, w[..., y0:y1, x0:x1]), win
    # two frames with one window share a batch; frames with the corner windows too
    corner = (797, 1024, 573, 1024)
    got = ops.preprocess_frames(images, 1024, MEAN, STD, [corner, windows[0], corner])
    assert torch.equal(got[0], whole[0][..., 797:, 573:]) and torch.equal(got[2], whole[2][..., 797:, 573:])
    assert torch.equal(got[1], whole[1][..., 221:675, 445:899])
    # windows of one shape anywhere share one batch, each frame with its own taps (the corner's crop
    # is a pixel shorter than the others' on both axes: it is moved inside the frame)
    batches = []
    normalize = ops._normalize
    ops._normalize = lambda x, *taps: batches.append(len(x)) or normalize(x, *taps)
    moved = [windows[0], (0, 454, 0, 454), (570, 1024, 570, 1024)]
    got = ops.preprocess_frames(images, 1024, MEAN, STD, moved)
    assert batches == [3]
    for w, g, (y0, y1, x0, x1) in zip(whole, got, moved):
        assert torch.equal(g, w[..., y0:y1, x0:x1]), (y0, x0)

    # only the input pixels the window's taps read are copied up: the crop is as tight as the taps
    # (its first and last pixels carry weight), and changing any pixel outside it changes nothing
    h, w = images[0].shape[:2]
    for n_in, (a, b) in ((w, (445, 899)), (h, (221, 675))):
        (lo, hi), idx, wt = window_taps(n_in, 1024, a, b, "cpu")
        read = (idx + lo)[wt != 0]
        assert (int(read.min()), int(read.max()) + 1) == (lo, hi)
        assert hi - lo <= (b - a) * n_in / 1024 + 4  # the window's share of the input, plus the taps
    (c0, c1), _, _ = window_taps(w, 1024, 445, 899, "cpu")
    (r0, r1), _, _ = window_taps(h, 1024, 221, 675, "cpu")
    outside = images[0].copy()
    outside[:r0] = outside[r1:] = 255 - outside[r1:].max()
    outside[:, :c0] = outside[:, c1:] = 0
    (same,) = ops.preprocess_frames([outside], 1024, MEAN, STD, [windows[0]])
    assert torch.equal(same, whole[0][..., 221:675, 445:899])
    outside[r0:r1, c0:c1] = 255 - outside[r0:r1, c0:c1]
    (moved,) = ops.preprocess_frames([outside], 1024, MEAN, STD, [windows[0]])
    assert not torch.equal(moved, same)
    with pytest.raises(ValueError, match="not inside"):
        ops.preprocess_frames(images[:1], 1024, MEAN, STD, [(0, 1025, 0, 10)])

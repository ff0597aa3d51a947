"""The torch backend's per-shape attention kernels (export/attention.py: gpu_attention).

The choice follows the measured winners per shape (bench/RESULTS.md, "Where a step's time goes"); the explicit
kernel equals SDPA to rounding; off the GPU and in fp32 every call is PyTorch's own SDPA, so the CPU
parity tests and the fp32 GPU parity run are untouched.
"""

from __future__ import annotations

import numpy as np
import pytest
from tolerances import EPS32, reduction_atol

torch = pytest.importorskip("torch")
F = torch.nn.functional

from fastsam2.export.attention import explicit_attention, gpu_attention, gpu_attention_kernel  # noqa: E402


@pytest.mark.parametrize(
    "shape,kernel",
    [
        # (batch, heads, Nq, Nk) as the tracker calls them at 1024 px, keep 0.3: the measured winner
        ((1, 1, 1280, 11812), "flash"),  # memory attention, one object: 84 vs 288 µs
        ((1, 1, 1280, 1280), "flash"),  # its self-attention: 37 vs 48
        ((8, 1, 1280, 11812), "default"),  # eight objects: cuDNN 293 vs flash 449
        ((8, 1, 1280, 1280), "default"),  # 50 vs 88
        ((8192, 2, 16, 64), "explicit"),  # Hiera's windows at eight frames: 226 vs 365
        ((8192, 4, 4, 16), "explicit"),  # 399 vs 708
        ((1024, 4, 4, 16), "explicit"),  # one frame: 91 vs 109
        ((8192, 1, 64, 64), "default"),  # 195 vs 256 explicit
        ((8, 4, 4096, 4096), "default"),  # Hiera's global attention: 424 vs 616 flash
        ((200, 4, 196, 196), "default"),
        ((1, 8, 10, 4096), "flash"),  # the decoder's tokens to image: 31 vs 54
        ((8, 8, 8, 4096), "flash"),  # 38 vs 55
    ],
)
def test_kernel_choice_follows_the_measurements(shape, kernel):
    assert gpu_attention_kernel(*shape) == kernel


@pytest.mark.parametrize("nq,nk,d", [(16, 64, 96), (4, 16, 96), (37, 300, 256)])
def test_explicit_attention_equals_sdpa(nq, nk, d):
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(3, 2, n, d, generator=g) for n in (nq, nk, nk))
    ref = F.scaled_dot_product_attention(q, k, v)
    out = explicit_attention(q, k, v)
    # softmax weights sum to 1: the output is a convex mix of v, so |out| <= max|v|; the dot
    # products (d terms of |q||k|) are rounded differently, which moves the weights by ~d ulps
    atol = 8 * EPS32 * d * float(q.abs().max() * k.abs().max()) * float(v.abs().max())
    assert out.shape == ref.shape and float((out - ref).abs().max()) <= atol
    out = explicit_attention(q, k, v, scale=0.5)
    assert float((out - F.scaled_dot_product_attention(q, k, v, scale=0.5)).abs().max()) <= atol


def test_off_the_gpu_every_call_is_pytorchs_sdpa():
    sdpa = F.scaled_dot_product_attention
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(1, 1, 1280 if i == 0 else 300, 256, generator=g).bfloat16() for i in range(3))
    with gpu_attention():
        assert F.scaled_dot_product_attention is not sdpa
        out = F.scaled_dot_product_attention(q, k, v)  # "flash" by shape, but on the CPU
    assert F.scaled_dot_product_attention is sdpa
    assert torch.equal(out, sdpa(q, k, v))


@pytest.mark.gpu
def test_chosen_kernels_equal_sdpa_on_the_gpu():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU (run pytest -m gpu tests/test_gpu_attention.py on one)")
    g = torch.Generator(device="cuda").manual_seed(0)
    for (b, h, nq, nk, d), kernel in [((1, 1, 1280, 5000, 256), "flash"), ((2048, 2, 16, 64, 96), "explicit")]:
        assert gpu_attention_kernel(b, h, nq, nk) == kernel
        q, k, v = (torch.randn(b, h, n, d, device="cuda", generator=g, dtype=torch.bfloat16) for n in (nq, nk, nk))
        ref = F.scaled_dot_product_attention(q.float(), k.float(), v.float())
        with gpu_attention():
            out = F.scaled_dot_product_attention(q, k, v).float()
        # bf16 inputs, fp32 reference: the output's error is a few bf16 ulps of max|v|
        assert float((out - ref).abs().max()) <= 8 * 2**-8 * float(v.abs().max()), kernel
        np.testing.assert_array_equal(out.isfinite().cpu().numpy(), True)


def test_patch_embedding_as_one_matmul_equals_the_convolution():
    from fastsam2.export.models import build_sam2
    from fastsam2.export.torch_backend import gpu_patch_embed, patch_embed_matmul

    pe = build_sam2("tiny", None, device="cpu", seed=0, quiet=True).image_encoder.trunk.patch_embed
    x = torch.randn(2, 3, 96, 128, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = pe(x)  # sam2: conv, then [B,H,W,C]
        got = patch_embed_matmul(x, pe.proj)
        assert got.shape == ref.shape == (2, 24, 32, pe.proj.out_channels)
        # 3*7*7 products per output, summed in another order
        mag = float((x.abs().max() * pe.proj.weight.abs().max()).item())
        assert (got - ref).abs().max().item() <= reduction_atol(mag, 3 * 7 * 7)
        with gpu_patch_embed():  # off the GPU (and outside autocast) sam2's own forward runs
            assert torch.equal(pe(x), ref)
        with torch.autocast("cpu", torch.bfloat16):
            assert patch_embed_matmul(x, pe.proj).dtype == torch.bfloat16


@pytest.mark.gpu
def test_patch_embedding_as_one_matmul_on_the_gpu():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU (run pytest -m gpu tests/test_gpu_attention.py on one)")
    from fastsam2.export.models import build_sam2
    from fastsam2.export.torch_backend import gpu_patch_embed

    pe = build_sam2("tiny", None, device="cuda", seed=0, quiet=True).image_encoder.trunk.patch_embed
    x = torch.randn(2, 3, 1024, 1024, device="cuda")
    with torch.no_grad(), torch.autocast("cuda", torch.bfloat16):
        ref = pe(x).float()
        with gpu_patch_embed():
            got = pe(x).float()
    # the same bf16 inputs, fp32 accumulation; the outputs are rounded to bf16 (half an ulp, 2^-8
    # relative) once by the convolution and twice here (the product, then the bias added in bf16)
    assert (got - ref).abs().max().item() <= 3 * 2.0**-8 * max(1.0, ref.abs().max().item())

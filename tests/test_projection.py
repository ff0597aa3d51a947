import numpy as np
import pytest

from fastsam2.calibration.projection import (
    PairCollector,
    TextProjection,
    fit_text_projection,
    mean_token_in_mask,
)

DT, DV = 24, 12


def _pairs(n: int, noise: float = 0.01, seed: int = 0):
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(DT, DV))
    b = rng.normal(size=DV)
    x = rng.normal(size=(n, DT)) + 3.0  # off-centre inputs exercise the bias / centering
    y = x @ w + b + noise * rng.normal(size=(n, DV))
    return x.astype(np.float32), y.astype(np.float32), w, b


def test_recovers_known_linear_map():
    x, y, w, b = _pairs(2000)
    proj = fit_text_projection(x, y, ridge=1e-6)
    assert proj.weight.shape == (DT, DV) and proj.weight.dtype == np.float32
    assert proj.bias.shape == (DV,) and proj.num_pairs == 2000
    assert np.linalg.norm(proj.weight - w) / np.linalg.norm(w) < 1e-2
    assert np.linalg.norm(proj.bias - b) / np.linalg.norm(b) < 1e-2
    pred = proj.apply(x[:5])
    assert pred.shape == (5, DV) and pred.dtype == np.float32
    np.testing.assert_allclose(pred, y[:5], atol=0.1)
    assert proj.apply(x[0]).shape == (DV,)
    assert proj.apply(x[:6].reshape(2, 3, DT)).shape == (2, 3, DV)


def test_ridge_shrinks_weight_norm():
    x, y, _, _ = _pairs(60, noise=0.5)
    norms = [np.linalg.norm(fit_text_projection(x, y, ridge=r).weight) for r in (0.0, 1.0, 100.0, 1e4)]
    assert all(a > b for a, b in zip(norms, norms[1:]))


def test_no_bias_fit_passes_through_origin():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(500, DT))
    w = rng.normal(size=(DT, DV))
    proj = fit_text_projection(x, x @ w, ridge=0.0, fit_bias=False)
    assert np.all(proj.bias == 0)
    np.testing.assert_allclose(proj.weight, w, atol=1e-4)


@pytest.mark.parametrize("fit_bias", [True, False])
def test_streaming_collector_equals_batch_fit(fit_bias):
    x, y, _, _ = _pairs(300, noise=0.1, seed=2)
    collector = PairCollector()
    for i in range(7):
        collector.add(x[i], y[i])
    start = 7
    for size in (1, 50, 0, 120, 122):
        collector.add_batch(x[start : start + size], y[start : start + size])
        start += size
    assert start == 300 and len(collector) == 300
    for ridge in (0.0, 1e-2, 10.0):
        streamed = collector.fit(ridge, fit_bias=fit_bias)
        batch = fit_text_projection(x, y, ridge=ridge, fit_bias=fit_bias)
        np.testing.assert_allclose(streamed.weight, batch.weight, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(streamed.bias, batch.bias, rtol=1e-5, atol=1e-4)
        assert streamed.num_pairs == batch.num_pairs == 300


def test_safetensors_round_trip(tmp_path):
    from safetensors import safe_open
    from safetensors.numpy import load_file, save_file

    x, y, _, _ = _pairs(100)
    proj = fit_text_projection(x, y, ridge=0.5)
    router = {"router.mlp.weight": np.ones((4, 3), np.float32)}
    path = tmp_path / "router.safetensors"
    save_file({**router, **proj.to_state_dict()}, str(path), metadata=proj.metadata())

    state = load_file(str(path))
    with safe_open(str(path), framework="np") as f:
        meta = f.metadata()
    back = TextProjection.from_state_dict(state, meta)
    np.testing.assert_array_equal(back.weight, proj.weight)
    np.testing.assert_array_equal(back.bias, proj.bias)
    assert back.ridge == 0.5 and back.num_pairs == 100
    np.testing.assert_array_equal(back.apply(x[:3]), proj.apply(x[:3]))
    with pytest.raises(ValueError, match="missing"):
        TextProjection.from_state_dict(router)


def test_fit_errors():
    x, y, _, _ = _pairs(10)
    with pytest.raises(ValueError, match="pairs must match"):
        fit_text_projection(x, y[:9])
    with pytest.raises(ValueError, match=r"\[N, Dt\]"):
        fit_text_projection(x[0], y[0])
    with pytest.raises(ValueError, match="at least 25 pairs"):
        fit_text_projection(x, y, ridge=0.0)
    # enough pairs but rank-deficient text embeddings
    x_low = np.repeat(x[:, :1], DT, axis=1)
    x_big = np.concatenate([x_low] * 3)
    with pytest.raises(ValueError, match="singular"):
        fit_text_projection(x_big, np.concatenate([y] * 3), ridge=0.0)
    assert fit_text_projection(x, y, ridge=1e-2).weight.shape == (DT, DV)  # ridge makes it solvable
    with pytest.raises(ValueError, match="ridge must be"):
        fit_text_projection(x, y, ridge=-1.0)
    with pytest.raises(ValueError, match="no pairs"):
        PairCollector().fit()
    collector = PairCollector(DT, DV)
    with pytest.raises(ValueError, match="collector holds"):
        collector.add(x[0, :5], y[0])
    with pytest.raises(ValueError, match=r"\[Dt\]"):
        collector.add(x[:2], y[:2])
    proj = fit_text_projection(x, y)
    with pytest.raises(ValueError, match=r"\[\.\.\., 24\]"):
        proj.apply(np.zeros(5))


def test_mean_token_in_mask_block_average():
    # C=2 features on a 2x2 grid; token value encodes its position
    feats = np.stack([np.array([[1.0, 2.0], [3.0, 4.0]]), np.array([[10.0, 20.0], [30.0, 40.0]])]).astype(np.float32)
    mask = np.zeros((4, 4), bool)
    mask[0:2, 0:2] = True  # top-left cell: 100% -> in
    mask[0, 2:4] = True  # top-right cell: 2/4 = 50% -> in
    mask[2, 0] = True  # bottom-left cell: 1/4 -> out
    out = mean_token_in_mask(feats, mask)
    assert out.shape == (2,) and out.dtype == np.float32
    np.testing.assert_allclose(out, [1.5, 15.0])


def test_mean_token_in_mask_nearest_when_not_multiple():
    feats = np.arange(2 * 2 * 2, dtype=np.float32).reshape(2, 2, 2)  # tokens 0..3 and 4..7
    mask = np.zeros((3, 5), bool)  # cell centres sample rows (0, 2), cols (1, 3)
    mask[2, 3] = True
    np.testing.assert_allclose(mean_token_in_mask(feats, mask), [3.0, 7.0])


def test_mean_token_in_mask_errors():
    feats = np.zeros((3, 2, 2), np.float32)
    with pytest.raises(ValueError, match="mask is empty"):
        mean_token_in_mask(feats, np.zeros((4, 4), bool))
    small = np.zeros((4, 4), bool)
    small[0, 0] = True
    with pytest.raises(ValueError, match="covers no cell"):
        mean_token_in_mask(feats, small)
    with pytest.raises(ValueError, match="bool"):
        mean_token_in_mask(feats, np.ones((4, 4), np.float32))
    with pytest.raises(ValueError, match=r"\[C, H, W\]"):
        mean_token_in_mask(feats[0], np.ones((4, 4), bool))

"""A router file is the router: the torch backend runs its MLP, an export bakes it in and records its
hash, a file other than the exported one is refused, and a broken file is refused by every command."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fastsam2.export.router import TokenRouter, router_state, save_router
from fastsam2.runtime.router import RouterError, read_router_file
from fastsam2.runtime.tracker import Prompt

pytestmark = pytest.mark.usefixtures("single_thread")
FRAMES = 4
KEEP = 0.3


def write_router(path, tensors, meta) -> None:
    from safetensors.numpy import save_file

    save_file(tensors, str(path), metadata=meta)


def default_contents() -> tuple[dict, dict]:
    return router_state(TokenRouter(image_size=256))


@pytest.fixture(scope="module")
def inverted_router(tmp_path_factory):
    """The built-in router with its output layer negated: it keeps the tokens least likely to matter
    (far from the previous mask) where the default keeps the object and its surroundings."""
    router = TokenRouter(image_size=256)
    with torch.no_grad():
        router.mlp[2].weight.neg_()
    path = tmp_path_factory.mktemp("router") / "inverted.safetensors"
    save_router(path, router)
    return path


def broken_files():
    """(name, edit of the default file's (tensors, meta), message) of every kind of broken file."""
    def drop(key):
        return lambda t, m: t.pop(key)

    def set_tensor(key, value):
        return lambda t, m: t.__setitem__(key, value)

    def set_meta(key, value):
        return lambda t, m: m.__setitem__(key, value)

    def poison(value):
        def edit(t, m):
            t["router.2.weight"] = t["router.2.weight"].copy()
            t["router.2.weight"][0, 3] = value
        return edit

    return [
        ("missing tensor", drop("router.2.bias"), "missing tensor"),
        ("wrong shape", set_tensor("router.0.weight", np.zeros((16, 5), np.float32)), "shape"),
        ("hidden mismatch", set_tensor("router.2.weight", np.zeros((1, 8), np.float32)), "shape"),
        ("extra tensor", set_tensor("router.4.weight", np.zeros((1, 1), np.float32)), "unexpected"),
        ("nan", poison(np.nan), "NaN"),
        ("inf", poison(np.inf), "NaN or infinite"),
        ("hidden metadata", set_meta("hidden", "32"), "hidden=32"),
        ("radius metadata", set_meta("radius", "-1"), "radius"),
        ("radius not a number", set_meta("radius", "two"), "not integers"),
        ("other cues", set_meta("cues", "contrast,edge"), "cues"),
        ("not a router", set_meta("format", "something-else"), "not a fastsam2 router"),
        ("half a projection", set_tensor("text_proj.weight", np.zeros((512, 256), np.float32)), "come together"),
        ("integer weights", set_tensor("router.0.bias", np.zeros(16, np.int32)), "floating point"),
    ]


@pytest.mark.parametrize("name,edit,message", broken_files(), ids=[c[0] for c in broken_files()])
def test_broken_router_file_is_one_line(name, edit, message, tmp_path):
    tensors, meta = default_contents()
    edit(tensors, meta)
    path = tmp_path / "broken.safetensors"
    write_router(path, tensors, meta)
    with pytest.raises(RouterError, match=message) as info:
        read_router_file(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_valid_file_reads_with_its_hash(tmp_path):
    from fastsam2.runtime.manifest import file_sha256

    path = tmp_path / "r.safetensors"
    write_router(path, *default_contents())
    weights = read_router_file(path)
    assert weights.hidden == 16 and weights.radius == 2 and weights.sha256 == file_sha256(path)
    assert all(v.dtype == np.float32 for v in weights.mlp.values())


@pytest.fixture(scope="module")
def broken_router(tmp_path_factory):
    tensors, meta = default_contents()
    tensors["router.0.weight"] = np.full_like(tensors["router.0.weight"], np.nan)
    path = tmp_path_factory.mktemp("broken") / "nan.safetensors"
    write_router(path, tensors, meta)
    return path


@pytest.mark.parametrize("backend", ["torch", "ort"])
def test_every_command_refuses_a_broken_router_before_building(backend, broken_router, bedroom, tmp_path,
                                                              monkeypatch, capsys):
    import fastsam2.export.models as models
    from fastsam2.tools import cli, export_cli

    def no_model(*a, **k):
        raise AssertionError("model built before the router file was checked")

    monkeypatch.setattr(models, "build_sam2", no_model)
    graphs = ["--graphs", str(tmp_path)] if backend == "ort" else []
    code = cli.main(["track", "--backend", backend, *graphs, "--video", str(bedroom), "--point", "480,300",
                     "--keep", "0.3", "--router", str(broken_router), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 1 and "NaN" in err and len(err.splitlines()) == 1
    code = export_cli.main(["--config", "tiny", "--router", str(broken_router), "--out", str(tmp_path / "exp")])
    err = capsys.readouterr().err.strip()
    assert code == 1 and "NaN" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists() and not (tmp_path / "exp").exists()


# -- the router file changes what is kept --------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny256():
    from fastsam2.export.models import build_sam2

    return build_sam2("tiny", image_size=256, object_score_bias=5.0, quiet=True, seed=0)


@pytest.fixture(scope="module")
def clip(bedroom, tmp_path_factory):
    from conftest import copy_clip

    return copy_clip(bedroom, tmp_path_factory.mktemp("clip"), FRAMES)


def track_kept(backend, clip, router_path) -> tuple[list[set[int]], list[np.ndarray]]:
    """Kept token sets (object 1, frames 1..) and masks (every frame) of a pruned run."""
    from fastsam2.runtime.frames import open_frames
    from fastsam2.runtime.tracker import SAM2Tracker

    tracker = SAM2Tracker.from_backend(backend, keep=KEEP, router=router_path, fill_hole_area=0)
    kept: list[set[int]] = []
    select = tracker.router.select

    def spy(items, k):
        out = select(items, k)
        kept.append({int(i) for i in np.asarray(backend.ops.to_numpy(out[0])).reshape(-1)})
        return out

    tracker.router.select = spy
    masks = []
    with open_frames(str(clip)) as frames:
        for frame in frames:
            prompt = {1: Prompt(points=[[480, 300]], labels=[1])} if frame.index == 0 else None
            masks.append(tracker.track(frame.image, prompt).masks[1])
    return kept, masks


def overlap(a: list[set[int]], b: list[set[int]]) -> float:
    """Mean fraction of kept tokens two runs share, frame by frame."""
    return float(np.mean([len(x & y) / len(x) for x, y in zip(a, b)]))


@pytest.fixture(scope="module")
def torch_runs(tiny256, clip, inverted_router):
    from fastsam2.export.torch_backend import build_torch_backend

    default = track_kept(build_torch_backend(tiny256), clip, None)
    inverted = track_kept(build_torch_backend(tiny256, router_weights=str(inverted_router)), clip,
                          inverted_router)
    return default, inverted


def test_torch_backend_runs_the_router_file(torch_runs):
    (kept_d, masks_d), (kept_i, masks_i) = torch_runs
    assert len(kept_d) == len(kept_i) == FRAMES - 1
    k = int(np.ceil(KEEP * 16 * 16))
    assert all(len(s) == k for s in kept_d + kept_i)
    # the negated router keeps (nearly) the complement of what the default keeps
    assert overlap(kept_d, kept_i) < 0.5
    assert any(not np.array_equal(a, b) for a, b in zip(masks_d[1:], masks_i[1:]))


def test_torch_backend_refuses_a_file_it_does_not_run(tiny256, inverted_router):
    from fastsam2.export.torch_backend import build_torch_backend
    from fastsam2.runtime.tracker import SAM2Tracker

    with pytest.raises(RouterError, match="built-in router weights"):
        SAM2Tracker.from_backend(build_torch_backend(tiny256), keep=KEEP, router=inverted_router)


@pytest.fixture(scope="module")
def inverted_export(tiny256, inverted_router, tmp_path_factory):
    from fastsam2.export.onnx_export import export_graphs
    from fastsam2.export.router import load_router

    out = tmp_path_factory.mktemp("inverted") / "graphs"
    export_graphs(tiny256, out, router_stage=load_router(inverted_router, tiny256),
                  router_weights=inverted_router, validate=False, optimize=False, trt_check=False)
    return out


def test_export_bakes_the_router_file_in_and_ort_runs_it(inverted_export, inverted_router, torch_runs, clip):
    from fastsam2.runtime.backends.ort import load_ort_backend
    from fastsam2.runtime.manifest import Manifest, file_sha256

    assert Manifest.read(inverted_export).router_weights == file_sha256(inverted_router)
    kept, masks = track_kept(load_ort_backend(inverted_export, intra_op_threads=1), clip, inverted_router)
    (kept_d, masks_d), (kept_i, masks_i) = torch_runs
    # ONNX Runtime keeps what the torch backend keeps with the same file (up to float ties at the
    # K-th score), and not what the built-in router keeps
    assert overlap(kept, kept_i) > 0.9
    assert overlap(kept, kept_d) < 0.5
    # the masks follow the kept tokens: those of the same router agree, the default router's do not
    same = np.mean([np.mean(a != b) for a, b in zip(masks[1:], masks_i[1:])])
    other = np.mean([np.mean(a != b) for a, b in zip(masks[1:], masks_d[1:])])
    assert same < other


def test_ort_refuses_a_router_file_other_than_the_exported_one(inverted_export, onnx_tiny512, inverted_router,
                                                              tmp_path, bedroom, capsys):
    from fastsam2.tools.cli import main

    other = tmp_path / "default.safetensors"
    write_router(other, *default_contents())
    for graphs, router, exported in ((inverted_export, other, "sha256"),
                                     (onnx_tiny512, inverted_router, "built-in router weights")):
        code = main(["track", "--backend", "ort", "--graphs", str(graphs), "--video", str(bedroom),
                     "--point", "480,300", "--keep", "0.3", "--router", str(router), "--out", str(tmp_path / "o")])
        err = capsys.readouterr().err.strip()
        assert code == 1 and len(err.splitlines()) == 1, err
        assert str(router) in err and str(graphs) in err and exported in err


def test_text_without_texts_is_refused_before_the_model_is_built(bedroom, tmp_path, monkeypatch, capsys):
    import fastsam2.export.models as models
    from fastsam2.tools import cli

    def no_model(*a, **k):
        raise AssertionError("model built before --text was checked")

    monkeypatch.setattr(models, "build_sam2", no_model)
    code = cli.main(["track", "--video", str(bedroom), "--point", "480,300", "--keep", "0.3", "--text", "red car",
                     "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1 and "--text needs --texts" in err
    assert not (tmp_path / "out").exists()

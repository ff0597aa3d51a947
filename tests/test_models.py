"""Config names, aliases, config files and the shipped ``synthetic`` model: one table, read by the
torch side and the torch-free runtime; a checkpoint named by the registry brings its config."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fastsam2.runtime.config import (
    SHIPPED_MODELS_DIR,
    canonical_config_name,
    resolve_model,
    same_config,
    shipped_config_path,
    shipped_weights_path,
)
from fastsam2.runtime.errors import UsageError


# -- the table (no torch) -------------------------------------------------------------------------
@pytest.mark.parametrize("alias, name", [("sam2.1-tiny", "tiny"), ("sam2.1_hiera_t", "tiny"),
                                         ("sam2.1_hiera_base_plus", "base_plus"), ("sam2_hiera_s", "sam2.0-small"),
                                         ("tiny", "tiny"), ("synthetic", "synthetic"),
                                         ("configs/my512.yaml", "my512")])
def test_canonical_config_name(alias, name):
    assert canonical_config_name(alias) == name


def test_same_config_accepts_aliases_and_refuses_other_sizes():
    assert same_config("sam2.1-tiny", "tiny")
    assert same_config(str(shipped_config_path("synthetic")), "synthetic")
    assert same_config("my512", "my512")  # a custom config's recorded stem
    assert not same_config("sam2.1-small", "tiny")
    assert not same_config("sam2.0-tiny", "tiny")  # SAM 2.0 is a different model


def test_unknown_config_is_one_line():
    with pytest.raises(UsageError, match="unknown config 'huge'") as e:
        canonical_config_name("huge")
    assert "\n" not in str(e.value)


@pytest.fixture(scope="module")
def registry_dir(tmp_path_factory) -> Path:
    """A models folder holding the shipped synthetic.yaml and seeded random fp16 weights for it: the
    registry's mechanics, independent of whether trained weights ship in this revision."""
    import shutil

    from safetensors.torch import save_file

    from fastsam2.export.models import build_sam2

    d = tmp_path_factory.mktemp("models")
    shutil.copy(shipped_config_path("synthetic"), d / "synthetic.yaml")
    state = build_sam2("synthetic", None, quiet=True, seed=5).state_dict()
    save_file({k: v.half() if v.is_floating_point() else v for k, v in state.items()}, str(d / "synthetic.safetensors"))
    return d


@pytest.fixture
def registry(registry_dir, monkeypatch) -> Path:
    import fastsam2.runtime.config as config

    monkeypatch.setattr(config, "SHIPPED_MODELS_DIR", registry_dir)
    return registry_dir


def test_resolve_model(registry, tmp_path):
    assert resolve_model(None, None) == ("tiny", None)
    config, weights = resolve_model(None, "synthetic")
    assert (Path(config), Path(weights)) == (registry / "synthetic.yaml", registry / "synthetic.safetensors")
    assert resolve_model("synthetic", "synthetic") == (config, weights)
    assert resolve_model("synthetic", None) == (config, None)  # the architecture with random weights
    with pytest.raises(UsageError, match="comes with its own config"):
        resolve_model("tiny", "synthetic")
    with pytest.raises(UsageError, match="file not found: nosuch.*shipped model: synthetic"):
        resolve_model(None, "nosuch")
    with pytest.raises(UsageError, match="--config: file not found"):
        resolve_model(str(tmp_path / "x.yaml"), None)


def test_missing_shipped_weights_is_one_line(tmp_path, monkeypatch):
    import fastsam2.runtime.config as config

    monkeypatch.setattr(config, "SHIPPED_MODELS_DIR", tmp_path)
    with pytest.raises(UsageError, match="has no synthetic.safetensors.*train_sam2") as e:
        resolve_model(None, "synthetic")
    assert "\n" not in str(e.value)


def test_shipped_model_files_are_packaged():
    repo = Path(__file__).resolve().parents[1]
    for suffix in (".yaml", ".md"):
        assert (SHIPPED_MODELS_DIR / f"synthetic{suffix}").is_file(), suffix
    pyproject = (repo / "pyproject.toml").read_text()
    for pattern in ("data/models/*.yaml", "data/models/*.safetensors", "data/models/*.md"):
        assert pattern in pyproject
    assert "!runtime/data/models/*.safetensors" in (repo / ".gitignore").read_text().splitlines()
    weights = shipped_weights_path("synthetic")
    if weights.is_file():
        size_mb = weights.stat().st_size / 2**20
        assert size_mb <= 25, f"synthetic.safetensors is {size_mb:.1f} MiB (the budget is 25)"


def test_synthetic_architecture_fits_the_budget():
    """The fixture config stays small: fp16 weights within 25 MiB and a trunk far below tiny's."""
    from fastsam2.export.models import build_sam2, model_config

    model = build_sam2("synthetic", None, quiet=True)
    params = sum(p.numel() for p in model.parameters())
    assert params * 2 / 2**20 <= 25
    trunk = sum(p.numel() for p in model.image_encoder.trunk.parameters())
    assert trunk < 5e6
    cfg = model_config(model)
    assert (cfg.config_name, cfg.image_size, cfg.hidden_dim, cfg.mem_dim) == ("synthetic", 512, 256, 64)


# -- building (torch) -------------------------------------------------------------------------------
def test_config_file_builds_the_same_model_as_its_name(tmp_path):
    """A sam2 config given as a file gets the same overrides as the named config: same modules, same
    weights for the same seed, same image-size override."""
    import sam2
    import torch

    from fastsam2.export.models import build_sam2, model_config

    src = Path(sam2.__file__).parent / "configs" / "sam2.1" / "sam2.1_hiera_t.yaml"
    path = tmp_path / "my_tiny.yaml"
    path.write_text(src.read_text())
    named = build_sam2("tiny", image_size=256, quiet=True, seed=3)
    filed = build_sam2(str(path), image_size=256, quiet=True, seed=3)
    assert type(named) is type(filed)
    a, b = named.state_dict(), filed.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    cfg = model_config(filed)
    assert (cfg.config_name, cfg.image_size) == ("my_tiny", 256)
    assert model_config(named).to_json() | {"config_name": "my_tiny"} == cfg.to_json()


def test_bad_config_files_are_one_line(tmp_path):
    from fastsam2.export.models import ModelLoadError, build_sam2

    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    (tmp_path / "broken.yaml").write_text("model: [unclosed\n")
    (tmp_path / "nomodel.yaml").write_text("trainer: {}\n")
    for name, match in (("list.yaml", "not a sam2 config"), ("broken.yaml", "cannot read config"),
                        ("nomodel.yaml", "not a sam2 config"), ("missing.yaml", "file not found")):
        with pytest.raises(ModelLoadError, match=match) as e:
            build_sam2(str(tmp_path / name), quiet=True)
        assert "\n" not in str(e.value)


def test_synthetic_checkpoint_brings_its_config(registry):
    import torch

    from fastsam2.export.models import build_sam2, model_config
    from fastsam2.runtime.manifest import file_sha256

    model = build_sam2(None, "synthetic")
    cfg = model_config(model)
    assert (cfg.config_name, cfg.image_size) == ("synthetic", 512)
    assert model.fastsam2_weights == file_sha256(registry / "synthetic.safetensors")
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_safetensors_round_trip_and_mismatch(tmp_path):
    """fp16 safetensors load back as float32 equal to the fp16-rounded weights; a file of another
    architecture is one error naming what it looks like."""
    import torch
    from safetensors.torch import save_file

    from fastsam2.export.models import ModelLoadError, build_sam2

    src = build_sam2("synthetic", None, quiet=True, seed=5)
    state = {k: v.half() if v.is_floating_point() else v for k, v in src.state_dict().items()}
    path = tmp_path / "w.safetensors"
    save_file(state, str(path))
    loaded = build_sam2("synthetic", str(path)).state_dict()
    assert all(loaded[k].dtype == src.state_dict()[k].dtype for k in loaded)
    assert all(torch.equal(loaded[k], state[k].to(loaded[k].dtype)) for k in loaded)
    with pytest.raises(ModelLoadError, match="does not fit config 'tiny'.*looks like 'synthetic'"):
        build_sam2("tiny", str(path))
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(ModelLoadError, match="cannot read checkpoint"):
        build_sam2("synthetic", str(tmp_path / "junk.safetensors"))


def test_cli_config_alias_against_an_export(onnx_tiny512, tmp_path, capsys):
    """``--config sam2.1-tiny`` names the model a ``tiny`` export holds: accepted; another size is not."""
    from PIL import Image

    from fastsam2.tools import cli

    clip = tmp_path / "clip"
    clip.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), np.uint8)).save(clip / f"{i:05d}.jpg")
    base = ["track", "--video", str(clip), "--point", "30,30", "--backend", "ort", "--graphs", str(onnx_tiny512),
            "--no-overlay"]
    assert cli.main([*base, "--out", str(tmp_path / "a"), "--config", "sam2.1-tiny"]) == 0
    report = json.loads((tmp_path / "a" / "report.json").read_text())
    assert report["config"] == "tiny"
    capsys.readouterr()
    assert cli.main([*base, "--out", str(tmp_path / "b"), "--config", "sam2.1-small"]) == 1
    assert "are 'tiny'" in capsys.readouterr().err

import json

import pytest

from fastsam2.export.trt.metadata import (
    EngineMetadata,
    EngineMismatchError,
    check_engine_metadata,
    metadata_path,
)
from fastsam2.export.trt.profiles import Profile

HERE = dict(
    tensorrt_version="10.3.0",
    gpu_name="Orin",
    compute_capability="8.7",
    manifest_sha256="ab" * 32,
)


def _meta(**kw):
    args = dict(graph="memory_attention", precision="fp16", config_name="tiny", **HERE)
    args.update(kw)
    return EngineMetadata(**args)


def test_roundtrip(tmp_path):
    meta = _meta(
        profiles=[Profile().add("kept_idx", (410,), (2048,), (4096,)).to_json()],
        build_options={"workspace_mib": 2048, "fp32_layers": ["type:SOFTMAX"]},
    )
    path = metadata_path(tmp_path / "memory_attention.engine")
    assert path.name == "memory_attention.engine.json"
    meta.save(path)
    back = EngineMetadata.load(path)
    assert back == meta
    assert back.profile_objects()[0]["kept_idx"].max == (4096,)
    assert json.loads(path.read_text())["precision"] == "fp16"


def test_matching_metadata_passes():
    check_engine_metadata(_meta(), **HERE)
    check_engine_metadata(_meta())  # nothing to compare


@pytest.mark.parametrize(
    "field,value,needle",
    [
        ("tensorrt_version", "10.7.0", "TensorRT version '10.3.0' but this is '10.7.0'"),
        ("gpu_name", "NVIDIA H100", "GPU 'Orin' but this is 'NVIDIA H100'"),
        ("compute_capability", "9.0", "compute capability '8.7' but this is '9.0'"),
        ("manifest_sha256", "cd" * 32, "export manifest sha256"),
    ],
)
def test_each_mismatch_is_one_line_with_rebuild_hint(field, value, needle):
    here = dict(HERE, **{field: value})
    with pytest.raises(EngineMismatchError) as err:
        check_engine_metadata(_meta(), **here)
    msg = str(err.value)
    assert needle in msg
    assert "\n" not in msg
    assert "fastsam2-export --config tiny --out DIR --trt --precision fp16" in msg


def test_missing_file_and_bad_values(tmp_path):
    with pytest.raises(EngineMismatchError, match="has no build metadata"):
        EngineMetadata.load(tmp_path / "x.engine.json")
    with pytest.raises(ValueError, match="precision must be one of"):
        _meta(precision="bf16")
    with pytest.raises(ValueError, match="unknown engine metadata keys"):
        EngineMetadata.from_json({**_meta().to_json(), "extra": 1})

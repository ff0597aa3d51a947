import json

import pytest

from fastsam2.runtime.backends.trt_metadata import (
    EngineMetadata,
    EngineMismatchError,
    check_engine_metadata,
    metadata_path,
)
from fastsam2.runtime.backends.trt_profiles import Profile

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
    assert "fastsam2-export --config tiny --out DIR --trt --fp16 --profile desktop" in msg
    assert_hint_parses(msg)


def assert_hint_parses(msg: str) -> None:
    """The rebuild hint is a command fastsam2-export's own parser accepts (every flag exists)."""
    from fastsam2.tools.export_cli import build_parser

    argv = msg.split("fastsam2-export ", 1)[1].split()
    args = build_parser().parse_args(argv)  # SystemExit on an unknown flag
    assert args.trt


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_rebuild_hint_names_existing_flags(precision):
    from fastsam2.runtime.backends.trt_metadata import rebuild_hint

    hint = rebuild_hint(_meta(precision=precision, build_options={"profile_kind": "edge"}))
    assert "--profile edge" in hint and "--precision" not in hint
    assert_hint_parses(hint)


def test_mismatch_error_is_a_stage_error():
    """Every CLI reports StageError in one line (runtime/cli.py user_errors)."""
    from fastsam2.runtime.backends.base import StageError

    assert issubclass(EngineMismatchError, StageError)


def test_tensorrt_rtx_engines_check_targets_not_the_gpu_name():
    rtx = _meta(tensorrt_flavor="tensorrt_rtx", gpu_name="", compute_capability="8.0,8.6,8.9,12.0,12.1")
    check_engine_metadata(rtx, tensorrt_version="10.3.0", gpu_name="NVIDIA GeForce RTX 4090",
                          compute_capability="8.9", tensorrt_flavor="tensorrt_rtx")
    check_engine_metadata(rtx, compute_capability="13.0")  # "8.0 ... 12.0 and later"
    with pytest.raises(EngineMismatchError, match="compute capabilities 8.0,8.6,8.9,12.0,12.1 but this GPU is 9.0"):
        check_engine_metadata(rtx, compute_capability="9.0")
    turing = _meta(tensorrt_flavor="tensorrt_rtx", gpu_name="", compute_capability="7.5")
    with pytest.raises(EngineMismatchError, match="this GPU is 8.6"):
        check_engine_metadata(turing, compute_capability="8.6")
    with pytest.raises(EngineMismatchError, match="built by tensorrt_rtx but this is tensorrt"):
        check_engine_metadata(rtx, tensorrt_flavor="tensorrt")


def test_missing_file_and_bad_values(tmp_path):
    with pytest.raises(EngineMismatchError, match="has no build metadata"):
        EngineMetadata.load(tmp_path / "x.engine.json")
    with pytest.raises(ValueError, match="precision must be one of"):
        _meta(precision="bf16")
    with pytest.raises(ValueError, match="unknown engine metadata keys"):
        EngineMetadata.from_json({**_meta().to_json(), "extra": 1})

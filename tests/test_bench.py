"""``fastsam2 bench`` end to end on the CPU at a toy size: the report's structure, not its timings."""

from __future__ import annotations

import json

import pytest

from fastsam2.tools.cli import main


@pytest.mark.filterwarnings("ignore")
def test_bench_cpu_report(bedroom, tmp_path):
    out = tmp_path / "bench.json"
    rc = main([
        "bench", "--device", "cpu", "--image-size", "256", "--frames", "3", "--keep", "1.0,0.5",
        "--frames-dir", str(bedroom), "--json", str(out), "--threads", "1",
    ])
    assert rc == 0
    report = json.loads(out.read_text())
    assert set(report) == {"meta", "runs", "comparisons"}
    meta = report["meta"]
    assert meta["device"] == "cpu" and meta["image_size"] == 256 and "RANDOM" in meta["weights"]
    assert meta["threads"]["threads"] == 1 and meta["threads"]["source"] == "--threads"
    assert meta["torch_threads"] == 1  # both sides ran with the chosen threads
    runs = report["runs"]
    official = [r for r in runs if r["impl"] == "official"]
    ours = [r for r in runs if r["impl"] == "fastsam2"]
    assert len(official) == 1 and sorted(r["keep"] for r in ours) == [0.5, 1.0]
    for r in runs:
        assert r["frames"] == 3 and r["count"] == 1
        for key in ("median_ms", "p90_ms", "mean_ms", "fps", "prompt_ms"):
            assert r[key] > 0, (r["variant"], key)
        assert r["peak_mem_mb"] >= 0 and r["memory_bank_mb"] > 0
        assert r["peak_rss_mb"] >= r["rss_base_mb"] > 0  # per configuration, absolute and above its start
        assert r["stage_ms"] and all(v > 0 for v in r["stage_ms"].values())
    assert {"image_encoder", "memory_attention", "mask_decoder", "memory_encoder"} <= set(official[0]["stage_ms"])
    assert "router" in next(r for r in ours if r["keep"] == 0.5)["stage_ms"]
    assert next(r for r in ours if r["keep"] == 0.5)["kept_tokens"] == 128  # ceil(0.5 * 16 * 16)
    assert len(report["comparisons"]) == 2
    assert all(c["fps_ratio"] > 0 and c["peak_mem_ratio"] is not None for c in report["comparisons"])


@pytest.mark.filterwarnings("ignore")
def test_bench_times_a_fixed_encoder_rectangle(bedroom, tmp_path):
    """--region-units: random weights' masks cover the frame, so the bench fixes the rectangle's
    size; the report says how much of each frame the trunk computed."""
    from fastsam2.runtime.specs import region_units

    out = tmp_path / "bench.json"
    rc = main([
        "bench", "--device", "cpu", "--image-size", "256", "--frames", "4", "--keep", "1.0", "--no-official",
        "--encoder-region", "0", "--region-units", "1", "--frames-dir", str(bedroom), "--json", str(out),
        "--threads", "1",
    ])
    assert rc == 0
    report = json.loads(out.read_text())
    assert report["meta"]["region_units"] == 1
    (row,) = report["runs"]
    assert row["variant"].endswith("region 1x1")
    # tiny at 256 px: 64 patch tokens a side, units of 56 tokens (Hiera's 14-token windows at stride 4):
    # a 2 x 2 grid whose second unit is partial
    tokens, align = 64, 56
    assert region_units(tokens, align) == 2
    unit = align * align / tokens ** 2
    assert row["encoder_share"] == pytest.approx((1.0 + 3 * unit) / 4)  # frame 0 prompted: whole


@pytest.mark.filterwarnings("ignore")
def test_bench_runs_an_fp8_trunk_after_the_official_rows(bedroom, tmp_path):
    out = tmp_path / "bench.json"
    assert main(["bench", "--device", "cpu", "--image-size", "256", "--frames", "3", "--keep", "1.0",
                 "--precision", "fp8", "--frames-dir", str(bedroom), "--json", str(out), "--threads", "1"]) == 0
    report = json.loads(out.read_text())
    official, ours = report["runs"]
    assert official["impl"] == "official" and "fp8" not in official["variant"]
    assert ours["variant"].endswith("fp8-trunk") and ours["precision"] == "fp8" and ours["median_ms"] > 0


def test_bench_rejects_bad_options(capsys):
    assert main(["bench", "--keep", "1.5", "--json", "x.json"]) == 1  # argparse errors: one line, exit 1
    assert "fastsam2 bench: error: argument --keep" in capsys.readouterr().err
    assert main(["bench", "--device", "cpu", "--cuda-graphs", "--json", "x.json"]) == 1
    assert "--cuda-graphs needs --device cuda" in capsys.readouterr().err
    assert main(["bench", "--backend", "ort", "--device", "cpu", "--gpu-attention", "sdpa", "--json", "x.json"]) == 1
    assert "--gpu-attention" in capsys.readouterr().err
    assert main(["bench", "--gpu-attention", "fastest", "--json", "x.json"]) == 1
    assert "argument --gpu-attention: invalid choice" in capsys.readouterr().err
    assert main(["bench", "--device", "cpu", "--in-flight", "1", "--json", "x.json"]) == 1
    assert "--in-flight needs the GPU path" in capsys.readouterr().err
    assert main(["bench", "--device", "cpu", "--region-units", "2", "--json", "x.json"]) == 1
    assert "add --encoder-region" in capsys.readouterr().err
    assert main(["bench", "--device", "cpu", "--freeze-weights", "--json", "x.json"]) == 1
    assert "--freeze-weights is for compiled half-precision stages on CUDA" in capsys.readouterr().err
    assert main(["bench", "--device", "cpu", "--compile", "--freeze-weights", "--json", "x.json"]) == 1
    assert "--freeze-weights is for compiled half-precision stages on CUDA" in capsys.readouterr().err
    assert main(["bench", "--backend", "ort", "--device", "cpu", "--precision", "fp8", "--json", "x.json"]) == 1
    assert "torch backend" in capsys.readouterr().err


@pytest.mark.slow
def test_ort_gpu_bench_cpu_path(tmp_path):
    """bench/ort_gpu.py end to end on the CPU provider (the GPU host runs the same code on CUDA):
    every stage runs, every run is reported with its agreement to its reference."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("ort_gpu", Path(__file__).resolve().parents[1] / "bench" / "ort_gpu.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "ort.json"
    rc = module.main(["--device", "cpu", "--image-size", "256", "--frames", "2", "--warmup", "1", "--profile",
                      "--out", str(out), "--work", str(tmp_path / "work")])
    report = json.loads(out.read_text())
    assert rc == 0 and all(s["ok"] for s in report["stages"].values()), report["stages"]
    assert set(report["runs"]) == set(module.RUNS)
    for name, ref in module.REFERENCE.items():
        vs = report["runs"][name][f"vs_{ref}"]
        assert vs["finite"] and 0.5 < vs["min_iou"] <= 1.0, (name, vs)
    assert report["runs"]["ort_int8"]["precisions"]["mask_decoder"] == "int8"
    assert report["profile"]["ort_fp16"]["mask_decoder"]["by_op"]

"""benchmarks/gpu_e2e.py runs on the CPU with tiny flags: every configuration through fairscan's own stages, the
figures it prints, and the --max-seconds bound naming what it skipped. Timings are printed, never asserted."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from tests._finetune_fixtures import RESNET, VIT, one_thread

pytest.importorskip("torch")

TINY = [
    "--device", "cpu", "--arch", VIT, "--bit-arch", RESNET, "--image-size", "64", "--source-size", "32",
    "--batch", "4", "--bit-batch", "4", "--steps", "2", "--warmup", "1", "--steps-per-epoch", "3", "--workers", "0",
    "--precision", "fp32", "--mlp-dim", "32", "--decoder-dim", "32", "--decoder-depth", "1", "--decoder-heads", "2",
    "--matmul-size", "64", "--predict-batch", "4",
]  # fmt: skip


def _bench():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_e2e.py"
    spec = importlib.util.spec_from_file_location("gpu_e2e", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_configuration_runs_through_fairscan_and_reports_its_figures(tmp_path):
    bench = _bench()
    with one_thread():
        out = bench.main([*TINY, "--configs", "vit_ft,bit_ft,linear_probe,mae_075,mae_090,mocov3", "--no-compile",
                          "--out", str(tmp_path / "e2e.json")])  # fmt: skip
    assert list(out["configs"]) == ["vit_ft", "bit_ft", "linear_probe", "mae_075", "mae_090", "mocov3"]
    assert out["skipped"] == []
    for name, r in out["configs"].items():
        assert r["steps_measured"] == 2 and r["images_per_s"] > 0, name
        assert 0 <= r["data_wait_share"] <= 1 and r["train_gflops_per_image"] > 0, name
        assert {"mfu_vs_nominal", "mfu_vs_matmul", "phases_s"} <= set(r), name
    cfgs = out["configs"]
    assert cfgs["linear_probe"]["train_gflops_per_image"] < cfgs["vit_ft"]["train_gflops_per_image"]
    assert cfgs["mae_090"]["train_gflops_per_image"] < cfgs["mae_075"]["train_gflops_per_image"]
    assert out["predict"]["bf16"]["images"] == out["predict"]["fp32"]["images"] > 0
    assert out["predict"]["fp32"]["batches"] >= 2 and out["predict"]["fp32"]["images_per_s"] > 0
    assert {"eager_fp32", "eager"} <= set(out["standalone"]["vit_ft"])
    assert {"vit_ft_over_standalone", "mae_075_over_standalone", "mae_075_counted_flop_ratio"} <= set(out["ratios"])
    assert (tmp_path / "e2e.json").is_file()


def test_max_seconds_skips_what_has_not_started_and_names_it():
    bench = _bench()
    with one_thread():
        out = bench.main([*TINY, "--max-seconds", "0"])
    assert out["configs"] == {}
    eager = [c for c in bench.CONFIGS if not c.endswith("_compile")]
    # eager runs, the standalone eager steps and predict, then what compiles
    assert out["skipped"] == [*eager, "standalone", "predict", "vit_ft_compile", "standalone_compile"]


def _paper_hours():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "paper_hours.py"
    spec = importlib.util.spec_from_file_location("paper_hours", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_paper_table_covers_every_training_preset_and_marks_estimates():
    from fairscan.config import list_presets

    hours = _paper_hours()
    rows = hours.runs()
    training = {p.name for p in list_presets() if p.stage in ("finetune", "pretrain") and not p.name.startswith("demo")}
    assert {r["preset"] for r in rows} == training - {"mae-cxpt-100pct"}  # it shares mae-cxpt's run folder
    flops = {"vit": 105e9, "resnet": 274e9, "probe": 35e9, "mae-0.75": 58e9, "mae-0.9": 43e9, "mocov3": 269e9}
    estimated = hours.rates(flops, None)
    assert all(basis.startswith("estimate") for _, basis in estimated.values())
    assert estimated["vit"][0] == pytest.approx(hours.TARGET_VIT_FT)
    measured = hours.rates(flops, {"configs": {"vit_ft": {"images_per_s": 2000.0}, "mae_075": {"images_per_s": 3000.0}}})
    assert measured["vit"] == (2000.0, "measured") and measured["mae-0.75"] == (3000.0, "measured")
    assert measured["resnet"][0] == pytest.approx(2000.0 * 105 / 274) and measured["resnet"][1].startswith("estimate")
    assert "**total**" in hours.table(rows, flops, measured)

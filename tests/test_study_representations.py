"""`fairscan study representations`: embed, probe and inspect per model, in one table beside the audit's FG
(the preset's quick variant, run end to end on synthetic data)."""

from __future__ import annotations

import pytest

from fairscan.studies import load_study, plan_study, run_study


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    root = tmp_path_factory.mktemp("representations")
    return {"data": str(root / "data"), "runs": str(root / "runs"), "studies": str(root / "studies")}


@pytest.fixture(scope="module")
def written(paths):
    return run_study("representations", quick=True, paths=paths)


def test_the_full_study_embeds_every_fine_tuned_model(paths):
    plan = plan_study("representations", paths=paths)
    embeds = [s for s in plan.steps if s.kind == "embed"]
    models = ["mae", "medical-mae", "mocov3", "medical-mocov3", "bit", "remedis"]
    assert [r.preset.name for r in plan.rows] == models
    assert len(embeds) == 12 and all(s.command.startswith("fairscan embed ") for s in embeds)
    for step in embeds:  # after what it reads: its run's fine-tuning, or the pre-training of a frozen model
        for dep in step.deps:
            assert plan.steps.index(step) > next(i for i, s in enumerate(plan.steps) if s.key == dep)
    frozen = {s.command.split()[3]: s for s in embeds if " --model " in s.command}
    assert set(frozen) == set(models)
    assert any(d.startswith("pretrain:") for d in frozen["medical-mocov3"].deps)  # weights pre-trained here


def test_the_quick_study_tables_probes_and_ks_tests_beside_fg(written):
    from fairscan.io import parquet_metadata
    from fairscan.representations.inspect import inspect
    from fairscan.representations.probe import probe

    d = load_study(written["json"])
    rep = d["representations"]
    assert [(r["preset"], r["frozen"]) for r in rep["rows"]] == [
        ("mae", False),
        ("mae", True),
        ("bit", False),
        ("bit", True),
    ]
    assert rep["targets"] == ["race", "sex"] and rep["attrs"] == ["race", "sex", "label"]
    tuned = [r for r in rep["rows"] if not r["frozen"]]
    for row, study_row in zip(tuned, d["rows"], strict=True):
        assert row["gaps"] == {a: study_row["metrics"][f"gap_{a}"]["mean"] for a in ("sex", "race")}
    for row in [r for r in rep["rows"] if r["frozen"]]:  # a frozen model: no classifier, so no FG
        assert row["gaps"] == {} and row["label"].endswith("(frozen)")
        prov = parquet_metadata(row["features"])
        assert prov["features_of"] == "frozen encoder"
        assert prov["init"] == "random"  # the quick variant has no weights to load
    assert prov["pooling"] == "avg"  # BiT, a ResNet
    for row in rep["rows"][:1]:  # the table's numbers are those of probe and inspect run on its features file
        again = probe(row["features"], ["race", "sex"], folds=3, permutations=4, seed=0)
        for p in again.probes:
            assert row["probe"][p.target]["auc_macro"] == pytest.approx(p.auc_macro, abs=1e-12)
            assert row["probe"][p.target]["p_value"] == pytest.approx(p.p_value, abs=1e-12)
        tests = inspect(row["features"], ["race", "sex"], label="pleural_effusion", pca=2).tests
        for attr in ("race", "sex", "label"):
            mine = [t for t in tests if t.attr == attr]
            assert row["inspect"][attr]["tests"] == len(mine)
            assert row["inspect"][attr]["significant"] == sum(t.p_adjusted < 0.05 for t in mine)
            assert row["inspect"][attr]["min_p_adjusted"] == pytest.approx(min(t.p_adjusted for t in mine))
    md = written["markdown"].read_text()
    assert "## Where the bias lives: probes and KS tests of each model's features" in md
    first = rep["rows"][0]
    race = first["probe"]["race"]
    assert f"{race['auc_macro']:.3f} (p {race['p_value']:.3g})" in md
    assert "Where the bias lives" in written["html"].read_text()


def test_finished_embed_steps_are_done_and_a_new_model_redoes_them(written, paths):
    import shutil

    from fairscan.io import parquet_metadata, sha256_file

    embeds = [s for s in plan_study("representations", quick=True, paths=paths).steps if s.kind == "embed"]
    assert len(embeds) == 4 and [s.state() for s in embeds] == ["done"] * 4
    run = embeds[0].out.parent.parent
    assert parquet_metadata(embeds[0].out)["weights_sha256"] == sha256_file(run / "model.safetensors")
    moved = embeds[0].out.with_suffix(".bak")
    shutil.move(embeds[0].out, moved)  # without its features file, the step is to do again
    try:
        assert embeds[0].state() == "todo"
    finally:
        shutil.move(moved, embeds[0].out)

"""`fairscan finetune --mitigation ... --group-attr ... --select ...` end to end (tiny CPU runs): bad input exits 2
before any training, the missing-group rule, and what stage.json records."""

from __future__ import annotations

import json

import pytest

from tests._finetune_fixtures import TINY_ARGS

torch = pytest.importorskip("torch")

COMMON = ["--model", "mae", "--init", "random", "--epochs", "1", "--batch-size", "8", *TINY_ARGS]


pytestmark = pytest.mark.usefixtures("single_thread")


def _variant(manifest, tmp_path, edit, name="m"):
    import pandas as pd

    df = edit(pd.read_parquet(manifest / "manifest.parquet").copy())
    (tmp_path / name).mkdir()
    df.to_parquet(tmp_path / name / "manifest.parquet", index=False)
    prepared = json.loads((manifest / "prepare.json").read_text())  # the images stay where they are
    (tmp_path / name / "prepare.json").write_text(json.dumps({"image_root": prepared["image_root"]}))
    return tmp_path / name


def _refused(run_cli, out, *args):
    code, _, err = run_cli("finetune", *COMMON, "--out", out, *args)
    assert code == 2, err
    assert not (out / "metrics.jsonl").exists() and not (out / "model.safetensors").exists()
    return err


def test_bad_group_settings_exit_2_before_training(run_cli, manifest, tmp_path):
    m = ["--manifest", manifest]
    err = _refused(run_cli, tmp_path / "a", *m, "--mitigation", "reweight", "--group-attr", "ethnicity")
    assert "--group-attr ethnicity: the manifest has no column 'ethnicity'" in err
    err = _refused(run_cli, tmp_path / "b", *m, "--mitigation", "groupdro")
    assert "--mitigation groupdro needs --group-attr" in err and "hint: add --group-attr race" in err
    err = _refused(run_cli, tmp_path / "c", *m, "--select", "dto")
    assert "--select dto needs --group-attr" in err
    err = _refused(run_cli, tmp_path / "d", *m, "--mitigation", "groupdro", "--group-attr", "race",
                   "--groupdro-eta", "0")  # fmt: skip
    assert "--groupdro-eta: Input should be greater than 0" in err
    err = _refused(run_cli, tmp_path / "e", *m, "--mitigation", "adversarial", "--group-attr", "race",
                   "--adv-lambda", "-1")  # fmt: skip
    assert "--adv-lambda: Input should be greater than 0" in err
    err = _refused(run_cli, tmp_path / "f", *m, "--mitigation", "reweight", "--group-attr", "race",
                   "--groupdro-eta", "0.1")  # fmt: skip
    assert (
        "--groupdro-eta is a setting of --mitigation groupdro, but this run uses --mitigation reweight" in err
    )
    err = _refused(run_cli, tmp_path / "g", *m, "--mitigation", "adversarial", "--group-attr", "race",
                   "--linear-probe")  # fmt: skip
    assert "--mitigation adversarial cannot work with --linear-probe" in err
    err = _refused(run_cli, tmp_path / "h", *m, "--mitigation", "resample", "--group-attr", "race",
                   "--resample-by", "group-label", "--resample-label", "flu")  # fmt: skip
    assert "--resample-label 'flu' is not one of this run's labels" in err
    err = _refused(run_cli, tmp_path / "i", *m, "--mitigation", "bogus", "--group-attr", "race")
    assert "--mitigation" in err


def test_a_subgroup_missing_from_the_training_split_exits_2(run_cli, manifest, tmp_path):
    def no_black_training_rows(df):
        df.loc[(df["split"] == "train") & (df["race"] == "Black"), "split"] = "test"
        return df

    m = _variant(manifest, tmp_path, no_black_training_rows)
    err = _refused(
        run_cli, tmp_path / "r", "--manifest", m, "--mitigation", "resample", "--group-attr", "race"
    )
    assert "subgroup(s) Black appear in the validate split but not in the train split" in err
    # erm only selects with the groups: training without Black images is the user's choice, not an error
    code, _, err = run_cli("finetune", *COMMON, "--out", tmp_path / "erm", "--manifest", m, "--group-attr", "race",
                           "--select", "val_worst_group_auc")  # fmt: skip
    assert code == 0, err


def test_rows_without_a_group_leave_training_and_the_record_says_how_many(run_cli, manifest, tmp_path):
    def some_missing(df):
        rows = df.index[(df["split"] == "train") & (df["race"] == "White")][:6]  # 35 White: every group stays
        df.loc[rows[:4], "race"] = None
        df.loc[rows[4:], "sex"] = None
        return df

    m = _variant(manifest, tmp_path, some_missing)
    out = tmp_path / "rw"
    code, _, err = run_cli("finetune", *COMMON, "--out", out, "--manifest", m, "--mitigation", "reweight",
                           "--group-attr", "sex+race", "--reweight-by", "group-label")  # fmt: skip
    assert code == 0, err
    stage = json.loads((out / "stage.json").read_text())
    mit = stage["mitigation"]
    assert mit["train_rows_dropped_missing_group"] == 6 and stage["images"]["train"] == 44
    assert mit["reweight_by"] == "group-label" and sum(mit["train_sizes"]) == 44
    assert all("+" in g for g in mit["groups"]) and stage["settings"]["mitigation"] == "reweight"


def test_dto_selection_records_every_epoch_and_exports_the_chosen_one(run_cli, manifest, tmp_path):
    from safetensors.torch import load_file

    out = tmp_path / "dto"
    code, _, err = run_cli("finetune", *COMMON, "--epochs", "3", "--out", out, "--manifest", manifest,
                           "--mitigation", "groupdro", "--group-attr", "sex", "--select", "dto")  # fmt: skip
    assert code == 0, err
    stage = json.loads((out / "stage.json").read_text())
    sel = stage["selection"]
    assert sel["select"] == "dto" and sel["split"] == "validate" and len(sel["epochs"]) == 3
    dto = [r["dto"] for r in sel["epochs"]]
    assert sel["chosen_epoch"] == min(range(3), key=lambda e: (dto[e], e))
    assert stage["result"]["best_epoch"] == sel["chosen_epoch"] and not (out / "selection").exists()
    assert stage["settings"]["weight_decay"] == 1.0 and stage["mitigation"]["groupdro_eta"] == 0.01
    epochs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    weights = [r["groupdro_weights"] for r in epochs if r["kind"] == "epoch"]
    assert len(weights) == 3 and all(sum(w.values()) == pytest.approx(1.0) for w in weights)
    assert set(load_file(out / "model.safetensors")) == set(load_file(out / "state" / "model.safetensors"))


@pytest.mark.slow
def test_groupdro_on_two_processes_gathers_the_group_losses_of_the_whole_batch(run_cli, manifest, tmp_path,
                                                                                monkeypatch):
    """Two CPU processes (Accelerate's launcher, gloo) hold one set of Group DRO weights, the one a single
    process computes from the same effective batches (no DropPath, so only float sums differ)."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    args = [*COMMON, "--manifest", manifest, "--mitigation", "groupdro", "--group-attr", "race",
            "--groupdro-eta", "1", "--drop-path", "0", "--lr", "1e-3"]  # fmt: skip
    weights = {}
    for procs in (1, 2):
        out = tmp_path / f"p{procs}"
        code, _, err = run_cli("finetune", *args, "--out", out, "--procs", str(procs))
        assert code == 0, err[-3000:]
        stage = json.loads((out / "stage.json").read_text())
        assert stage["processes"] == procs
        (epoch,) = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if '"epoch"' in x
                    and json.loads(x)["kind"] == "epoch"]  # fmt: skip
        weights[procs] = epoch["groupdro_weights"]
    assert weights[1] != {g: 1 / 3 for g in weights[1]}  # the weights moved
    for g, w in weights[1].items():
        assert weights[2][g] == pytest.approx(w, rel=1e-4), (weights, g)


def test_a_mitigation_preset_runs_and_set_overrides_its_hyperparameters(run_cli, manifest, tmp_path):
    out = tmp_path / "preset"
    code, _, err = run_cli("finetune", "--preset", "mitigation-groupdro-mae:quick", "--set",
                           "finetune.groupdro_eta=0.5", "--manifest", manifest, "--out", out)  # fmt: skip
    assert code == 0, err
    stage = json.loads((out / "stage.json").read_text())
    s = stage["settings"]
    assert (s["mitigation"], s["group_attr"], s["groupdro_eta"], s["weight_decay"]) == ("groupdro", "race", 0.5, 1.0)
    assert stage["mitigation"]["groupdro_eta"] == 0.5
    code, _, err = run_cli("finetune", "--preset", "mitigation-groupdro-mae:quick", "--set",
                           "finetune.groupdro_eta=-1", "--manifest", manifest, "--out", tmp_path / "bad")  # fmt: skip
    assert code == 2 and "finetune.groupdro_eta" in err and "greater than 0" in err

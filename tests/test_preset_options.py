"""`--preset` / `--set` on the stage commands: the preset's settings under the options typed."""

import json

from fairscan.schema import write_predictions
from tests._preds import make_preds


def test_audit_takes_a_preset_and_typed_options_win(run_cli, tmp_path):
    path = tmp_path / "preds.parquet"
    write_predictions(make_preds(600, ("edema",), seed=0), path)
    code, out, err = run_cli(
        "audit", path, "--preset", "audit-paper", "--set", "audit.n_boot=30", "--balanced-draws", "3", "--json"
    )
    assert code == 0, err
    settings = json.loads(out)["settings"]
    assert settings["balanced_test"] is True  # from the preset
    assert settings["n_boot"] == 30  # from --set
    assert settings["balanced_draws"] == 3  # typed on the command line


def test_set_without_preset_is_an_input_error(run_cli, tmp_path):
    code, _, err = run_cli("audit", tmp_path / "x.parquet", "--set", "audit.n_boot=3")
    assert code == 2 and "--set overrides a preset's keys" in err
    code, _, err = run_cli("finetune", "--set", "finetune.epochs=3", "--out", tmp_path / "run")
    assert code == 2 and "--set overrides a preset's keys" in err


def test_unknown_preset_and_key_exit_2(run_cli, tmp_path):
    code, _, err = run_cli("finetune", "--preset", "no-such-preset", "--out", tmp_path / "run")
    assert code == 2 and "no-such-preset" in err
    code, _, err = run_cli(
        "finetune", "--preset", "mae", "--set", "finetune.epochz=3", "--out", tmp_path / "run"
    )
    assert code == 2 and "epochz" in err

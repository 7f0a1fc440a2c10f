"""Each setting declared once: the command-line options are the settings models' fields, old keys still work
with a warning, pre-training methods and dataset kinds are registries, and the execution options are shared."""

from __future__ import annotations

import typing
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from fairscan.cli import _options as opt
from fairscan.data.kinds import KINDS, ChexpertData
from fairscan.settings import ExecutionOptions, FairscanDeprecation, TrainingOptions, bare_type, option_names
from fairscan.train.finetune import FinetuneConfig
from fairscan.train.objectives import METHODS, method, settings_union
from fairscan.train.predict import PredictConfig
from fairscan.train.pretrain import PretrainConfig, pretrain_config

MODELS = [FinetuneConfig, PredictConfig, *(method(m).Settings for m in METHODS), *KINDS.values()]


@pytest.mark.parametrize("model", MODELS, ids=lambda m: f"{m.__module__}.{m.__name__}")
def test_every_setting_has_its_help_text_and_an_option_of_its_own(model):
    fields = {k: f for k, f in model.model_fields.items() if k != "kind"}
    missing = [k for k, f in fields.items() if not f.description]
    assert not missing, f"{model.__name__}: no description (the option's help) for {missing}"
    flags = [flag for k, f in fields.items() for flag in option_names(k, f)]
    assert len(flags) == len(set(flags)), flags


@pytest.mark.parametrize(
    ("argv", "model"),
    [(["finetune"], FinetuneConfig), (["predict"], PredictConfig), (["prepare", "chexpert"], ChexpertData),
     (["pretrain"], method("mocov3").Settings), (["pretrain"], method("mae").Settings)],
)  # fmt: skip
def test_each_command_offers_exactly_its_settings(argv, model, run_cli):
    code, out, _ = run_cli(*argv, "--help")
    assert code == 0
    text = " ".join(out.split())
    for name, field in model.model_fields.items():
        if name == "kind":
            continue
        shown = field.description.split()[0] if opt.cli_of(field).argument else option_names(name, field)[0]
        assert shown.split("/")[0] in text, (argv, name)


def test_options_become_settings_by_the_fields_own_types():
    """What a command hands to the settings model: lists from commas, flags, a repeated option, a one-number
    crop scale; options not typed are left out (the preset's or the model's default then holds)."""
    fields = opt.fields_of([method("mae").Settings])
    got = {}

    def body(ctx: typer.Context, **values):
        got.update(opt.typed(ctx, fields, values))

    app = typer.Typer()
    app.command()(opt.command(body, [opt.field_parameter(k, f) for k, f in fields.items()], "test"))
    result = CliRunner().invoke(app, ["--manifest", "a", "--manifest", "b", "--splits", "train,validate",
                                      "--no-cache", "--no-norm-pix-loss", "--crop-scale", "0.3", "--cpu",
                                      "--log-with", "tensorboard", "--snapshots", "2,4"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert got == {"manifests": ["a", "b"], "splits": ["train", "validate"], "use_cache": False,
                   "norm_pix_loss": False, "crop_scale": ["0.3"], "cpu": True, "log_with": ["tensorboard"],
                   "snapshots": ["2", "4"]}  # fmt: skip
    cfg = pretrain_config(method="mae", out="o", **got)
    assert cfg.crop_scale == (0.3, 1.0) and cfg.snapshots == [2, 4] and cfg.use_cache is False


def test_the_execution_options_are_one_model_shared_by_every_stage():
    shared = set(ExecutionOptions.model_fields)
    for model in (FinetuneConfig, PredictConfig, *(method(m).Settings for m in METHODS)):
        assert issubclass(model, ExecutionOptions) and shared <= set(model.model_fields)
    assert issubclass(FinetuneConfig, TrainingOptions) and issubclass(method("mae").Settings, TrainingOptions)
    run = FinetuneConfig(model="mae", manifest="m", out="o", cpu=True, procs=2, workers=3, use_cache=False)
    assert PredictConfig(run="o", manifest="m", out="p.parquet", **run.execution()).procs == 2


def test_pre_training_methods_are_a_registry_of_types():
    from pydantic import TypeAdapter

    for name in METHODS:
        m = method(name)
        assert (
            name == m.NAME
            and m.VIEWS in (1, 2)
            and m.POOLING in ("avg", "token")
            and m.MODEL.startswith("medical-")
        )
        assert (
            callable(m.build)
            and callable(m.loss)
            and callable(m.prepare)
            and issubclass(m.Settings, PretrainConfig)
        )
    union = TypeAdapter(settings_union())
    assert type(
        union.validate_python({"method": "mocov3", "manifests": ["m"], "out": "o"})
    ).__module__.endswith("mocov3")
    assert pretrain_config(method="mae", manifests=["m"], out="o").mask_ratio == 0.75
    with pytest.raises(TypeError, match="use pretrain_config"):
        PretrainConfig(method="mae", manifests=["m"], out="o")
    with pytest.raises(Exception, match="unknown --method 'byol'"):
        pretrain_config(method="byol", manifests=["m"], out="o")


def test_dataset_kinds_are_one_registry_with_consistent_defaults():
    assert ChexpertData(root="r", demographics="d").split == "random"  # as `fairscan prepare chexpert`
    from fairscan.config import load_preset

    assert load_preset("mae").datasets["chexpert"].split == "published"  # the paper's presets say so
    spec = load_preset("pretrain-mae-cxpt-30pct").datasets["pool-cxpt-30pct"]
    assert set(spec.needs()) == {"chexpert"} and "--fraction 0.3" in spec.command(Path("data/pool"), Path("data"))
    fractions = (
        load_preset("mae", ["datasets.chexpert.fractions=[0.7, 0.1, 0.2]"]).datasets["chexpert"].fractions
    )
    assert fractions == (0.7, 0.1, 0.2)  # presets can set what the command line can


# -------------------------------------------------------------------------------------------------- old keys


@pytest.fixture
def user_presets(tmp_path, monkeypatch):
    monkeypatch.setenv("FAIRSCAN_PRESETS", str(tmp_path))
    return tmp_path


def test_old_keys_still_work_with_a_deprecation_warning_naming_where_they_are(user_presets):
    from fairscan.config import load_preset

    (user_presets / "mine.yaml").write_text("extends: mae\nfinetune:\n  trackers: [tensorboard]\n")
    with pytest.warns(FairscanDeprecation, match=r"mine.yaml: finetune.trackers is now called log_with"):
        assert load_preset("mine").finetune.log_with == ["tensorboard"]
    with pytest.warns(FairscanDeprecation, match=r"--set: finetune.trackers is now called log_with"):
        assert load_preset("mae", ["finetune.trackers=[wandb]"]).finetune.log_with == ["wandb"]
    (user_presets / "pre.yaml").write_text("extends: pretrain-mae-cx14\npretrain:\n  mlp_dim: 64\n")
    with pytest.warns(
        FairscanDeprecation, match=r"pre.yaml: pretrain.mlp_dim applies to method mocov3, not mae"
    ):
        assert not hasattr(load_preset("pre").pretrain, "mlp_dim")


def test_the_command_line_shows_a_deprecation_as_a_warning(user_presets):
    import os
    import subprocess
    import sys

    (user_presets / "mine.yaml").write_text("extends: mae\nfinetune:\n  trackers: []\n")
    env = {**os.environ, "FAIRSCAN_PRESETS": str(user_presets)}
    done = subprocess.run([sys.executable, "-m", "fairscan", "presets", "show", "mine", "--no-plan"], env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    err = " ".join(done.stderr.split())
    assert done.returncode == 0 and "warning: " in err and "finetune.trackers is now called log_with" in err
    assert "log_with: []" in done.stdout and "Traceback" not in err


def test_a_typed_option_of_another_method_is_an_error(run_cli, tmp_path):
    code, _, err = run_cli(
        "pretrain", "--method", "mae", "--temperature", "0.1", "--manifest", "m", "--out", tmp_path
    )
    assert code == 2 and "--temperature applies to MoCo v3 only, not to --method mae" in " ".join(err.split())


def test_union_types_are_what_the_cli_parses():
    """The option types follow the annotations (a guard for new fields of unusual types)."""
    for model in MODELS:
        for name, field in model.model_fields.items():
            bare, _ = bare_type(field.annotation)
            origin = typing.get_origin(bare)
            assert bare in (bool, int, float, str) or origin in (list, tuple, typing.Literal), (
                model,
                name,
                bare,
            )

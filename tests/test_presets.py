"""Presets: every paper experiment validates with its quick variant; the paper's numbers; overrides and their errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from fairscan.config import (
    ERR_BAD_SET,
    ERR_UNKNOWN_PRESET,
    load_preset,
    parse_overrides,
    preset_dirs,
    preset_names,
    preset_settings,
    stage_values,
)
from fairscan.errors import InputError

ALL = preset_names()

# METHOD section 6 (AUC / FG sex / FG race, AUC points): the numbers each preset must carry.
PAPER = {
    "mae-cx14": (79.97, 1.58, 3.09),
    "mae-cxpt": (80.98, 1.49, 2.85),
    "mae-cx14-cxpt": (81.38, 1.29, 2.82),
    "ensemble-vit-masked": (81.0, 1.21, 2.82),
    "ensemble-vit-contrastive": (80.3, 1.13, 2.90),
    "ensemble-resnet": (81.6, 1.15, 2.95),
    "ensemble-natural": (80.4, 0.78, 2.94),
    "ensemble-medical": (81.6, 1.39, 3.12),
    "ensemble-all": (81.4, 1.12, 2.84),
    "mae-cx14-200ep": (79.2, 1.54, 3.56),
    "mae-cx14-400ep": (79.9, 1.44, 3.11),
    "mae-cx14-800ep": (79.9, 1.43, 3.03),
    "mae-cxpt-30pct": (80.6, 1.53, 2.86),
    "mae-cxpt-100pct": (81.0, 1.49, 2.85),
    "lp-mocov3": (71.9, 1.56, 3.66),
    "mocov3": (78.7, 1.08, 3.00),
    "lp-mae": (66.7, 2.59, 3.00),
    "mae": (79.3, 0.92, 2.77),
}

# METHOD section 5b, Table 3.
MEMBERS = {
    "ensemble-vit-masked": ["mae", "medical-mae"],
    "ensemble-vit-contrastive": ["mocov3", "medical-mocov3"],
    "ensemble-resnet": ["bit", "remedis"],
    "ensemble-natural": ["mae", "mocov3", "bit"],
    "ensemble-medical": ["medical-mae", "medical-mocov3", "remedis"],
    "ensemble-all": ["mae", "medical-mae", "mocov3", "medical-mocov3", "bit", "remedis"],
}

# The paper, complete: every experiment the issue lists has a preset.
REQUIRED = [
    *("mae", "medical-mae", "mocov3", "medical-mocov3", "bit", "remedis", "vit-scratch", "resnet-scratch"),
    *("pretrain-medical-mae", "pretrain-medical-mocov3"),
    *("mae-cx14", "mae-cxpt", "mae-cx14-cxpt", "mae-cx14-200ep", "mae-cx14-400ep", "mae-cx14-800ep"),
    *("mae-cxpt-30pct", "mae-cxpt-100pct", "lp-mae", "lp-mocov3", *MEMBERS),
    *(f"balanced-{m}" for m in ("mae", "medical-mae", "mocov3", "medical-mocov3", "vit-scratch")),
    *("audit-paper", "audit-fig5", "audit-fig6"),
    *(
        "figure1",
        "figure2",
        "figure3",
        "figure4",
        "figure5",
        "figure6",
        "table2",
        "table3",
        "table4",
        "table5",
    ),
    *("table6", "demo"),
]


def test_the_paper_is_complete():
    missing = [n for n in REQUIRED if n not in ALL]
    assert not missing


@pytest.mark.parametrize("name", ALL)
def test_every_preset_and_its_quick_variant_validate(name):
    preset = load_preset(name)
    quick = load_preset(f"{name}:quick")
    assert preset.title and preset.reproduces
    assert quick.quick and quick.name == name
    if preset.stage == "finetune":
        cfg = quick.finetune
        assert cfg.epochs <= 6 and cfg.image_size <= 64 and cfg.cpu
        assert Path(cfg.manifest).parent == Path(quick.paths.data)
        # no weights can be downloaded: either an explicit random init or a fairscan pre-training run
        assert cfg.init == "random" or (quick.pretrained_from and cfg.weights == load_preset(
            f"{quick.pretrained_from}:quick").pretrain.out)  # fmt: skip
        assert quick.datasets[Path(cfg.manifest).name].kind in ("synthetic", "balance")
        cfg.resolve()  # the recipe resolves: the quick architecture fits the model's family
    if preset.stage == "pretrain":
        assert quick.pretrain.epochs <= 4 and quick.pretrain.cpu
        quick.pretrain.resolve()


@pytest.mark.parametrize("name", ALL)
def test_header_names_command_runtime_and_result(name):
    preset = load_preset(name)
    header = preset.header
    for field in ("Command:", "Runtime:", "Paper:", "Quick:"):
        assert field in header, f"{name}: header lacks {field}"
    assert name in header.split("Command:")[1].split("Runtime:")[0]
    assert preset.expected is not None and preset.expected.unit == "AUC points"


@pytest.mark.parametrize("name", sorted(PAPER))
def test_expected_blocks_carry_the_papers_numbers(name):
    e = load_preset(name).expected
    assert (e.mean_auc, e.gap_sex, e.gap_race) == PAPER[name]
    header = load_preset(name).header
    for value in PAPER[name]:  # the header says the same
        assert f"{value:.2f}".rstrip("0").rstrip(".") in header or f"{value}" in header


@pytest.mark.parametrize("name", sorted(MEMBERS))
def test_table3_members_as_method_5b(name):
    assert load_preset(name).ensemble.members == MEMBERS[name]


def test_method_5b_assumptions_are_visible():
    def said(name: str, *words: str) -> bool:
        text = " ".join(load_preset(name).assumptions).lower()
        return all(w.lower() in text for w in words)

    assert said("ensemble-resnet", "ResNet (Contrastive)", "BiT + REMEDIS")
    assert said("mae-cx14-200ep", "ChestX-ray14", "separate pre-training runs")
    assert said("mae-cxpt-30pct", "30%")
    assert said("vit-scratch", "200 epochs", "layer-wise lr decay off")
    assert said("resnet-scratch", "30 epochs", "layer-wise lr decay off")
    assert said("mae", "global average pooling") and said("mocov3", "class token")
    assert said("pretrain-medical-mae", "0.90")
    assert said("audit-paper", "without replacement")
    assert load_preset("pretrain-medical-mae").pretrain.mask_ratio == 0.90
    assert load_preset("pretrain-mae-cx14").pretrain.mask_ratio == 0.75
    assert load_preset("vit-scratch").finetune.resolve().layer_decay == 1.0  # off for scratch baselines
    assert load_preset("vit-scratch").finetune.epochs == load_preset("mae").finetune.epochs == 200
    assert load_preset("resnet-scratch").finetune.epochs == load_preset("bit").finetune.epochs == 30
    assert (
        load_preset("mocov3").finetune.pooling == "token"
        and load_preset("medical-mae").finetune.pooling == "avg"
    )
    # the single fine-tuning seed, and the recipe of METHOD 4 (fairscan.train.finetune.recipe, written once)
    ft = load_preset("medical-mae").finetune.resolve()
    assert (ft.seed, ft.epochs, ft.batch_size, ft.blr, ft.layer_decay, ft.drop_path) == (
        0,
        100,
        128,
        2.5e-4,
        0.55,
        0.2,
    )
    assert tuple(ft.betas) == (0.9, 0.95) and ft.randaug == "rand-m6-mstd0.5-inc1"
    probe = load_preset("lp-mae").finetune.resolve()
    assert (probe.optimizer, probe.blr, probe.batch_size, probe.epochs, probe.weight_decay) == ("lars", 0.1, 512, 90, 0)
    assert "one fine-tuning seed" in Path(load_preset("mae").file).with_name("_finetune.yaml").read_text()


def test_pretraining_chain_and_shared_runs():
    table4 = load_preset("mae-cx14-800ep")
    assert table4.pretrained_from == "pretrain-mae-cx14" == load_preset("mae-cx14").pretrained_from
    assert table4.finetune.weights == "runs/pretrain-mae-cx14"
    assert load_preset("pretrain-mae-cx14-200ep").pretrain.epochs == 200
    assert load_preset("mae-cxpt-100pct").finetune.out == load_preset("mae-cxpt").finetune.out
    pool = load_preset("pretrain-mae-cxpt-30pct").datasets["pool-cxpt-30pct"]
    assert pool.fraction == 0.3 and pool.sources == ["chexpert"] and pool.splits == ["train"]
    assert load_preset("balanced-mae").finetune.manifest == "data/chexpert-balanced"
    assert load_preset("lp-mae").finetune.linear_probe is True


def test_audit_settings_of_the_paper():
    a = load_preset("audit-paper").audit
    assert (
        a.attrs == ["sex", "race"]
        and a.balanced_test
        and a.intervals == "bootstrap"
        and a.resample == "patient"
    )
    fig5 = load_preset("audit-fig5").audit
    assert fig5.attrs == ["sex"] and fig5.labels == ["atelectasis", "cardiomegaly", "consolidation", "edema",
                                                     "pleural_effusion"]  # fmt: skip
    assert load_preset("figure6").audit.attrs == ["race"]


# ---------------------------------------------------------------------------------------------- overrides


def test_set_overrides_are_typed():
    p = load_preset(
        "mae", ["finetune.epochs=3", "audit.attrs=[sex]", "finetune.blr=1e-3", "paths.runs=/tmp/r"]
    )
    assert p.finetune.epochs == 3 and p.audit.attrs == ["sex"] and p.finetune.blr == 1e-3
    assert p.finetune.out == "/tmp/r/mae"  # ${runs} follows the override
    assert parse_overrides(["a.b=null", "c=x=y"]) == [("a.b", None), ("c", "x=y")]


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["finetune.epoch=3"], "--set: unknown key finetune.epoch"),
        (["finetune.epochs=abc"], "--set: finetune.epochs: Input should be a valid integer"),
        (["finetune.epochs=0"], "--set: finetune.epochs: Input should be greater than or equal to 1"),
        (["audit.n_boot=x"], "--set: audit.n_boot"),
        (["bogus=1"], "--set: unknown key bogus"),
        (["datasets.chexpert.split=3"], "--set: datasets.chexpert.split: Input should be a valid string"),
        (["pretrain.epochs=3"], "--set: pretrain: a finetune preset has no pretrain settings"),
        (["finetune.manifest=${nope}/x"], "unknown variable ${nope}"),
    ],
)
def test_set_errors_name_the_key(sets, message):
    with pytest.raises(InputError) as exc:
        load_preset("mae", sets)
    assert message in exc.value.message


def test_bad_set_syntax():
    with pytest.raises(InputError) as exc:
        load_preset("mae", ["finetune"])
    assert exc.value.message == ERR_BAD_SET.format(text="finetune")


@pytest.fixture
def user_presets(tmp_path, monkeypatch):
    """A folder of user presets searched before the packaged ones."""
    monkeypatch.setenv("FAIRSCAN_PRESETS", str(tmp_path))
    return tmp_path


def test_errors_in_a_file_name_the_file_and_key(user_presets):
    (user_presets / "my-run.yaml").write_text("extends: mae\nfinetune:\n  epochz: 3\n")
    with pytest.raises(InputError) as exc:
        load_preset("my-run")
    assert exc.value.message.endswith("my-run.yaml: unknown key finetune.epochz")
    assert "epochs" in exc.value.hint
    (user_presets / "my-run.yaml").write_text("extends: mae\nfinetune:\n  batch_size: many\n")
    with pytest.raises(InputError) as exc:
        load_preset("my-run")
    assert "my-run.yaml: finetune.batch_size: Input should be a valid integer" in exc.value.message
    # a bad key inherited from a parent file names the parent
    (user_presets / "base.yaml").write_text("extends: mae\naudit:\n  n_bootz: 5\n")
    (user_presets / "child.yaml").write_text("extends: base\ntitle: child\n")
    with pytest.raises(InputError) as exc:
        load_preset("child")
    assert "base.yaml: unknown key audit.n_bootz" in exc.value.message


def test_a_user_preset_extends_the_paper(user_presets):
    (user_presets / "mine.yaml").write_text(
        "extends: mae-cx14\ntitle: mine\nreproduces: my variant\nfinetune:\n  epochs: 5\n"
        "assumptions:\n  - my own\n"
    )
    p = load_preset("mine")
    assert (
        p.finetune.epochs == 5 and p.finetune.out == "runs/mine" and p.pretrained_from == "pretrain-mae-cx14"
    )
    assert p.assumptions[-1] == "my own" and len(p.assumptions) > 1  # assumptions accumulate
    assert p.expected.mean_auc == 79.97
    by_path = load_preset(str(user_presets / "mine.yaml"))
    assert by_path.finetune.epochs == 5


def test_yaml_cycles_and_variants(user_presets):
    (user_presets / "a.yaml").write_text("extends: b\n")
    (user_presets / "b.yaml").write_text("extends: a\n")
    with pytest.raises(InputError, match="cycle"):
        load_preset("a")
    (user_presets / "broken.yaml").write_text("finetune: [a, {\n")
    with pytest.raises(InputError, match=r"broken.yaml: not valid YAML: line \d"):
        load_preset("broken")
    with pytest.raises(InputError, match="unknown variant 'slow'"):
        load_preset("mae:slow")
    with pytest.raises(InputError) as exc:
        load_preset("mea")
    assert exc.value.message == ERR_UNKNOWN_PRESET.format(name="mea") and "mae" in exc.value.hint
    with pytest.raises(InputError, match="base preset"):
        load_preset("_finetune")


def test_stage_settings_for_the_commands():
    ft = preset_settings("mae-cx14", "finetune", ["finetune.epochs=2"])
    assert type(ft).__name__ == "FinetuneConfig" and ft.epochs == 2 and ft.weights == "runs/pretrain-mae-cx14"
    values = stage_values("mae-cx14", "finetune")
    assert values["model"] == "medical-mae" and "linear_probe" not in values  # only what the preset sets
    assert preset_settings("pretrain-medical-mocov3", "pretrain").method == "mocov3"
    assert preset_settings("audit-fig6", "audit").attrs == ["race"]
    assert preset_settings("mae", "audit").balanced_test  # a finetune preset's audit settings
    with pytest.raises(InputError, match="is a pretrain preset"):
        preset_settings("pretrain-mae-cx14", "finetune")


def test_presets_ship_in_the_wheel():
    text = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    assert '"presets" = "fairscan/presets"' in text
    assert any((d / "mae.yaml").exists() for d in preset_dirs())


# -------------------------------------------------------------------------------------------------- CLI


def test_cli_presets_list(run_cli):
    code, out, err = run_cli("presets", "list", "--json")
    assert code == 0, err
    rows = json.loads(out)
    assert {r["name"] for r in rows} == set(ALL)
    assert {r["stage"] for r in rows} == {"study", "pretrain", "finetune", "ensemble", "audit"}
    code, out, _ = run_cli("presets", "list", "--stage", "study")
    assert code == 0 and "table2" in out and "mae-cx14 " not in out
    code, _, err = run_cli("presets", "list", "--stage", "nope")
    assert code == 2 and "unknown stage" in err


def test_cli_presets_show_is_fully_resolved(run_cli):
    code, out, err = run_cli("presets", "show", "mae-cx14:quick", "--set", "finetune.epochs=2")
    assert code == 0, err
    assert "# Command:" in out and "79.97" in out
    assert "epochs: 2" in out and "weights: runs/quick/pretrain-mae-cx14" in out
    assert "lr: 3.125e-05" in out  # recipe defaults resolved: 2.5e-4 x 32 / 256
    steps = out.split("runs, in order")[1]
    assert steps.index("prepare synthetic --layout nih") < steps.index(
        "pretrain --preset pretrain-mae-cx14:quick"
    )
    assert steps.index("pretrain --preset") < steps.index("finetune --preset mae-cx14:quick")


def test_cli_presets_show_errors(run_cli):
    code, _, err = run_cli("presets", "show", "mae", "--set", "finetune.epoch=3", "--no-plan")
    assert code == 2 and "unknown key finetune.epoch" in err and "hint" in err
    code, _, err = run_cli("presets", "show", "nope")
    assert code == 2 and "unknown preset 'nope'" in err


def test_yaml_files_use_block_lists_for_paths():
    """`[${data}/x]` is a YAML flow mapping in disguise; every file must load (caught above) and stay readable."""
    for d in preset_dirs():
        for f in d.glob("*.yaml"):
            assert not re.search(r"\[\$\{", f.read_text()), f

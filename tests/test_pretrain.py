"""`fairscan pretrain`: settings, data, the run folder, checkpoint selection, resume, fine-tuning from it, and
a 2-process MoCo v3 run with gathered negatives. Tiny ViT, 32-px synthetic chest X-rays, one torch thread."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from fairscan.errors import InputError
from fairscan.train import pretrain as P
from fairscan.train import pretrain_data as D
from fairscan.train.objectives.mocov3 import NO_ACCUMULATION
from tests._descent import descends

TINY = dict(arch="vit_tiny_patch16_224", image_size=32, batch_size=8, cpu=True, workers=0, log_every=1)
MOCO_SMALL = dict(mlp_dim=64, proj_dim=32)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Two shared cores: one torch thread per process is several times faster than two fighting."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def pool(tmp_path_factory) -> Path:
    from fairscan.data.synthetic import prepare_synthetic_manifest

    root = tmp_path_factory.mktemp("pretrain") / "cx"
    prepare_synthetic_manifest(root, layout="chexpert", patients=10, image_size=32, seed=0)
    return root  # 20 images, 32 px, CheXpert layout with a seeded train/validate/test split


def _cfg(method: str, pool: Path, out: Path, **kw) -> P.PretrainConfig:
    return P.pretrain_config(method=method, manifests=[str(pool)], out=str(out), **{**TINY, **kw})


def _records(out: Path, kind: str) -> list[dict]:
    return [r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if r["kind"] == kind]


MAE_RUN = dict(epochs=3, lr=1e-3, save_every=1, snapshots=[2])


@pytest.fixture(scope="module")
def mae_run(pool, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("runs") / "mae"
    stage = P.pretrain(_cfg("mae", pool, out, **MAE_RUN))
    return out, stage


@pytest.fixture(scope="module")
def moco_run(pool, tmp_path_factory) -> tuple[Path, dict]:
    """Weak augmentation and a low momentum make instance discrimination learnable in 20 steps."""
    out = tmp_path_factory.mktemp("runs") / "moco"
    cfg = _cfg(
        "mocov3", pool, out, epochs=10, lr=1e-3, momentum=0.9, warmup_epochs=1, save_every=0,
        crop_scale=(0.8, 1.0), rotation=0.0, hflip=0.0, **MOCO_SMALL,
    )  # fmt: skip
    return out, P.pretrain(cfg)


# ------------------------------------------------------------------------------------------- settings


def test_recipe_defaults_follow_the_official_configurations():
    mae = P.pretrain_config(method="mae", manifests=["m"], out="o").resolve()
    assert (mae.batch_size, mae.accum, mae.per_process_batch) == (4096, 64, 64)
    assert mae.lr == pytest.approx(1.5e-4 * 4096 / 256)
    assert (mae.weight_decay, mae.warmup_epochs, mae.epochs, mae.betas) == (0.05, 40.0, 800, (0.9, 0.95))
    assert mae.mask_ratio == 0.75 and mae.select_from_epoch == 760  # epochs 761..800 are the final 5%
    moco = P.pretrain_config(method="mocov3", manifests=["m"], out="o", procs=8, batch_size=1024).resolve()
    assert (moco.accum, moco.per_process_batch, moco.weight_decay) == (1, 128, 0.1)
    assert moco.lr == pytest.approx(1.5e-4 * 1024 / 256)
    assert (moco.temperature, moco.momentum, moco.mlp_dim, moco.proj_dim) == (0.2, 0.99, 4096, 256)


@pytest.mark.parametrize(
    ("batch", "procs", "accum"), [(4096, 1, 64), (4096, 8, 8), (4096, 64, 1), (96, 1, 2), (8, 1, 1)]
)
def test_mae_accumulates_up_to_the_effective_batch(batch, procs, accum):
    assert P.auto_accum(batch, procs) == accum
    assert (batch // (procs * accum)) <= P.MAX_MICRO_BATCH


@pytest.mark.parametrize(
    ("epochs", "first"), [(800, 761), (400, 381), (200, 191), (21, 20), (20, 20), (3, 3), (1, 1)]
)
def test_selection_window_is_the_final_five_percent(epochs, first):
    cfg = P.pretrain_config(method="mae", manifests=["m"], out="o", epochs=epochs)
    assert cfg.select_from_epoch + 1 == first


def test_short_runs_warm_up_for_at_most_half_the_run():
    cfg = P.pretrain_config(method="mae", manifests=["m"], out="o", epochs=10, batch_size=8).resolve()
    assert cfg.warmup_epochs == 5.0


def test_mocov3_refuses_gradient_accumulation_and_says_why():
    with pytest.raises(InputError) as err:
        P.pretrain_config(method="mocov3", manifests=["m"], out="o", accum=4).resolve()
    assert err.value.message == NO_ACCUMULATION
    assert "would not add negatives" in err.value.message and "--gpus" in err.value.hint


@pytest.mark.parametrize("epoch", [0, 801, 1000])
def test_snapshot_beyond_the_schedule_is_an_input_error(epoch):
    with pytest.raises(InputError, match=f"epoch snapshot {epoch} is outside the schedule of 800"):
        P.pretrain_config(method="mae", manifests=["m"], out="o", snapshots=[400, epoch]).resolve()


# ------------------------------------------------------------------------------------------------ data


def test_augmentation_makes_two_independent_views_reproducibly(pool):
    from fairscan.data.dataset import seeded

    cfg = _cfg("mocov3", pool, pool.parent / "unused").resolve()
    frames, _, _ = P.load_pool(cfg)
    ds = P.build_pool_dataset(cfg, frames)
    item = ds[(3, 5)]
    assert item["image"].shape == (2, 1, 32, 32) and item["image"].dtype == torch.uint8 and item["epoch"] == 3 and item["index"] == 5
    assert not torch.equal(item["image"][0], item["image"][1])
    assert torch.equal(ds[(3, 5)]["image"], item["image"])  # seeded by (seed, epoch, index)
    assert not torch.equal(ds[(4, 5)]["image"], item["image"])
    from PIL import Image

    aug = D.PretrainAugment(32, rotation=7.0)
    img = Image.new("L", (40, 40), 128)
    with seeded(0):
        assert aug(img).shape == (1, 32, 32)


def test_several_manifests_make_one_pool_and_leakage_is_warned(pool, tmp_path):
    from fairscan.data.synthetic import prepare_synthetic_manifest

    nih = tmp_path / "nih"
    prepare_synthetic_manifest(nih, layout="nih", patients=10, image_size=32, seed=1)
    cfg = P.pretrain_config(
        method="mae", manifests=[str(pool), str(nih)], out=str(tmp_path / "o"), **TINY
    ).resolve()
    frames, warnings, leakage = P.load_pool(cfg)
    ds = P.build_pool_dataset(cfg, frames)
    assert len(ds) == sum(len(df) for _, df in frames) == len(ds.image_ids)
    assert ds[(0, len(ds) - 1)]["image"].shape == (1, 32, 32)  # the last row comes from the second manifest
    assert {r["dataset"] for r in leakage} == {"chexpert", "nih"}  # both have held-out patients
    assert all(w.startswith("leakage: ") and "validate/test" in w for w in warnings)
    train_only = cfg.model_copy(update={"splits": ["train"]})
    assert P.load_pool(train_only)[1] == []


def test_a_pool_brings_its_leakage_and_is_checked_against_evaluation_manifests(pool, tmp_path):
    from fairscan.data.cohorts import make_pool
    from fairscan.data.manifest import write_prepared

    write_prepared(make_pool([pool], splits=["train"]), tmp_path / "pool")  # no leakage of its own
    cfg = P.pretrain_config(
        method="mae", manifests=[str(tmp_path / "pool")], out="o", evaluation=[str(pool)]
    ).resolve()
    assert P.load_pool(cfg)[1] == []  # train patients only: nothing held out is pre-trained on
    write_prepared(make_pool([pool]), tmp_path / "leaky")  # every split of the CheXpert manifest
    cfg = cfg.model_copy(update={"manifests": [str(tmp_path / "leaky")]})
    _, warnings, leakage = P.load_pool(cfg)
    assert warnings and leakage[0]["patients"] > 0


def test_a_pool_with_an_image_cache_reads_it(pool, tmp_path):
    from fairscan.data.cache import build_cache
    from fairscan.data.cohorts import make_pool
    from fairscan.data.images import load_resized
    from fairscan.data.manifest import write_prepared

    write_prepared(make_pool([pool], splits=["train"]), tmp_path / "pool")
    build_cache(tmp_path / "pool", size=40, workers=1, verify=2)
    cfg = P.pretrain_config(method="mae", manifests=[str(tmp_path / "pool")], out="o", **TINY).resolve()
    frames, _, _ = P.load_pool(cfg)
    (part,) = P.build_pool_dataset(cfg, frames).parts
    assert part.cache is not None and part.decode_size == 40
    assert (part.pixels(3) == load_resized(frames[0][1]["path"][3], 40)).all()
    no_cache = P.build_pool_dataset(cfg.model_copy(update={"use_cache": False}), frames).parts[0]
    assert no_cache.cache is None


def test_empty_pool_is_an_input_error(pool, tmp_path, run_cli):
    from fairscan.io import write_table
    from fairscan.schema import read_manifest

    write_table(read_manifest(pool).iloc[:0], tmp_path / "empty" / "manifest.parquet")
    code, _, err = run_cli(
        "pretrain", "--method", "mae", "--manifest", tmp_path / "empty", "--out", tmp_path / "o"
    )
    assert code == 2 and "no images to pre-train on (the manifest is empty)" in err


# --------------------------------------------------------------------------------------------- the CLI


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--method", "mae", "--mask-ratio", "1.0"], "--mask-ratio: Input should be less than 1 (got 1.0)"),
        (["--method", "mae", "--mask-ratio", "0"], "--mask-ratio: Input should be greater than 0 (got 0.0)"),
        (
            ["--method", "mae", "--epochs", "3", "--snapshots", "2,5"],
            "epoch snapshot 5 is outside the schedule of 3",
        ),
        (["--method", "mocov3", "--accum", "2"], "MoCo v3 does not take gradient accumulation"),
        (["--method", "byol"], "unknown --method 'byol'"),
        (
            ["--method", "mocov3", "--mask-ratio", "0.9"],
            "--mask-ratio applies to MAE only, not to --method mocov3",
        ),
        (["--method", "mae", "--mlp-dim", "256"], "--mlp-dim applies to MoCo v3 only, not to --method mae"),
        (["--method", "mae", "--gpus", "2", "--cpu"], "--gpus and --cpu exclude each other"),
    ],
)
def test_bad_options_are_usage_errors(pool, tmp_path, run_cli, args, message):
    code, _, err = run_cli("pretrain", "--manifest", pool, "--out", tmp_path / "o", *args)
    assert code == 2, err
    assert message in " ".join(err.split())


def test_a_preset_fills_the_settings_and_set_needs_one(tmp_path, run_cli):
    code, _, err = run_cli(
        "pretrain", "--preset", "demo-pretrain:quick", "--set", f"paths.data={tmp_path}/none"
    )
    assert code == 2 and f"{tmp_path}/none/chexpert: no such file" in " ".join(err.split())
    code, _, err = run_cli(
        "pretrain", "--method", "mae", "--out", tmp_path / "o", "--set", "pretrain.epochs=3"
    )
    assert code == 2 and "--set overrides a preset's keys" in err


def test_help_shows_examples(run_cli):
    code, out, _ = run_cli("pretrain", "--help")
    text = " ".join(out.split())
    assert code == 0 and "--method" in text and "Table 4" in text and "--snapshots" in text


# ----------------------------------------------------------------------------------------------- MAE run


def test_mae_loss_falls_along_its_gradient():
    from fairscan.train.objectives.mae import build_mae

    torch.manual_seed(0)
    model = build_mae("vit_tiny_patch16_224", img_size=32, decoder_dim=32, decoder_depth=1, decoder_heads=2)
    imgs = torch.rand(4, 3, 32, 32)
    before, after = descends(model, lambda: model(imgs, generator=torch.Generator().manual_seed(1)))
    assert after < before


def test_mocov3_loss_falls_along_its_gradient():
    from fairscan.train.objectives.mocov3 import build_mocov3

    torch.manual_seed(0)
    model = build_mocov3("vit_tiny_patch16_224", img_size=32, **{"dim": 32, "mlp_dim": 64}).eval()
    views = torch.rand(4, 2, 3, 32, 32)
    before, after = descends(model, lambda: model(views))
    assert after < before


def test_mae_run_logs_a_finite_loss_per_epoch_and_trains_the_encoder(mae_run):
    from safetensors.torch import load_file

    out, stage = mae_run
    losses = stage["result"]["epoch_losses"]
    assert len(losses) == 3 and all(math.isfinite(x) for x in losses), losses
    assert stage["result"]["selected_epoch"] == 3  # the final 5% of 3 epochs is the last one
    after_two = load_file(out / P.SNAPSHOTS / "epoch-0002" / "model.safetensors")
    after_three = load_file(out / "model.safetensors")
    assert after_two.keys() == after_three.keys()
    assert any(not torch.equal(after_two[k], after_three[k]) for k in after_two)  # epoch 3 moved the weights


def test_mae_run_folder_holds_the_encoder_in_timm_layout(mae_run):
    import timm
    from safetensors.torch import load_file

    out, stage = mae_run
    info = json.loads((out / "model.json").read_text())
    assert info["model"] == "medical-mae" and info["pooling"] == "avg" and info["labels"] == []
    assert info["arch"] == "vit_tiny_patch16_224" and info["image_size"] == 32
    state = load_file(out / "model.safetensors")
    assert not any(k.startswith(("decoder", "mask_token", "encoder.")) for k in state)
    timm.create_model("vit_tiny_patch16_224", num_classes=0, img_size=32).load_state_dict(state, strict=True)
    assert stage["status"] == "complete" and stage["stage"] == "pretrain"
    assert stage["batch"] == {"effective": 8, "per_process": 8, "accum": 1}
    assert stage["outputs"]["model"]["sha256"]


def test_selection_picks_the_lowest_loss_in_the_final_five_percent(mae_run):
    out, stage = mae_run
    epochs = _records(out, "epoch")
    window = [r for r in epochs if r["epoch"] + 1 >= stage["selection"]["from_epoch"]]
    best = min(window, key=lambda r: r["train_loss"])
    assert stage["result"]["selected_epoch"] == best["epoch"] + 1
    assert stage["result"]["selected_loss"] == pytest.approx(best["train_loss"])
    assert all(r["best"] is None for r in epochs if r["epoch"] + 1 < stage["selection"]["from_epoch"])


def test_snapshot_is_a_run_folder_of_its_own(mae_run):
    from safetensors.torch import load_file

    out, stage = mae_run
    snap = out / "snapshots" / "epoch-0002"
    assert json.loads((snap / "model.json").read_text())["model"] == "medical-mae"
    a, b = load_file(snap / "model.safetensors"), load_file(out / "model.safetensors")
    assert a.keys() == b.keys() and not torch.equal(
        a["blocks.0.attn.qkv.weight"], b["blocks.0.attn.qkv.weight"]
    )
    assert "snapshot_epoch-0002" in stage["outputs"] and "Table 4" in stage["snapshots"]["note"]


@pytest.mark.parametrize("method", ["mae", "mocov3"])
def test_pretrain_output_fine_tunes_without_key_errors(method, mae_run, moco_run):
    """What `fairscan finetune --model medical-mae|medical-mocov3 --weights RUN` does before training."""
    from fairscan.models import build_model, get_spec, load_encoder, resolve_checkpoint

    out = (mae_run if method == "mae" else moco_run)[0]
    from fairscan.train.objectives import method as the_method

    spec = get_spec(the_method(method).MODEL)
    ckpt = resolve_checkpoint(spec, weights=str(out), init="pretrained")
    assert ckpt.format == "fairscan" and ckpt.info.mean == list(P.IMAGENET_MEAN)
    model = build_model("vit_tiny_patch16_224", num_classes=14, pooling=spec.pooling, image_size=32)
    report = load_encoder(model, ckpt, arch="vit_tiny_patch16_224")
    expected_new = {"head.bias", "head.weight"} | (
        {"fc_norm.bias", "fc_norm.weight"} if method == "mae" else set()
    )
    assert set(report.initialised) == expected_new
    dropped = 2 if method == "mae" else 0  # MAE fine-tunes with fc_norm: the final norm's 2 tensors go
    assert report.loaded == len(ckpt.state_dict) - dropped


def test_a_run_is_never_overwritten(mae_run, pool, run_cli):
    out, _ = mae_run
    code, _, err = run_cli("pretrain", "--method", "mae", "--manifest", pool, "--out", out)
    assert code == 2 and "already holds a run (finished)" in err and "choose another --out" in err


class _Killed(Exception):
    pass


def test_resume_after_a_kill_ends_where_an_uninterrupted_run_does(mae_run, pool, tmp_path, monkeypatch):
    from safetensors.torch import load_file

    out = tmp_path / "mae"
    real = P.make_objective

    def dying(*args, **kwargs):  # the process dies during step 5 of 6 (epoch 3), after state of step 4
        objective = real(*args, **kwargs)
        calls, loss = [0], objective.loss

        def loss_then_die(model, batch):
            calls[0] += 1
            if calls[0] == 5:
                raise _Killed
            return loss(model, batch)

        objective.loss = loss_then_die
        return objective

    monkeypatch.setattr(P, "make_objective", dying)
    with pytest.raises(_Killed):
        P.pretrain(_cfg("mae", pool, out, **MAE_RUN))
    assert json.loads((out / "state" / "progress.json").read_text())["step"] == 4
    assert (out / "snapshots" / "epoch-0002" / "model.safetensors").exists()
    assert not (out / "model.safetensors").exists()  # epoch 3 (the selection window) never finished
    monkeypatch.setattr(P, "make_objective", real)
    stage = P.pretrain(_cfg("mae", pool, out, **MAE_RUN), resume=True)
    assert stage["result"]["resumed_from_step"] == 4 and stage["result"]["steps"] == 6
    ref, got = load_file(mae_run[0] / "model.safetensors"), load_file(out / "model.safetensors")
    assert ref.keys() == got.keys()
    for k in ref:
        assert torch.allclose(ref[k], got[k], atol=1e-6), k
    assert stage["result"]["epoch_losses"] == pytest.approx(mae_run[1]["result"]["epoch_losses"], abs=1e-5)


def test_non_finite_loss_is_a_clear_runtime_error(pool, tmp_path, monkeypatch, run_cli):
    from fairscan.train.objectives import mae

    monkeypatch.setattr(mae.MAE, "loss", lambda self, imgs, pred, mask: pred.float().sum() * float("nan"))
    code, _, err = run_cli(
        "pretrain", "--method", "mae", "--manifest", pool, "--out", tmp_path / "nan", "--arch", "vit_tiny_patch16_224",
        "--image-size", "32", "--batch-size", "8", "--epochs", "1", "--cpu", "--workers", "0",
    )  # fmt: skip
    assert code == 1
    assert "non-finite loss (nan) at step 1" in err and "batch image ids: train/patient" in " ".join(
        err.split()
    )


# -------------------------------------------------------------------------------------------- MoCo v3 run


def test_mocov3_run_logs_finite_losses_and_momentum_rises(moco_run):
    out, stage = moco_run
    losses = stage["result"]["epoch_losses"]
    assert len(losses) == 10 and all(math.isfinite(x) for x in losses), losses
    steps = _records(out, "train")
    momenta = [r["momentum"] for r in steps]
    assert momenta[0] == pytest.approx(0.9) and all(b > a for a, b in zip(momenta, momenta[1:]))
    assert momenta[-1] == pytest.approx(1 - 0.5 * (1 + math.cos(math.pi * 19 / 20)) * 0.1)
    assert {r["negatives"] for r in steps} == {8.0}  # one process: the keys of its own batch
    assert json.loads((out / "model.json").read_text())["pooling"] == "token"


def test_two_process_mocov3_gathers_negatives_across_processes(pool, tmp_path, run_cli):
    out = tmp_path / "moco2"
    code, stdout, err = run_cli(
        "pretrain", "--method", "mocov3", "--manifest", pool, "--out", out, "--arch", "vit_tiny_patch16_224",
        "--image-size", "32", "--batch-size", "8", "--mlp-dim", "64", "--epochs", "1", "--cpu", "--procs", "2",
        "--workers", "0", "--log-every", "1",
    )  # fmt: skip
    assert code == 0, err
    stage = json.loads((out / "stage.json").read_text())
    assert stage["processes"] == 2 and stage["batch"] == {"effective": 8, "per_process": 4, "accum": 1}
    steps = _records(out, "train")
    assert len(steps) == stage["steps_per_epoch"] == 2  # 20 images, 4 per process and step
    assert {r["negatives"] for r in steps} == {8.0}  # each query met the keys of both processes
    assert str(out / "model.safetensors") in stdout

"""The registry, building each entry, and loading each official checkpoint layout (and refusing wrong ones)."""

from __future__ import annotations

import json
import pickle

import pytest

from tests._finetune_fixtures import (
    RESNET,
    SIZE,
    VIT,
    mae_checkpoint,
    mocov3_checkpoint,
    vit_encoder,
)

torch = pytest.importorskip("torch")


pytestmark = pytest.mark.usefixtures("single_thread")


def _tiny(spec):
    return VIT if spec.family == "vit" else RESNET


@pytest.mark.parametrize(
    "name",
    ["mae", "medical-mae", "mocov3", "medical-mocov3", "bit", "remedis", "vit-scratch", "resnet-scratch"],
)
def test_every_registry_entry_builds_and_resolves(name):
    import timm

    from fairscan.models import build_model, get_spec
    from fairscan.train.finetune import FinetuneConfig

    spec = get_spec(name)
    assert timm.is_model(spec.arch)
    if spec.hub:
        assert spec.hub in timm.list_pretrained(spec.arch + "*")
    cfg = FinetuneConfig(model=name, manifest="m", out="o", arch=_tiny(spec), image_size=SIZE).resolve()
    assert (cfg.epochs, cfg.batch_size, cfg.pooling) == (spec.epochs, spec.batch_size, spec.pooling)
    assert cfg.lr == pytest.approx(2.5e-4 * spec.batch_size / 256)
    assert cfg.layer_decay == (1.0 if spec.scratch else 0.55)
    model = build_model(
        cfg.arch, num_classes=14, pooling=cfg.pooling, image_size=SIZE, drop_path=cfg.drop_path
    )
    assert model(torch.randn(2, 3, SIZE, SIZE)).shape == (2, 14)


def test_recipes_follow_the_paper():
    from fairscan.models import MODELS

    epochs = {n: s.epochs for n, s in MODELS.items()}
    assert epochs == {"mae": 200, "medical-mae": 100, "mocov3": 200, "medical-mocov3": 100, "bit": 30,
                      "remedis": 20, "vit-scratch": 200, "resnet-scratch": 30}  # fmt: skip
    assert {s.batch_size for s in MODELS.values() if s.family == "vit"} == {128}
    assert {s.batch_size for s in MODELS.values() if s.family == "resnet"} == {32}
    assert MODELS["mae"].pooling == MODELS["medical-mae"].pooling == "avg"
    assert MODELS["mocov3"].pooling == MODELS["medical-mocov3"].pooling == "token"
    assert MODELS["bit"].arch == MODELS["remedis"].arch == "resnetv2_152x2_bit"


def test_linear_probe_recipe():
    from fairscan.train.finetune import FinetuneConfig

    cfg = FinetuneConfig(model="mae", manifest="m", out="o", linear_probe=True).resolve()
    assert (cfg.optimizer, cfg.batch_size, cfg.epochs, cfg.weight_decay, cfg.pooling) == (
        "lars",
        512,
        90,
        0.0,
        "token",
    )
    assert cfg.lr == pytest.approx(0.1 * 512 / 256)


def test_models_list_prints_table_one(run_cli):
    code, out, _ = run_cli("models", "list")
    assert code == 0
    for text in (
        "mae",
        "medical-mocov3",
        "remedis",
        "resnet-scratch",
        "ViT-B/16",
        "supervised",
        "masked SSL",
    ):
        assert text in out
    code, out, _ = run_cli("models", "list", "--json")
    assert code == 0 and json.loads(out)["bit"]["hub"] == "resnetv2_152x2_bit.goog_in21k"


def test_unknown_model_lists_the_valid_ones(run_cli, tmp_path):
    code, _, err = run_cli("finetune", "--model", "dino", "--manifest", tmp_path, "--out", tmp_path / "r")
    assert code == 2
    assert "unknown model 'dino'" in err and "medical-mae" in err and "resnet-scratch" in err


# ------------------------------------------------------------------------------------- official layouts


def _target(pooling: str, image_size: int = SIZE):
    from fairscan.models import build_model

    return build_model(VIT, num_classes=14, pooling=pooling, image_size=image_size)


def _same(model, encoder, skip=("head.", "fc_norm.", "norm.", "pos_embed")):
    state = model.state_dict()
    for k, v in encoder.state_dict().items():
        if not k.startswith(skip):
            assert torch.equal(state[k], v), k


def test_mae_layout_loads_and_drops_the_decoder(tmp_path):
    from fairscan.models import load_encoder, read_checkpoint

    enc = vit_encoder()
    ckpt = read_checkpoint(mae_checkpoint(tmp_path / "mae_pretrain_vit_base.pth", enc))
    assert ckpt.format == "mae" and "mask_token" in ckpt.dropped
    assert any(k.startswith("decoder_") for k in ckpt.dropped)
    model = _target("avg")
    report = load_encoder(model, ckpt, arch=VIT)
    _same(model, enc, skip=("head.", "fc_norm.", "norm."))
    assert torch.equal(model.pos_embed, enc.pos_embed)
    # average pooling (MAE): fc_norm and head start fresh; the pre-training norm is not used
    assert report.initialised == ["fc_norm.bias", "fc_norm.weight", "head.bias", "head.weight"]
    assert "norm.weight" in report.dropped and len(report.sha256) == 64


def test_mae_layout_without_decoder_loads(tmp_path):
    from fairscan.models import load_encoder, read_checkpoint

    enc = vit_encoder()
    ckpt = read_checkpoint(mae_checkpoint(tmp_path / "enc.pth", enc, with_decoder=False))
    load_encoder(_target("avg"), ckpt, arch=VIT)


def test_mocov3_layout_loads_base_encoder_only(tmp_path):
    from fairscan.models import load_encoder, read_checkpoint

    enc = vit_encoder()
    ckpt = read_checkpoint(mocov3_checkpoint(tmp_path / "vit-b-300ep.pth.tar", enc))
    assert ckpt.format == "mocov3"
    assert any(k.startswith("module.momentum_encoder.") for k in ckpt.dropped)
    assert any(k.startswith("module.predictor.") for k in ckpt.dropped)
    model = _target("token")
    report = load_encoder(model, ckpt, arch=VIT)
    _same(model, enc, skip=("head.",))
    assert torch.equal(model.norm.weight, enc.norm.weight)  # class-token pooling keeps the final norm
    assert report.initialised == ["head.bias", "head.weight"]
    assert "head.0.weight" in report.dropped  # the projector


def test_timm_safetensors_with_position_embedding_resize(tmp_path):
    from safetensors.torch import save_file

    from fairscan.models import load_encoder, read_checkpoint

    enc = vit_encoder(image_size=64)  # a 4x4 grid, loaded into a 2x2 one
    save_file({k: v.contiguous() for k, v in enc.state_dict().items()}, str(tmp_path / "model.safetensors"))
    ckpt = read_checkpoint(tmp_path / "model.safetensors")
    assert ckpt.format == "timm"
    report = load_encoder(_target("token"), ckpt, arch=VIT)
    assert report.resized == ["pos_embed (1, 17, 64) -> (1, 5, 64)"]


def test_timm_state_dict_with_a_foreign_head_loads(tmp_path):
    from fairscan.models import build_model, load_encoder, read_checkpoint

    bit = build_model(RESNET, num_classes=21843, pooling="avg", image_size=SIZE)  # like goog_in21k
    torch.save(bit.state_dict(), tmp_path / "bit.pth")
    ckpt = read_checkpoint(tmp_path / "bit.pth")
    model = build_model(RESNET, num_classes=14, pooling="avg", image_size=SIZE)
    report = load_encoder(model, ckpt, arch=RESNET)
    assert report.initialised == ["head.fc.bias", "head.fc.weight"]
    assert torch.equal(model.stem.conv.weight, bit.stem.conv.weight)


def test_fairscan_run_folder_loads(tmp_path):
    from safetensors.torch import save_file

    from fairscan.io import write_json
    from fairscan.models import ModelInfo, load_encoder, read_checkpoint

    enc = vit_encoder()  # what `fairscan pretrain` writes: the encoder in timm's layout
    save_file({k: v.contiguous() for k, v in enc.state_dict().items()}, str(tmp_path / "model.safetensors"))
    info = ModelInfo(arch=VIT, family="vit", pooling="token", image_size=SIZE, labels=[], mean=[0.5] * 3,
                     std=[0.25] * 3)  # fmt: skip
    write_json(tmp_path / "model.json", info.to_json())
    ckpt = read_checkpoint(tmp_path)
    assert ckpt.format == "fairscan" and ckpt.info.mean == [0.5] * 3
    load_encoder(_target("token"), ckpt, arch=VIT)


def test_wrong_architecture_is_refused(tmp_path):
    from fairscan.errors import InputError
    from fairscan.models import build_model, load_encoder, read_checkpoint

    resnet = build_model(RESNET, num_classes=0, pooling="avg", image_size=SIZE)
    torch.save({"model": resnet.state_dict()}, tmp_path / "resnet.pth")
    with pytest.raises(InputError, match="does not fit fairscan_vit_micro: .*missing.*unexpected"):
        load_encoder(_target("avg"), read_checkpoint(tmp_path / "resnet.pth"), arch=VIT)


def test_missing_encoder_key_and_wrong_shape_are_refused(tmp_path):
    from fairscan.errors import InputError
    from fairscan.models import build_model, load_encoder, read_checkpoint

    sd = dict(vit_encoder().state_dict())
    del sd["blocks.1.mlp.fc2.weight"]
    torch.save({"model": sd}, tmp_path / "cut.pth")
    with pytest.raises(InputError, match=r"1 encoder key\(s\) missing \(blocks.1.mlp.fc2.weight\)"):
        load_encoder(_target("avg"), read_checkpoint(tmp_path / "cut.pth"), arch=VIT)

    wide = build_model("vit_tiny_patch16_224", num_classes=0, pooling="avg", image_size=SIZE)
    torch.save(wide.state_dict(), tmp_path / "wide.pth")
    with pytest.raises(InputError, match="shape mismatch"):
        load_encoder(_target("avg"), read_checkpoint(tmp_path / "wide.pth"), arch=VIT)


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_unsafe_or_unknown_files_are_refused(tmp_path):
    from fairscan.errors import InputError
    from fairscan.models import read_checkpoint

    with open(tmp_path / "evil.pth", "wb") as f:
        pickle.dump({"model": _Evil()}, f, protocol=2)
    with pytest.raises(InputError, match="cannot be read safely"):
        read_checkpoint(tmp_path / "evil.pth")
    torch.save({"epoch": 3, "notes": "x"}, tmp_path / "odd.pth")
    with pytest.raises(InputError, match="unrecognised checkpoint layout"):
        read_checkpoint(tmp_path / "odd.pth")
    with pytest.raises(InputError, match="no such weights file"):
        read_checkpoint(tmp_path / "absent.pth")


def test_hub_weights_are_read_from_the_hugging_face_cache_offline(tmp_path):
    """The registry's hub entries go through huggingface_hub's real cache layout (models--org--name with
    refs/main and snapshots/<commit>/model.safetensors), offline, in a fresh process."""
    import os
    import subprocess
    import sys

    from safetensors.torch import save_file

    repo = tmp_path / "hub" / "models--timm--vit_base_patch16_224.mae"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    state = {k: v.contiguous() for k, v in vit_encoder().state_dict().items()}
    save_file(state, repo / "snapshots" / commit / "model.safetensors")
    code = (
        "import json; from fairscan.models import get_spec, resolve_checkpoint; "
        "c = resolve_checkpoint(get_spec('mae'), weights=None, init='pretrained'); "
        "print(json.dumps({'source': c.source, 'format': c.format, "
        "'sums': {k: float(v.double().sum()) for k, v in c.state_dict.items()}}))"
    )
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    got = json.loads(run.stdout.strip().splitlines()[-1])
    assert got["source"] == "hf-hub:timm/vit_base_patch16_224.mae"
    assert got["sums"] == pytest.approx({k: float(v.double().sum()) for k, v in state.items()})


def test_no_silent_random_init():
    from fairscan.errors import InputError
    from fairscan.models import get_spec, resolve_checkpoint

    with pytest.raises(InputError, match="needs pre-trained weights"):
        resolve_checkpoint(get_spec("medical-mae"), weights=None, init="pretrained")
    with pytest.raises(InputError, match="not in the local cache"):  # the hub, offline, no cache
        resolve_checkpoint(get_spec("mae"), weights=None, init="pretrained")
    with pytest.raises(InputError, match="exclude each other"):
        resolve_checkpoint(get_spec("mae"), weights="w.pth", init="random")
    assert resolve_checkpoint(get_spec("mae"), weights=None, init="random") is None
    assert resolve_checkpoint(get_spec("vit-scratch"), weights=None, init="pretrained") is None


# ------------------------------------------------------------------------------------------------ REMEDIS


def _bit_npz(model, path, scope="keras_layer/resnet/"):
    """The model's weights under BiT's TensorFlow names (kernels HWIO), as a SavedModel's variables read."""
    import numpy as np

    from fairscan.models.remedis import BIT_PREFIX, timm_to_bit

    arrays = {}
    for key, value in model.state_dict().items():
        name = timm_to_bit(key)
        if name is None:
            continue
        v = value.numpy()
        arrays[scope + name[len(BIT_PREFIX) :] + ":0"] = v.transpose(2, 3, 1, 0) if v.ndim == 4 else v
    arrays["global_step:0"] = np.array(1000)
    np.savez(path, **arrays)
    return arrays


def test_remedis_conversion_route(tmp_path, run_cli):
    from fairscan.models import build_model, load_encoder, read_checkpoint

    source = build_model(RESNET, num_classes=0, pooling="avg", image_size=SIZE)
    _bit_npz(source, tmp_path / "remedis.npz")
    code, out, err = run_cli(
        "models",
        "convert-remedis",
        tmp_path / "remedis.npz",
        tmp_path / "remedis.safetensors",
        "--arch",
        RESNET,
    )
    assert code == 0, err
    ckpt = read_checkpoint(tmp_path / "remedis.safetensors")
    model = build_model(RESNET, num_classes=14, pooling="avg", image_size=SIZE)
    load_encoder(model, ckpt, arch=RESNET)
    for k, v in source.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k


def test_remedis_conversion_refuses_foreign_variables(tmp_path, run_cli):
    import numpy as np

    from fairscan.models import build_model

    arrays = _bit_npz(build_model(RESNET, num_classes=0, pooling="avg", image_size=SIZE), tmp_path / "a.npz")
    np.savez(tmp_path / "b.npz", **arrays, **{"base_model/conv2d/kernel:0": np.zeros((3, 3, 3, 8))})
    code, _, err = run_cli(
        "models", "convert-remedis", tmp_path / "b.npz", tmp_path / "b.safetensors", "--arch", RESNET
    )
    assert code == 2 and "is not part of a BiT ResNetV2" in err
    import importlib.util

    if importlib.util.find_spec("tensorflow") is not None:
        return  # with TensorFlow installed an empty SavedModel fails differently
    (tmp_path / "sm").mkdir()
    (tmp_path / "sm" / "saved_model.pb").write_bytes(b"")
    code, _, err = run_cli(
        "models", "convert-remedis", tmp_path / "sm", tmp_path / "c.safetensors", "--arch", RESNET
    )
    assert code == 2 and "TensorFlow" in err

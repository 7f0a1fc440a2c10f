"""The host side hands over uint8 grey images and the device normalises them: the same values as the old float
pipeline, the same augmentation draws (only the fill is grey now), and predict's results unchanged; bf16
inference agrees with fp32."""

from __future__ import annotations

import numpy as np
import pytest

from tests._finetune_fixtures import synthetic_manifest

torch = pytest.importorskip("torch")

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


pytestmark = pytest.mark.usefixtures("single_thread")


def _grey(size: int = 48, seed: int = 0):
    from PIL import Image

    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8))


def _old_transform(size: int, *, train: bool, randaug=None, mean=MEAN, std=STD, separate=False):
    """The float three-channel pipeline fairscan used before (timm's, to tensor and normalisation included)."""
    from timm.data import create_transform

    if train:
        return create_transform(
            size, is_training=True, auto_augment=randaug, interpolation="bicubic", mean=mean, std=std,
            re_prob=0.0, hflip=0.5, color_jitter=None, separate=separate,
        )  # fmt: skip
    return create_transform(size, is_training=False, interpolation="bicubic", mean=mean, std=std, crop_pct=0.875)


def test_device_input_gives_the_old_host_normalisation_and_refuses_float():
    from fairscan.data.dataset import build_transform
    from fairscan.data.device_input import DeviceInput

    img = _grey()
    new = DeviceInput(MEAN, STD)(build_transform(32, train=False, mean=MEAN)(img)[None])
    old = _old_transform(32, train=False)(img.convert("RGB"))[None]
    assert new.shape == old.shape == (1, 3, 32, 32) and new.dtype == torch.float32
    torch.testing.assert_close(new, old, rtol=0, atol=1e-6)
    views = DeviceInput(MEAN, STD)(torch.zeros(2, 2, 1, 8, 8, dtype=torch.uint8))  # MoCo v3's two views
    assert views.shape == (2, 2, 3, 8, 8)
    with pytest.raises(TypeError, match="uint8 grey batches"):
        DeviceInput(MEAN, STD)(old)


def test_training_view_draws_what_the_rgb_pipeline_drew_with_a_grey_fill():
    """Same seed, same crop, flip and RandAugment ops: one grey channel equals the old RGB image's channels when
    the old pipeline fills with the same grey; timm's own fill was the mean colour (124, 116, 104)."""
    from fairscan.data.dataset import RANDAUGMENT, build_transform, grey_fill, seeded

    fill = grey_fill(MEAN)
    assert fill == round(255 * sum(MEAN) / 3)
    new = build_transform(32, train=True, mean=MEAN, randaug=RANDAUGMENT)
    primary, secondary, _ = _old_transform(32, train=True, randaug=RANDAUGMENT, mean=(fill / 255,) * 3, separate=True)
    for i in range(40):
        img = _grey(seed=i)
        with seeded(7, 0, i):
            grey = new(img)[0].numpy()
        with seeded(7, 0, i):
            rgb = np.asarray(secondary(primary(img.convert("RGB"))))
        assert grey.dtype == np.uint8 and (rgb == grey[..., None]).all()


def test_predict_equals_the_old_float_pipeline(run_cli, run, manifest, tmp_path):
    from fairscan.data.dataset import ImageDataset, load_size, open_cache
    from fairscan.models import load_run_model
    from fairscan.schema import read_manifest, read_predictions

    out = tmp_path / "preds.parquet"
    assert run_cli("predict", run, "--manifest", manifest, "-o", out, "--cpu", "--precision", "fp32")[0] == 0
    preds = read_predictions(out).frame
    model, info = load_run_model(run)
    test = read_manifest(manifest, split="test")
    ds = ImageDataset(test, labels=info.labels, transform=None, manifest_dir=manifest,
                      decode_size=load_size(info.image_size), cache=open_cache(manifest))  # fmt: skip
    old = _old_transform(info.image_size, train=False, mean=tuple(info.mean), std=tuple(info.std))
    from PIL import Image

    x = torch.stack([old(Image.fromarray(ds.pixels(i)).convert("RGB")) for i in range(len(ds))])
    with torch.no_grad():
        expected = torch.sigmoid(model.eval()(x).double()).numpy()
    got = preds[[f"prob_{lab}" for lab in info.labels]].to_numpy()
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)


def _untrained_run(folder, labels):
    """A run folder holding a random-init tiny ViT: its scores spread over the images (a 2-epoch fine-tune's are
    nearly constant, so bf16 rounding would make ties that say nothing about bf16 inference)."""
    from fairscan.io import write_json
    from fairscan.models import MODEL_JSON, MODEL_WEIGHTS, ModelInfo, build_model
    from fairscan.train.checkpoint import write_weights
    from tests._finetune_fixtures import SIZE, VIT

    torch.manual_seed(0)
    model = build_model(VIT, num_classes=len(labels), pooling="avg", image_size=SIZE)
    folder.mkdir(parents=True)
    info = ModelInfo(arch=VIT, family="vit", pooling="avg", image_size=SIZE, labels=labels, mean=list(MEAN),
                     std=list(STD), model="mae")  # fmt: skip
    write_json(folder / MODEL_JSON, info.to_json())
    write_weights(folder / MODEL_WEIGHTS, model.state_dict())
    return folder


# A random-init 2-block ViT on near-identical synthetic images has a bf16 rounding floor of about 1-2e-3 AUC
# (measured over seeds); the 1e-3 is a criterion for real models, to be checked on the GPU.
TINY_BF16_AUC_GAP = 5e-3


def test_bf16_predictions_agree_with_fp32_auc(run_cli, tmp_path_factory, tmp_path):
    from fairscan.schema import label_ids, read_manifest, read_predictions
    from fairscan.train.supervised import label_aucs

    manifest = synthetic_manifest(tmp_path_factory, patients=600)  # ~285 test images
    run = _untrained_run(tmp_path / "run", label_ids(read_manifest(manifest)))
    scores = {}
    for precision in ("fp32", "bf16"):
        out = tmp_path / f"{precision}.parquet"
        code, _, err = run_cli("predict", run, "--manifest", manifest, "-o", out, "--cpu", "--precision", precision)
        assert code == 0, err
        preds = read_predictions(out)
        assert preds.provenance["precision"] == precision
        f, labels = preds.frame, preds.labels
        probs = f[[f"prob_{lab}" for lab in labels]].to_numpy()
        targets = f[[f"label_{lab}" for lab in labels]].to_numpy(dtype=np.float64)
        scores[precision] = (probs, label_aucs(probs, targets, labels))
    assert not np.array_equal(scores["fp32"][0], scores["bf16"][0])  # bf16 did run
    fp32, bf16 = scores["fp32"][1], scores["bf16"][1]
    scored = [lab for lab in fp32 if fp32[lab] is not None]
    assert len(scored) >= 10
    for lab in scored:
        assert abs(bf16[lab] - fp32[lab]) <= TINY_BF16_AUC_GAP, (lab, fp32[lab], bf16[lab])


def test_grey_uint8_is_a_twelfth_of_the_float_bytes():
    from fairscan.data.device_input import bytes_per_image

    assert bytes_per_image(224) == 50_176 and bytes_per_image(224, grey_uint8=False) == 602_112
    assert bytes_per_image(224, views=2) == 2 * 50_176

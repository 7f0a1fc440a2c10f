"""The MAE objective: masking counts, the loss on hidden patches only, positions, and the timm key layout."""

from __future__ import annotations

import math

import pytest
import torch

from fairscan.errors import InputError
from fairscan.train.objectives import mae as M
from fairscan.train.objectives._vit import sincos_pos_embed_2d

ARCH = "vit_tiny_patch16_224"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Two shared cores: one torch thread is several times faster than two fighting other processes."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return M.build_mae(ARCH, img_size=64, mask_ratio=0.75)


@pytest.mark.parametrize(
    ("n_patches", "ratio", "keep"),
    [(196, 0.75, 49), (196, 0.90, 19), (16, 0.75, 4), (100, 0.90, 10), (4, 0.75, 1), (16, 0.5, 8)],
)
def test_kept_patch_counts(n_patches, ratio, keep):
    assert M.kept_patches(n_patches, ratio) == keep


@pytest.mark.parametrize("ratio", [0.75, 0.9, 0.3])
def test_random_masking_hides_exactly_the_same_count_in_every_image(ratio):
    n, length, d = 6, 196, 5
    keep = M.kept_patches(length, ratio)
    x = torch.arange(n * length, dtype=torch.float32).reshape(n, length, 1).expand(n, length, d).contiguous()
    kept, mask, ids_restore = M.random_masking(x, keep, generator=torch.Generator().manual_seed(1))
    assert kept.shape == (n, keep, d)
    assert mask.shape == (n, length)
    assert torch.equal(mask.sum(1), torch.full((n,), float(length - keep)))
    assert set(mask.unique().tolist()) == {0.0, 1.0}
    for i in range(n):  # the kept tokens are exactly the unmasked positions
        visible = x[i, mask[i] == 0, 0]
        assert sorted(kept[i, :, 0].tolist()) == sorted(visible.tolist())
    # ids_restore is a permutation per sample
    assert torch.equal(ids_restore.sort(1).values, torch.arange(length).expand(n, -1))


def test_masks_differ_between_images():
    x = torch.zeros(8, 196, 4)
    _, mask, _ = M.random_masking(x, 49, generator=torch.Generator().manual_seed(0))
    assert len({tuple(row.tolist()) for row in mask}) == 8


def test_model_hides_the_configured_share(model):
    loss, pred, mask = model(torch.randn(3, 3, 64, 64), return_outputs=True)
    assert model.num_patches == 16 and model.keep == 4
    assert pred.shape == (3, 16, 16 * 16 * 3)
    assert mask.sum(1).tolist() == [12.0, 12.0, 12.0]
    assert loss.ndim == 0 and math.isfinite(loss.item())


def _patch_pixels(imgs, patch_index, grid=4, p=16):
    r, c = divmod(patch_index, grid)
    return imgs[:, :, r * p : (r + 1) * p, c * p : (c + 1) * p]


def test_loss_ignores_visible_patches_and_counts_hidden_ones(model):
    torch.manual_seed(3)
    imgs = torch.randn(2, 3, 64, 64)
    pred = torch.randn(2, 16, 768)
    mask = torch.zeros(2, 16)
    mask[:, [1, 5, 6, 10, 11, 15]] = 1.0
    base = model.loss(imgs, pred, mask)

    changed = imgs.clone()
    for idx in (0, 2, 3, 4, 7):  # visible patches: their targets must not matter
        _patch_pixels(changed, idx).mul_(-3.0).add_(7.0)
    assert torch.equal(model.loss(changed, pred, mask), base)
    pred_changed = pred.clone()
    pred_changed[:, [0, 2, 3]] += 100.0  # predictions for visible patches must not matter either
    assert torch.equal(model.loss(imgs, pred_changed, mask), base)

    hidden = imgs.clone()
    _patch_pixels(hidden, 5).mul_(-3.0).add_(7.0)
    assert not torch.allclose(model.loss(hidden, pred, mask), base)


def test_loss_matches_a_hand_computation_of_normalised_pixels(model):
    torch.manual_seed(4)
    imgs = torch.rand(1, 3, 64, 64)
    pred = torch.randn(1, 16, 768)
    mask = torch.zeros(1, 16)
    mask[0, [3, 9]] = 1.0
    total = 0.0
    for idx in (3, 9):
        px = _patch_pixels(imgs, idx)[0].permute(1, 2, 0).reshape(-1)  # row, col, channel order
        target = (px - px.mean()) / (px.var(unbiased=True) + 1e-6).sqrt()
        total += ((pred[0, idx] - target) ** 2).mean().item()
    assert model.loss(imgs, pred, mask).item() == pytest.approx(total / 2, rel=1e-5)


def test_patchify_round_trips():
    imgs = torch.randn(2, 3, 48, 32)
    x = M.patchify(imgs, 16)
    assert x.shape == (2, 6, 768)
    assert torch.equal(M.unpatchify(x, 16, (3, 2)), imgs)


@pytest.mark.parametrize("ratio", [0.0, 1.0, -0.1, 1.5, float("nan")])
def test_mask_ratio_outside_open_interval_is_an_input_error(ratio):
    with pytest.raises(InputError, match="strictly between 0 and 1"):
        M.build_mae(ARCH, img_size=32, mask_ratio=ratio)


def test_mask_ratio_that_keeps_nothing_is_an_input_error():
    with pytest.raises(InputError, match="keeps no patch of the 4"):
        M.build_mae(ARCH, img_size=32, mask_ratio=0.8)


def test_wrong_image_size_is_an_input_error(model):
    with pytest.raises(InputError, match=r"\(N, 3, 64, 64\)"):
        model(torch.randn(1, 3, 32, 32))


def test_sincos_table_matches_the_formula():
    table = sincos_pos_embed_2d(8, (2, 3), cls_token=True)
    assert table.shape == (1, 7, 8)
    assert torch.equal(table[0, 0], torch.zeros(8))
    omega = [1.0, 1.0 / 100.0]  # 10000 ** (-k / 2) for k = 0, 1
    for token in range(6):
        row, col = divmod(token, 3)
        expect = (
            [math.sin(col * w) for w in omega]
            + [math.cos(col * w) for w in omega]
            + [math.sin(row * w) for w in omega]
            + [math.cos(row * w) for w in omega]
        )
        assert table[0, token + 1].tolist() == pytest.approx(expect, abs=1e-6)


def test_positions_are_fixed_and_the_rest_learns(model):
    enc = model.encoder
    assert not enc.pos_embed.requires_grad
    assert torch.allclose(enc.pos_embed, sincos_pos_embed_2d(192, (4, 4)))
    assert "decoder_pos_embed" not in model.state_dict()  # a fixed buffer, rebuilt from the config
    model.zero_grad()
    model(torch.randn(2, 3, 64, 64)).backward()
    assert enc.pos_embed.grad is None
    for p in (
        enc.patch_embed.proj.weight,
        enc.blocks[0].attn.qkv.weight,
        model.mask_token,
        model.decoder_pred.weight,
    ):
        assert p.grad is not None and p.grad.abs().sum() > 0


def test_encoder_loads_into_a_plain_timm_model_strictly(model):
    import timm

    plain = timm.create_model(ARCH, num_classes=0, img_size=64)
    state = model.encoder_state_dict()
    assert not any(k.startswith(("decoder", "mask_token")) for k in state)
    plain.load_state_dict(state, strict=True)
    x = torch.randn(1, 3, 64, 64)
    model.eval()
    assert torch.allclose(plain.eval()(x), model.encoder(x), atol=1e-6)


def test_decoder_defaults_follow_the_encoder_width():
    assert M.resolve_decoder(768) == M.DecoderSpec(512, 8, 16)  # ViT-B: the official decoder
    assert M.resolve_decoder(1024) == M.DecoderSpec(512, 8, 16)
    assert M.resolve_decoder(384) == M.DecoderSpec(384, 4, 12)
    assert M.resolve_decoder(192) == M.DecoderSpec(192, 2, 6)
    assert M.resolve_decoder(192, dim=128, depth=1, heads=4) == M.DecoderSpec(128, 1, 4)


def test_no_weight_decay_on_biases_and_norms(model):
    decay, no_decay = model.optimizer_groups(0.05)
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    assert all(p.ndim >= 2 for p in decay["params"])
    assert all(p.ndim == 1 for p in no_decay["params"])
    grouped = {id(p) for g in (decay, no_decay) for p in g["params"]}
    assert id(model.encoder.pos_embed) not in grouped
    assert grouped == {id(p) for p in model.parameters() if p.requires_grad}

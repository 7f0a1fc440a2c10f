"""The MoCo v3 objective: momentum arithmetic, InfoNCE by hand, frozen parts, and the timm key layout."""

from __future__ import annotations

import math

import pytest
import torch

from fairscan.train.objectives import mocov3 as C
from fairscan.train.objectives._vit import sincos_pos_embed_2d

ARCH = "vit_tiny_patch16_224"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Two shared cores: one torch thread is several times faster than two fighting other processes."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _tiny(**kw):
    torch.manual_seed(0)
    return C.build_mocov3(ARCH, img_size=32, dim=16, mlp_dim=32, **kw)


def test_momentum_schedule_rises_from_base_to_one_on_a_cosine():
    assert C.momentum_at(0.0) == pytest.approx(0.99)
    assert C.momentum_at(0.5) == pytest.approx(0.995)
    assert C.momentum_at(1.0) == pytest.approx(1.0)
    assert C.momentum_at(0.25) == pytest.approx(1 - 0.5 * (1 + math.cos(math.pi / 4)) * 0.01)
    assert C.momentum_at(2.0) == pytest.approx(1.0)  # clipped


def test_momentum_update_arithmetic():
    online = [torch.tensor([1.0, 2.0]), torch.tensor([[4.0]])]
    target = [torch.tensor([3.0, -2.0]), torch.tensor([[0.0]])]
    C.momentum_update(online, target, 0.9)
    assert target[0].tolist() == pytest.approx([0.9 * 3 + 0.1 * 1, 0.9 * -2 + 0.1 * 2])
    assert target[1].item() == pytest.approx(0.4)
    assert online[0].tolist() == [1.0, 2.0]


def test_model_momentum_update_moves_every_momentum_parameter():
    model = _tiny()
    with torch.no_grad():
        for p in model.base_projector.parameters():
            p.add_(1.0)
    before = [p.clone() for p in model.momentum_projector.parameters()]
    online = [p.clone() for p in model.base_projector.parameters()]
    model.update_momentum(0.75)
    for b, o, a in zip(before, online, model.momentum_projector.parameters()):
        assert torch.allclose(a, 0.75 * b + 0.25 * o)


def test_training_forward_steps_the_momentum_schedule_and_eval_does_not():
    model = _tiny(total_steps=4)
    views = torch.randn(4, 2, 3, 32, 32)
    assert model.current_momentum() == pytest.approx(0.99)
    model.train()
    model(views)
    assert int(model.step) == 1
    assert model.current_momentum() == pytest.approx(C.momentum_at(0.25))
    model.eval()
    model(views)
    assert int(model.step) == 1
    assert "step" in model.state_dict()  # saved with the state, so resume continues the schedule


def _hand_info_nce(q, k, t, offset=0):
    total = 0.0
    for i in range(len(q)):
        qi = q[i] / q[i].norm()
        sims = [float(qi @ (kj / kj.norm())) / t for kj in k]
        total += -(sims[offset + i] - math.log(sum(math.exp(s) for s in sims)))
    return total / len(q) * 2 * t


def test_info_nce_matches_a_hand_computation():
    torch.manual_seed(1)
    q, k = torch.randn(3, 5), torch.randn(3, 5)
    assert C.info_nce(q, k, 0.2).item() == pytest.approx(_hand_info_nce(q, k, 0.2), rel=1e-5)
    assert C.info_nce(q, k, 1.0).item() == pytest.approx(_hand_info_nce(q, k, 1.0), rel=1e-5)


def test_info_nce_with_gathered_keys_uses_the_offset():
    """Rank 1 of 2 holds queries 2..3; its positives are keys 2..3 of the gathered 4."""
    torch.manual_seed(2)
    q, k = torch.randn(2, 6), torch.randn(4, 6)
    assert C.info_nce(q, k, 0.2, offset=2).item() == pytest.approx(
        _hand_info_nce(q, k, 0.2, offset=2), rel=1e-5
    )


def test_symmetric_loss_of_the_model_is_the_sum_of_both_directions():
    model = _tiny()
    model.eval()
    views = torch.randn(4, 2, 3, 32, 32)
    loss, (q1, q2, k1, k2) = model(views, return_outputs=True)
    expect = _hand_info_nce(q1.detach(), k2, 0.2) + _hand_info_nce(q2.detach(), k1, 0.2)
    assert loss.item() == pytest.approx(expect, rel=1e-4)
    assert not k1.requires_grad and q1.requires_grad
    loss2 = model(views[:, 0], views[:, 1])  # the same two views as two tensors
    assert loss2.item() == pytest.approx(loss.item(), rel=1e-6)


def test_patch_projection_and_positions_are_frozen_and_everything_else_trains():
    model = _tiny()
    enc = model.base_encoder
    assert not enc.patch_embed.proj.weight.requires_grad and not enc.patch_embed.proj.bias.requires_grad
    assert not enc.pos_embed.requires_grad
    assert torch.allclose(enc.pos_embed, sincos_pos_embed_2d(192, (2, 2)))
    assert not any(p.requires_grad for p in model.momentum_encoder.parameters())
    (group,) = model.optimizer_groups(0.1)
    assert group["weight_decay"] == 0.1
    params = {id(p) for p in group["params"]}
    assert id(enc.patch_embed.proj.weight) not in params
    assert id(model.predictor[0].weight) in params and id(enc.blocks[0].attn.qkv.weight) in params
    model.train()
    model(torch.randn(4, 2, 3, 32, 32)).backward()
    assert enc.patch_embed.proj.weight.grad is None
    assert enc.blocks[0].attn.qkv.weight.grad.abs().sum() > 0


def test_projector_and_predictor_shapes():
    torch.manual_seed(0)
    model = C.build_mocov3(ARCH, img_size=32)  # the official 4096 hidden, 256 out
    linears = [m for m in model.base_projector if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(192, 4096), (4096, 4096), (4096, 256)]
    linears = [m for m in model.predictor if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(256, 4096), (4096, 256)]
    assert not model.base_projector[-1].affine and not model.predictor[-1].affine


def test_base_encoder_loads_into_a_plain_timm_model_strictly():
    import timm

    model = _tiny()
    state = model.encoder_state_dict()
    assert not any("projector" in k or "predictor" in k or "momentum" in k for k in state)
    plain = timm.create_model(ARCH, num_classes=0, img_size=32)
    plain.load_state_dict(state, strict=True)
    x = torch.randn(2, 3, 32, 32)
    assert torch.allclose(plain.eval()(x), model.base_encoder.eval()(x), atol=1e-6)


def test_one_view_tensor_is_an_input_error():
    from fairscan.errors import InputError

    with pytest.raises(InputError, match="two views"):
        _tiny()(torch.randn(2, 3, 32, 32))

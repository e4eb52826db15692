"""ganfn.functional: modules as pure functions; buffers returned, never mutated; explicit train/eval."""
from __future__ import annotations

import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from ganfn import stack
from ganfn.functional import extract, has_batch_stats, make_apply
from ganfn.testing import assert_pure, assert_trees_equal
from ganfn.testing import strategies as gst


def bn_net(c: int = 4) -> nn.Module:
    return nn.Sequential(nn.Linear(3, c), nn.BatchNorm1d(c), nn.ReLU(), nn.Linear(c, 2))


@given(gst.batches((3,), min_batch=2, max_batch=6, scale=st.floats(0.1, 10.0)), st.booleans())
def test_apply_returns_new_buffers_and_leaves_passed_ones(x, module_training):
    net = bn_net().train(module_training)
    params, buffers = extract(net)
    apply = make_apply(net)
    out, new = assert_pure(apply, params, buffers, x, modules=[net])  # train=True by default
    assert new["1.num_batches_tracked"].item() == 1
    assert not torch.equal(new["1.running_mean"], buffers["1.running_mean"])
    assert net.training == module_training, "the module's own mode must be restored"
    # Same numbers as the module itself in training mode, whose buffers it updates in place.
    ref_net = bn_net().train()
    ref_net.load_state_dict(net.state_dict())
    torch.testing.assert_close(out, ref_net(x))
    torch.testing.assert_close(new["1.running_var"], ref_net[1].running_var)


@given(gst.batches((3,), min_batch=1, max_batch=6))
def test_eval_mode_uses_running_stats_and_returns_buffers_unchanged(x):
    net = bn_net().train()
    params, buffers = extract(net)
    buffers = {**buffers, "1.running_mean": torch.full((4,), 0.5), "1.running_var": torch.full((4,), 2.0)}
    out, new = assert_pure(make_apply(net), params, buffers, x, train=False)
    assert_trees_equal(new, buffers, "buffers after an eval-mode call")
    assert net.training
    ref = bn_net().eval()
    ref.load_state_dict({**net.state_dict(), **buffers})
    torch.testing.assert_close(out, ref(x))


def test_extract_copies():
    net = bn_net()
    params, buffers = extract(net)
    params["0.weight"].add_(1.0)
    buffers["1.running_mean"].add_(1.0)
    assert not torch.equal(net[0].weight, params["0.weight"])
    assert not torch.equal(net[1].running_mean, buffers["1.running_mean"])
    assert all(not p.requires_grad for p in params.values())


def test_vmap_over_stacked_params_and_buffers():
    net = bn_net()
    apply = make_apply(net)
    members = [extract(bn_net()) for _ in range(3)]
    x = torch.randn(3, 5, 3)
    out, new = torch.func.vmap(apply)(stack([m[0] for m in members]), stack([m[1] for m in members]), x)
    for i, (p, b) in enumerate(members):
        o_i, n_i = apply(p, b, x[i])
        torch.testing.assert_close(out[i], o_i)
        torch.testing.assert_close(new["1.running_mean"][i], n_i["1.running_mean"])


def test_has_batch_stats():
    assert has_batch_stats(bn_net())
    assert has_batch_stats(nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2)))
    assert not has_batch_stats(nn.Sequential(nn.Linear(2, 2), nn.LayerNorm(2)))
    assert not has_batch_stats(nn.InstanceNorm2d(2))


def test_tied_weights_follow_the_passed_parameter():
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(2, 2, bias=False)
            self.b = nn.Linear(2, 2, bias=False)
            self.b.weight = self.a.weight

        def forward(self, x):
            return self.b(self.a(x))

    net = Tied()
    params, buffers = extract(net)
    assert list(params) == ["a.weight"]
    w = torch.eye(2) * 3
    out, _ = make_apply(net)({"a.weight": w}, buffers, torch.ones(1, 2))
    torch.testing.assert_close(out, torch.full((1, 2), 9.0))


@given(gst.batches((3,), min_batch=2, max_batch=6, scale=st.floats(0.1, 10.0)), st.integers(1, 6), st.booleans())
def test_apply_equals_functional_call(x, width, train):
    # make_apply's direct swap (eager, untied weights) computes what torch.func.functional_call
    # computes, with the same new buffers, and puts the module's own tensors back.
    net = bn_net(width)
    own = {k: v for k, v in net.state_dict(keep_vars=True).items()}
    params, buffers = extract(net)
    params = {k: v + 0.5 for k, v in params.items()}
    out, new = make_apply(net)(params, buffers, x, train=train)
    ref_buffers = {k: v.clone() for k, v in buffers.items()}
    net.train(train)
    ref = torch.func.functional_call(net, (params, ref_buffers), (x,))
    assert torch.equal(out, ref)
    assert_trees_equal(new, ref_buffers if train else buffers, "buffers")
    assert all(v is own[k] for k, v in net.state_dict(keep_vars=True).items()), \
        "the module's own tensors must come back"


def test_apply_puts_the_module_back_when_forward_raises():
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    own = dict(net.named_parameters())
    params, buffers = extract(net)
    try:
        make_apply(net)(params, buffers, torch.zeros(2, 5))  # wrong input width: the forward raises
    except RuntimeError:
        pass
    else:
        raise AssertionError("a [2, 5] input to Linear(3, 4) must raise")
    assert all(p is own[k] for k, p in net.named_parameters())

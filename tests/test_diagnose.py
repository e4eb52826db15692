"""ganfn.diagnose: a sigmoid-ended D under a logit loss is refused; D's accuracy
is read against the loss's own decision boundary."""
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

import ganfn
from ganfn import diagnose, losses, optim

torch.set_num_threads(1)


class _SigmoidInForward(nn.Module):
    """A D that applies torch.sigmoid in forward: no module to spot, only outputs."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2, 16), nn.LeakyReLU(0.2), nn.Linear(16, 1))

    def forward(self, x):
        return torch.sigmoid(self.net(x))


def _G():
    return nn.Sequential(nn.Linear(3, 16), nn.ReLU(), nn.Linear(16, 2))


def _gan(D, loss="non_saturating"):
    return ganfn.GAN(_G(), D, latent_dim=3, loss=loss, g_optimizer=optim.adam(1e-3), d_optimizer=optim.adam(1e-3))


def test_trailing_sigmoid_found_at_any_depth():
    assert diagnose.trailing_sigmoid(nn.Sigmoid())
    assert diagnose.trailing_sigmoid(nn.Sequential(nn.Linear(2, 1), nn.Sigmoid()))
    assert diagnose.trailing_sigmoid(nn.Sequential(nn.Linear(2, 4), nn.Sequential(nn.Linear(4, 1), nn.Sigmoid())))
    assert not diagnose.trailing_sigmoid(nn.Sequential(nn.Sigmoid(), nn.Linear(2, 1)))
    assert not diagnose.trailing_sigmoid(nn.Sequential(nn.Linear(2, 1)))


@pytest.mark.parametrize("loss", ["non_saturating", "minimax", "wasserstein", "hinge"])
def test_sigmoid_discriminator_is_refused_with_the_fix(loss):
    D = nn.Sequential(nn.Linear(2, 16), nn.LeakyReLU(0.2), nn.Linear(16, 1), nn.Sigmoid())
    with pytest.raises(ValueError, match=r"ends in nn.Sigmoid\(\).*Remove the final nn.Sigmoid"):
        _gan(D, loss).init(0)


def test_sigmoid_applied_in_forward_is_caught_from_the_outputs():
    with pytest.raises(ValueError, match=r"outputs all lie in \[0, 1\].*Remove the final nn.Sigmoid"):
        _gan(_SigmoidInForward()).init(0)


def test_least_squares_accepts_a_bounded_d():
    # LSGAN variants with a sigmoid D exist; least squares does not take logits.
    D = nn.Sequential(nn.Linear(2, 16), nn.LeakyReLU(0.2), nn.Linear(16, 1), nn.Sigmoid())
    _gan(D, "least_squares").init(0)


@pytest.mark.parametrize("last_init", ["default", "zero"])
def test_logit_discriminators_pass(last_init):
    D = nn.Sequential(nn.Linear(2, 16), nn.LeakyReLU(0.2), nn.Linear(16, 1))
    gan = _gan(D)
    if last_init == "zero":  # constant outputs 0: no evidence of a sigmoid
        gan = ganfn.GAN(_G(), D, latent_dim=3, loss="non_saturating", weight_init=_zero_last)
    state = gan.init(0)
    if last_init == "zero":
        assert all(float(v.abs().sum()) == 0 for k, v in state.d.params.items() if k.startswith("2."))


def _zero_last(net, gen):
    for m in net.modules():
        if isinstance(m, nn.Linear) and m.out_features == 1:
            nn.init.zeros_(m.weight)
            nn.init.zeros_(m.bias)


@given(st.floats(0.5, 1.0), st.floats(0.0, 0.3))
def test_bce_accuracy_uses_the_soft_label_boundary(real_target, fake_target):
    # D at its optimum outputs logit(target) exactly: every sample is on its side.
    out_r = torch.full((6,), float(torch.logit(torch.tensor(real_target), eps=1e-6)) + 1e-3)
    out_f = torch.full((6,), float(torch.logit(torch.tensor(fake_target), eps=1e-6)) - 1e-3)
    acc_r, acc_f = diagnose.d_accuracy(losses.non_saturating, out_r, out_f,
                                       torch.tensor(real_target, dtype=torch.float64),
                                       torch.tensor(fake_target, dtype=torch.float64))
    assert float(acc_r) == 1.0 and float(acc_f) == 1.0


def test_soft_real_label_half_is_not_read_against_zero():
    # real_label 0.5 (the dcgan-dogs preset): D's best real output is logit(0.5) = 0,
    # which a fixed threshold of 0 would count as 0% accurate on real data.
    out_r, out_f = torch.full((4, 1), 0.0), torch.full((4, 1), -5.0)
    acc_r, acc_f = diagnose.d_accuracy(losses.non_saturating, out_r, out_f, 0.5, 0.0)
    assert (float(acc_r), float(acc_f)) == (1.0, 1.0)


def test_least_squares_boundary_follows_targets():
    out_r, out_f = torch.tensor([0.35, 0.4]), torch.tensor([0.25, 0.2])
    acc_r, acc_f = diagnose.d_accuracy(losses.least_squares, out_r, out_f, 0.6, 0.0)   # boundary 0.3
    assert (float(acc_r), float(acc_f)) == (1.0, 1.0)
    acc_r, _ = diagnose.d_accuracy(losses.least_squares, out_r, out_f, 1.0, 0.0)       # boundary 0.5
    assert float(acc_r) == 0.0


def test_patch_outputs_are_averaged_per_sample():
    out_r = torch.tensor([[1.0, 1.0, -1.0], [2.0, -3.0, 0.0]])  # means 1/3, -1/3
    acc_r, _ = diagnose.d_accuracy(losses.hinge, out_r, -out_r, 1.0, 0.0)
    assert float(acc_r) == 0.5


@given(st.integers(1, 32), st.floats(-1e3, 1e3), st.integers(0, 2**31 - 1))
def test_critic_accuracy_ranks_pairs_and_ignores_a_shift(b, shift, seed):
    # A critic's scores have no origin: its accuracy is the fraction of pairs it
    # ranks right, whatever constant its scores carry.
    g = torch.Generator().manual_seed(seed)
    out_r, out_f = torch.randn(b, generator=g, dtype=torch.float64), torch.randn(b, generator=g, dtype=torch.float64)
    want = float((out_r > out_f).double().mean())
    for loss in (losses.wasserstein, losses.rpgan, losses.ragan):
        acc_r, acc_f = diagnose.d_accuracy(loss, out_r + shift, out_f + shift, 1.0, 0.0)
        assert float(acc_r) == float(acc_f) == want


def test_critic_accuracy_is_not_a_zero_threshold():
    # All scores positive, real ranked above fake: a 0 threshold would call every fake "real".
    out_r, out_f = torch.tensor([5.0, 6.0]), torch.tensor([3.0, 4.0])
    assert tuple(map(float, diagnose.d_accuracy(losses.wasserstein, out_r, out_f, 1.0, 0.0))) == (1.0, 1.0)
    assert tuple(map(float, diagnose.d_accuracy(losses.wasserstein, out_f, out_r, 1.0, 0.0))) == (0.0, 0.0)

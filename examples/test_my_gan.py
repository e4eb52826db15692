"""Property tests for YOUR GAN with ganfn.testing -- copy this file and swap in your modules.

Run:  pytest examples/test_my_gan.py -q        (a few seconds on a laptop CPU)

Each test states a property that must hold for any correct GAN training code;
hypothesis generates the seeds, data and logits, and the ganfn.testing checks
raise an AssertionError naming what broke (which input was mutated, which
network a step moved, which logit overflowed).
"""
from __future__ import annotations

import torch
from hypothesis import given, settings
from torch import nn

import ganfn
from ganfn.testing import assert_grads_isolated, assert_loss_invariants, assert_pure
from ganfn.testing import strategies as gst

torch.set_num_threads(1)


# -- your models (unchanged nn.Modules) ---------------------------------------------------


class MyGenerator(nn.Module):
    """Latent [B, 16] -> image [B, 1, 8, 8] in [-1, 1]."""

    def __init__(self, latent: int = 16):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(latent, 64), nn.ReLU(), nn.Linear(64, 64), nn.Tanh(),
                                 nn.Unflatten(1, (1, 8, 8)))

    def forward(self, z):
        return self.net(z)


class MyCritic(nn.Module):
    """Image [B, 1, 8, 8] -> one score per image [B, 1]. No batch norm (penalties need per-sample gradients)."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(1, 8, 3, stride=2, padding=1), nn.LeakyReLU(0.2), nn.Flatten(),
                                 nn.Linear(8 * 4 * 4, 1))

    def forward(self, x):
        return self.net(x)


# -- your loss (here: a smooth hinge, softplus(1 - x) instead of relu(1 - x)) ----------------


def _my_d_parts(real_out, fake_out, **_):
    # softplus keeps it finite for logits of any size; log(sigmoid(x)) would not be.
    return torch.nn.functional.softplus(1 - real_out).mean(), torch.nn.functional.softplus(1 + fake_out).mean()


def _my_g(fake_out, **_):
    return torch.nn.functional.softplus(-fake_out).mean()


MY_LOSS = ganfn.losses.LossPair("soft_hinge", _my_d_parts, _my_g, threshold=0.0)

GAN = ganfn.GAN(MyGenerator(), MyCritic(), latent_dim=16, loss=MY_LOSS, parts=[ganfn.penalties.r1(1.0)],
                g_optimizer=ganfn.optim.adam(2e-4, (0.5, 0.999)), d_optimizer=ganfn.optim.adam(2e-4, (0.5, 0.999)))
BATCH = 8


# -- 1. the training step is a pure function ----------------------------------------------------


@settings(max_examples=5, deadline=None)
@given(state=gst.train_states(GAN, lr_d=gst.learning_rates()),
       real=gst.batches((1, 8, 8), batch_size=BATCH, kind="image"), seed=gst.seeds())
def test_train_step_is_pure(state, real, seed):
    """Inputs never mutated, repeat calls bit-identical, no .grad on MyGenerator/MyCritic."""
    noise = GAN.draw_noise(torch.Generator().manual_seed(seed), BATCH)
    assert_pure(GAN.train_step, state, real, noise)


# -- 2. G's step never moves D, D's step never moves G --------------------------------------------


@settings(max_examples=5, deadline=None)
@given(seed=gst.seeds(), real=gst.batches((1, 8, 8), batch_size=BATCH, kind="image"))
def test_steps_touch_one_network_each(seed, real):
    state = GAN.init(seed % 10_000)
    assert_grads_isolated(GAN, state, real, GAN.draw_noise(torch.Generator().manual_seed(seed), BATCH))


# -- 3. the loss is finite on extreme logits and points the right way ------------------------------


@settings(max_examples=25, deadline=None)
@given(gst.logit_pairs())
def test_my_loss_invariants(pair):
    """Finite values and gradients up to |logit| = 1e4; D's loss falls as it gets
    better, G's falls as it fools D."""
    assert_loss_invariants(MY_LOSS, *pair)

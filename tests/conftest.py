"""Shared test set-up: hypothesis profiles, one CPU thread, small GAN builders.

Profiles (select with ``HYPOTHESIS_PROFILE=ci|dev|thorough``): ``dev`` (default)
and ``ci`` keep example counts small so the suite runs in minutes on 2 cores;
``thorough`` is for an occasional long run. ``deadline=None`` everywhere: the
first call of a torch function is slow and would trip hypothesis' timer.
"""
from __future__ import annotations

import os

import pytest
import torch
from hypothesis import HealthCheck, settings
from torch import nn

# Two threads on a loaded 2-core machine were measured 40x slower than one.
torch.set_num_threads(1)

_common = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("dev", max_examples=20, **_common)
settings.register_profile("ci", max_examples=10, derandomize=True, **_common)
settings.register_profile("thorough", max_examples=300, **_common)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


def small_gan_modules(latent: int = 3, data: int = 2, hidden: int = 8, *, d_norm: nn.Module | None = None,
                      g_batchnorm: bool = False) -> tuple[nn.Module, nn.Module]:
    """A tiny MLP generator and discriminator (seconds-fast on CPU)."""
    # No bias before BatchNorm (as in DCGAN): its true gradient is exactly zero, and
    # Adam turns the rounding noise of a zero gradient into full-size steps.
    g_layers = [nn.Linear(latent, hidden, bias=not g_batchnorm)]
    if g_batchnorm:
        g_layers.append(nn.BatchNorm1d(hidden))
    g_layers += [nn.Tanh(), nn.Linear(hidden, data)]
    d_layers = [nn.Linear(data, hidden)]
    if d_norm is not None:
        d_layers.append(d_norm)
    d_layers += [nn.LeakyReLU(0.2), nn.Linear(hidden, 1)]
    return nn.Sequential(*g_layers), nn.Sequential(*d_layers)


@pytest.fixture
def modules() -> tuple[nn.Module, nn.Module]:
    return small_gan_modules()

"""ganfn.recipes.r3gan / stylegan2_ada and their optimizers: the papers' schedule
values at given steps (closed forms on a linear critic), pure steps on the tiny
models at 16 px, vmapped member equals single run, resume, and bad arguments."""
from __future__ import annotations

import math

import pytest
import torch
from conftest import assert_resumes_bit_identically
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import ganfn
from ganfn import recipes
from ganfn.models import r3gan, stylegan2
from ganfn.parts import ema_decay
from ganfn.testing import assert_pure, assert_vmap_equivalent

torch.set_num_threads(1)
B = 4


def _cos(a: float, b: float, s: int, n: int) -> float:
    return b + (a - b) * (1 + math.cos(math.pi * min(s, n) / n)) / 2


def _linear(parts, **kw):
    return ganfn.GAN(nn.Linear(3, 2), nn.Linear(2, 1), latent_dim=3, loss="rpgan", parts=parts, **kw)


@pytest.mark.parametrize("step", [0, 7, 20, 39, 100])
def test_r3gan_gamma_follows_the_papers_cosine(step):
    # 40 steps of schedule at batch 8: R1 + R2 on a linear critic is gamma * ||w||^2.
    gan = _linear(recipes.r3gan(batch_size=8, schedule_images=320, augment_p=None)[:2])
    state = gan.init(0)._replace(step=torch.tensor(step))
    noise = ganfn.tree_index(gan.draw_noise(torch.Generator().manual_seed(0), B).d, 0)
    aux = gan.d_grads(state, torch.randn(B, 2), noise)[2]
    w = state.d.params["weight"].double()
    want = _cos(0.05, 0.005, step, 40) * w.square().sum()
    torch.testing.assert_close(aux.penalty.double(), want, rtol=1e-5, atol=1e-9)


@settings(max_examples=10, deadline=None)
@given(st.integers(0, 200), st.sampled_from([8, 64, 512]))
def test_r3gan_lr_beta2_augment_and_ema_schedules(step, batch):
    n = recipes.steps_of(20e6, batch)
    opts = recipes.r3gan_optimizers(batch_size=batch)
    for opt in opts.values():
        s = opt.init({"w": torch.zeros(2)})
        s["count"] = torch.tensor(step * n // 200)
        assert float(opt.lr(s)) == pytest.approx(_cos(2e-4, 5e-5, step * n // 200, n), rel=1e-9)
        fields = {f: s["hp"][f"b2.{f}"] for f in ("start", "end", "begin", "steps")}
        b2 = ganfn.schedules.at("cosine", fields, s["count"])
        assert float(b2) == pytest.approx(_cos(0.9, 0.99, step * n // 200, n), rel=1e-9)
        assert float(s["hp"]["b1"]) == 0.0
    parts = {p.name: p for p in recipes.r3gan(batch_size=batch)}
    p = parts["diffaugment"].hparams["augment_p"].value
    assert float(p(n // 2)) == pytest.approx(0.275) and float(p(n)) == pytest.approx(0.55) and float(p(0)) == 0.0
    # The EMA half-life (in images) follows the cosine from 0 to 5 Mimg.
    half = parts["ema"].hparams["ema_half_life"].value
    assert float(half(step * n // 200)) == pytest.approx(_cos(0.0, 5e6, step * n // 200, n), rel=1e-9, abs=1e-6)


@settings(max_examples=8, deadline=None)
@given(st.integers(0, 60), st.sampled_from([1, 8, 512]), st.floats(0.0, 1e4))
def test_ema_half_life_sets_the_decay_per_update_from_images(step, batch, h_end):
    gan = _linear([ganfn.parts.ema_half_life(ganfn.schedules.cosine(0.0, h_end, 40), batch)])
    state = gan.init(0)._replace(step=torch.tensor(step))
    avg = {k: torch.zeros_like(v) for k, v in state.g.params.items()}
    state = state._replace(parts={"ema": {**state.parts["ema"], "params": avg}})
    new, _ = gan.train_step(state, torch.randn(B, 2), gan.draw_noise(torch.Generator().manual_seed(0), B))
    h = _cos(0.0, h_end, step, 40)
    decay = 0.5 ** (batch / max(h, 1e-8))
    want = {k: (1 - decay) * v.double() for k, v in new.g.params.items()}  # the average started at 0
    for k, v in new.parts["ema"]["params"].items():
        torch.testing.assert_close(v.double(), want[k], rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="batch_size"):
        ganfn.parts.ema_half_life(100.0, 0)
    with pytest.raises(ValueError, match="ema_half_life"):
        ganfn.parts.ema_half_life(-1.0, 8)


def test_stylegan2_ada_settings():
    parts = {p.name: p for p in recipes.stylegan2_ada(batch_size=64)}
    assert list(parts) == ["ada", "r1", "ema"]  # cifar: no path length
    assert float(parts["ada"].hparams["ada_target"].value) == 0.6
    assert float(parts["r1"].defaults()["r1_weight"].value) == 0.01
    hp = {k: torch.tensor(float(v.value), dtype=torch.float64) for k, v in parts["ema"].defaults().items()}
    late = float(ema_decay(hp, torch.tensor(10**7), warmup=False))
    assert late == pytest.approx(0.5 ** (64 / 500_000), rel=1e-12)
    early = float(ema_decay(hp, torch.tensor(100), warmup=False))  # half-life <= 5% of the images seen
    assert early == pytest.approx(0.5 ** (1 / 5.0), rel=1e-9)
    with_pl = [p.name for p in recipes.stylegan2_ada(pl_weight=2.0)]
    assert with_pl == ["ada", "r1", "path_length", "ema"]
    ffhq = {p.name: p for p in recipes.stylegan2_ada(pl_weight=2.0, mixing_prob=0.9, z_dims=4, num_ws=6)}
    assert list(ffhq) == ["style_mixing", "ada", "r1", "path_length", "ema"]
    assert float(ffhq["style_mixing"].hparams["mixing_prob"].value) == 0.9
    opts = recipes.stylegan2_ada_optimizers()
    s = opts["d_optimizer"].init({"w": torch.zeros(2)})
    assert float(opts["d_optimizer"].lr(s)) == 0.0025 and float(s["hp"]["b2"]) == 0.99


def test_stylegan2_ada_r1_is_lazy_every_16_with_weight_times_16():
    gan = _linear(recipes.stylegan2_ada(augment="translation")[1:2], d_optimizer=ganfn.optim.sgd(0.0))
    state = gan.init(0)
    noise = ganfn.tree_index(gan.draw_noise(torch.Generator().manual_seed(0), B).d, 0)
    pens = []
    for _ in range(17):
        aux = gan.d_grads(state, torch.randn(B, 2), noise)[2]
        pens.append(float(aux.penalty))
        state, _ = gan.train_step(state, torch.randn(B, 2), gan.draw_noise(torch.Generator().manual_seed(1), B))
    w = gan.init(0).d.params["weight"].double()
    assert pens[0] == pytest.approx(16 * 0.005 * float(w.square().sum()), rel=1e-5)
    assert pens[1:16] == [0.0] * 15 and pens[16] == pytest.approx(pens[0], rel=1e-5)


def _r3gan_gan(**kw):
    G, D = r3gan(16, 3, latent_dim=4, width=8, blocks=1, group_channels=4, generator=torch.Generator().manual_seed(0))
    return ganfn.GAN(G, D, latent_dim=4, loss="rpgan", parts=recipes.r3gan(batch_size=B, schedule_images=40, **kw),
                     **recipes.r3gan_optimizers(batch_size=B, schedule_images=40))


def _sg2_gan(**kw):
    G, D = stylegan2(16, 3, z_dim=4, w_dim=4, mapping_layers=1, width=4, mbstd_group=2, residual=False,
                     generator=torch.Generator().manual_seed(0))
    return ganfn.GAN(G, D, latent_dim=G.latent_dim, loss="non_saturating",
                     parts=recipes.stylegan2_ada(batch_size=B, r1_every=2, z_dims=G.z_dim, num_ws=G.num_ws, **kw),
                     **recipes.stylegan2_ada_optimizers())


CASES = {"r3gan": (_r3gan_gan, [{"r1_weight.start": 0.2}, {"augment_p.end": 0.3, "ema_half_life.end": 8.0}]),
         "stylegan2_ada": (lambda: _sg2_gan(pl_weight=2.0, mixing_prob=0.9), [{"ada_target": 0.5}, {"pl_weight": 1.0}])}


@pytest.mark.parametrize("name", sorted(CASES))
def test_recipe_step_is_pure_and_vmapped_members_equal_single_runs(name):
    make, hps = CASES[name]
    gan = make()
    real = torch.rand(B, 3, 16, 16) * 2 - 1
    assert_pure(gan.train_step, gan.init(0), real, gan.draw_noise(torch.Generator().manual_seed(0), B),
                modules=[gan.generator, gan.discriminator])
    assert_vmap_equivalent(gan, [0, 1], steps=3, batch_size=B, hparams=hps,
                           data=lambda n, g: torch.rand(n, 3, 16, 16, generator=g) * 2 - 1)


@pytest.mark.parametrize("name", sorted(CASES))
def test_recipe_resumes_bit_identically(name, tmp_path):
    gan = CASES[name][0]()
    rng, data = torch.Generator().manual_seed(0), torch.Generator().manual_seed(1)
    batches = [(torch.rand(B, 3, 16, 16, generator=data) * 2 - 1, gan.draw_noise(rng, B)) for _ in range(3)]
    assert_resumes_bit_identically(gan, batches, 2, tmp_path / "ck.pt")


@pytest.mark.parametrize("call", [
    lambda: recipes.r3gan(gamma=(0.05,)), lambda: recipes.r3gan(gamma="ab"), lambda: recipes.r3gan(batch_size=0),
    lambda: recipes.r3gan(schedule_images=0), lambda: recipes.r3gan(gamma=(-1.0, 0.0)),
    lambda: recipes.r3gan(augment_p=(0.0, 1.5)), lambda: recipes.r3gan(ema_half_life_images=0),
    lambda: recipes.r3gan_optimizers(beta2=(0.9, 1.0)),
    lambda: recipes.r3gan_optimizers(lr=(1e-4,)), lambda: recipes.stylegan2_ada(r1_every=0),
    lambda: recipes.stylegan2_ada(ema_kimg=0), lambda: recipes.stylegan2_ada(batch_size=2.5),
    lambda: recipes.stylegan2_ada(ada_target=2.0), lambda: recipes.stylegan2_ada(ema_rampup=-0.1),
    lambda: recipes.stylegan2_ada(pl_weight=2.0, pl_every=0), lambda: recipes.stylegan2_ada(mixing_prob=0.9, z_dims=4),
])
def test_bad_recipe_arguments_are_refused(call):
    with pytest.raises(ValueError):
        call()

"""A part's declared scalars (``Part.scalars``): read from its state after each
step, reported as step metrics ``"<part>/<key>"``, and logged by ``fit`` to the
console, ``metrics.json`` and TensorBoard without the loop knowing the part."""
from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import ganfn
from ganfn import ensemble, models, parts
from ganfn.loop import fit
from ganfn.parts import Part, PartError

torch.set_num_threads(1)
B = 6


def _counter(name: str = "counter", scalars=None) -> Part:
    """A part that counts D updates in its state and declares the count a scalar."""

    def after_d(params, ctx, aux):
        return params, {"n": ctx.state["n"] + 1}

    return Part(name, init=lambda ctx: {"n": torch.zeros((), dtype=torch.float64)}, after_d=after_d,
                scalars=scalars or (lambda ctx: {"updates": ctx.state["n"]}))


def _image_gan(*ps, **kw):
    G = models.DCGANGenerator(4, size=8, channels=1, width=4, norm="none")
    D = models.DCGANDiscriminator(size=8, channels=1, width=4, norm="none")
    return ganfn.GAN(G, D, latent_dim=4, loss="non_saturating", parts=list(ps), **kw)


def _real(seed=0, n=B):
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed + 50)) * 2 - 1


@settings(max_examples=6, deadline=None)
@given(n_critic=st.integers(1, 3), steps=st.integers(1, 3))
def test_declared_scalar_is_the_state_after_the_step(n_critic, steps):
    G, D, latent = models.build("mlp", (2,), hidden=8, depth=1)
    gan = ganfn.GAN(G, D, latent_dim=latent, n_critic=n_critic, parts=[_counter("c2"), _counter()])
    state, rng = gan.init(0), torch.Generator().manual_seed(1)
    for _ in range(steps):
        real = torch.randn(n_critic, 4, 2, generator=rng) if n_critic > 1 else torch.randn(4, 2, generator=rng)
        state, m = gan.train_step(state, real, gan.draw_noise(rng, 4))
        for name in ("counter", "c2"):
            assert torch.equal(m[f"{name}/updates"], state.parts[name]["n"])
    assert float(m["counter/updates"]) == n_critic * steps
    assert gan.scalars(state).keys() == {"counter/updates", "c2/updates"}


@settings(max_examples=5, deadline=None)
@given(p0=st.floats(0.0, 1.0), speed=st.floats(20.0, 500.0), seed=st.integers(0, 50))
def test_ada_reports_its_p_after_every_step_single_and_stacked(p0, speed, seed):
    gan = _image_gan(parts.ada("translation", interval=1, speed_images=speed, p=p0))
    state = gan.init(seed)
    rng = torch.Generator().manual_seed(seed)
    new, m = gan.train_step(state, _real(seed), gan.draw_noise(rng, B))
    assert torch.equal(m["ada/p"], new.parts["ada"]["p"])
    assert float(m["ada/p"]) != p0 or p0 in (0.0, 1.0)  # one adjustment per update: p moved (or sits at a bound)
    stacked = ensemble.init_many(gan, [seed, seed + 1])
    step = ensemble.make_step(gan)
    new_s, ms = step(stacked, _real(seed), ensemble.draw_noise_many(gan, ensemble.rngs([1, 2]), B))
    assert ms["ada/p"].shape == (2,) and torch.equal(ms["ada/p"], new_s.parts["ada"]["p"])


@pytest.mark.parametrize("bad", [lambda ctx: {"n": torch.zeros(3)}, lambda ctx: {"n": 1.0},
                                 lambda ctx: torch.zeros(())],
                         ids=["not-0d", "not-a-tensor", "not-a-dict"])
def test_a_scalars_hook_that_breaks_the_protocol_is_named(bad):
    G, D, latent = models.build("mlp", (2,), hidden=8, depth=1)
    gan = ganfn.GAN(G, D, latent_dim=latent, parts=[_counter("mine", scalars=bad)])
    state = gan.init(0)
    with pytest.raises(PartError, match="part 'mine': scalars must return a dict of 0-d tensors"):
        gan.train_step(state, torch.randn(4, 2), gan.draw_noise(torch.Generator().manual_seed(0), 4))


def test_scalars_must_be_a_function():
    with pytest.raises(TypeError, match="scalars must be a function"):
        ganfn.parts.check_part(Part("x", scalars=1.0))


def test_fit_logs_ada_p_to_console_metrics_json_and_tensorboard(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    lines: list[str] = []
    gan = _image_gan(parts.ada("translation", interval=1, speed_images=30.0, p=0.0))
    images = torch.rand(32, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    state, _ = fit(gan, images, steps=4, batch_size=B, run_dir=tmp_path, log_every=1, eval_every=2,
                      progress=False, print_fn=lines.append)
    doc = json.loads((tmp_path / "metrics.json").read_text())
    ps = [r["ada/p"] for r in doc["train"]]
    assert len(ps) == 4 and ps[-1] == pytest.approx(float(state.parts["ada"]["p"]))
    assert any(line.startswith("step 2/4") and "ada/p " in line for line in lines), lines
    acc = EventAccumulator(str(tmp_path / "tb"), size_guidance={"scalars": 0})
    acc.Reload()
    logged = [e.value for e in acc.Scalars("train/ada/p")]
    assert logged == pytest.approx(ps)

"""fit(): bit-identical resume (single and stacked), divergence handling, early
stopping, balancing schedules, mixed precision."""
import math

import pytest
import torch
from conftest import NaNAfter
from hypothesis import given, settings
from hypothesis import strategies as st

import ganfn
from ganfn import data, losses, models, parts, penalties, recipes
from ganfn.loop import Evaluator, fit
from ganfn.parts import instance_noise_level
from ganfn.tree import leaves

torch.set_num_threads(1)
QUIET = dict(progress=False, print_fn=lambda s: None)


def _gan(**kw):
    G, D, latent = models.build("mlp", (2,), hidden=16, depth=1)
    return ganfn.GAN(G, D, latent_dim=latent, **kw)


def _digits_gan(**kw):
    G, D, latent = models.build("mlp", (1, 8, 8), hidden=16, depth=1, latent_dim=8)
    return ganfn.GAN(G, D, latent_dim=latent, **kw)


def _same(a, b):
    la, lb = leaves(a), leaves(b)
    assert len(la) == len(lb)
    return all(torch.equal(x, y) for x, y in zip(la, lb, strict=True))


def _strip(history):
    timings = ("wall_time_s", "steps_per_s", "steps_run", "first_step_s")
    return {k: v for k, v in history.items() if k not in timings}


@pytest.mark.parametrize("stacked", [False, True])
def test_resume_is_bit_identical(tmp_path, stacked):
    # Tensor data (digits: epochs of a seeded permutation, 1400 samples / 200 per batch
    # crosses an epoch boundary) plus penalty noise, replay draws and instance noise.
    x = data.digits("train", 8)
    gan = _digits_gan(parts=recipes.classic(penalties=[penalties.r1()], instance_noise=0.1, replay_size=32))
    kw = dict(steps=10, batch_size=200, log_every=1, eval_every=3, **QUIET,
              evaluator=Evaluator(lambda s: {"m": float(s.mean())}, "m", n_samples=16))
    if stacked:
        kw.update(seeds=[3, 4], hparams=[{"lr_d": 1e-3}, {"lr_d": 3e-4}])
    else:
        kw.update(seed=3)
    full, hist_full = fit(gan, x, run_dir=tmp_path / "full", checkpoint_every=None, **kw)
    kw_half = {**kw, "steps": 4}
    fit(gan, x, run_dir=tmp_path / "half", checkpoint_every=None, **kw_half)
    resumed, hist_res = fit(gan, x, run_dir=tmp_path / "half", resume=True, checkpoint_every=None, **kw)
    assert int(resumed.step.reshape(-1)[0]) == 10
    assert _same(full, resumed)
    assert _strip(hist_full) == _strip(hist_res)
    # ...and a run that did not resume differs (the comparison can fail).
    other, _ = fit(gan, x, run_dir=tmp_path / "other", checkpoint_every=None, data_seed=99, **kw)
    assert not _same(full, other)


def test_resume_from_sampler_data_and_explicit_path(tmp_path):
    gan = _gan(parts=recipes.wgan_gp(), n_critic=2)
    kw = dict(steps=6, batch_size=16, **QUIET)
    full, _ = fit(gan, data.ring8, **kw)
    fit(gan, data.ring8, run_dir=tmp_path, checkpoint_every=2, **{**kw, "steps": 5}, keep=10)
    resumed, _ = fit(gan, data.ring8, resume=tmp_path / "checkpoints" / "ckpt-00000002.pt", **kw)
    assert _same(full, resumed)


def test_nonfinite_stop_rollback_raise(tmp_path):
    gan = _gan()
    ok, _ = fit(gan, data.ring8, steps=5, batch_size=8, **QUIET)
    st, hist = fit(gan, NaNAfter(5), steps=10, batch_size=8, on_nonfinite="stop", **QUIET)
    assert _same(st, ok) and hist["diverged_at"] == 5 and "non-finite" in hist["stopped"]
    at3, _ = fit(gan, data.ring8, steps=3, batch_size=8, **QUIET)
    st, hist = fit(gan, NaNAfter(5), steps=10, batch_size=8, run_dir=tmp_path, checkpoint_every=3,
                   on_nonfinite="rollback", **QUIET)
    assert _same(st, at3) and "rolled back to checkpoint step 3" in hist["stopped"]
    with pytest.raises(ganfn.NonFiniteLossError, match="step 5"):
        fit(gan, NaNAfter(5), steps=10, batch_size=8, on_nonfinite="raise", **QUIET)


def test_stacked_run_stops_only_when_every_member_diverged():
    gan = _gan()
    st, hist = fit(gan, NaNAfter(2), steps=10, batch_size=8, seeds=[0, 1], **QUIET)
    assert hist["stopped"] == "all members diverged" and hist["diverged_at"] == [2, 2]
    assert all(torch.isfinite(t).all() for t in leaves(st.g.params))  # frozen at the last finite state


@settings(max_examples=4, deadline=None)
@given(patience=st.integers(1, 3), every=st.integers(1, 3))
def test_early_stopping_after_patience_evaluations(patience, every):
    gan = _gan()
    flat = Evaluator(lambda s: {"q": 1.0}, "q", n_samples=8)
    _, hist = fit(gan, data.ring8, steps=100, batch_size=8, evaluator=flat, eval_every=every, patience=patience,
                  **QUIET)
    # The initial evaluation sets the best; evaluation k after it is the k-th without improvement.
    assert hist["steps_run"] == every * patience
    assert "no improvement" in hist["stopped"]
    improving = Evaluator(lambda s, c=[0]: {"q": float(c.__setitem__(0, c[0] - 1) or c[0])}, "q", n_samples=8)
    _, hist = fit(gan, data.ring8, steps=6, batch_size=8, evaluator=improving, eval_every=1, patience=1, **QUIET)
    assert hist["steps_run"] == 6 and hist["stopped"] == "steps"


# ---------------------------------------------------------------------------------------- balancing


def test_update_frequencies_n_critic_n_gen():
    gan = _gan(n_critic=3, n_gen=2)
    st, _ = fit(gan, data.ring8, steps=4, batch_size=8, **QUIET)
    assert int(st.d.opt["count"]) == 12 and int(st.g.opt["count"]) == 8


@pytest.mark.parametrize("thr", [0.5, 0.8])
def test_d_skip_accuracy_skips_exactly_when_d_is_too_accurate(thr):
    gan = _gan(parts=[parts.balance(d_above=thr)])
    st, hist = fit(gan, data.ring8, steps=30, batch_size=8, log_every=1, **QUIET)
    recs = hist["train"]
    for r in recs:
        acc = 0.5 * (r["d_acc_real"] + r["d_acc_fake"])
        assert r["d_skipped"] == float(acc > thr)
    skipped = sum(r["d_skipped"] for r in recs)
    assert int(st.d.opt["count"]) == 30 - skipped
    assert int(st.g.opt["count"]) == 30


def test_g_skip_accuracy_skips_exactly_when_d_is_weak():
    gan = _gan(parts=[parts.balance(g_below=0.6)])
    st, hist = fit(gan, data.ring8, steps=30, batch_size=8, log_every=1, **QUIET)
    recs = hist["train"]
    for r in recs:
        assert r["g_skipped"] == float(0.5 * (r["d_acc_real"] + r["d_acc_fake"]) < 0.6)
    assert int(st.g.opt["count"]) == 30 - sum(r["g_skipped"] for r in recs)
    assert 0 < sum(r["g_skipped"] for r in recs)  # an untrained D is weak at first


def test_replay_buffer_fills_and_changes_training():
    gan = _gan(parts=[parts.replay(20, 0.5)])
    st, _ = fit(gan, data.ring8, steps=5, batch_size=8, **QUIET)
    assert int(st.parts["replay"]["count"]) == 5 * 8
    plain, _ = fit(_gan(), data.ring8, steps=5, batch_size=8, **QUIET)
    assert not torch.equal(leaves(st.d.params)[0], leaves(plain.d.params)[0])


@settings(max_examples=10, deadline=None)
@given(base=st.floats(0.01, 2.0), step=st.integers(0, 50), k=st.integers(1, 40))
def test_anneal_instance_noise_is_linear(base, step, k):
    gan = _gan(parts=[parts.instance_noise(base, anneal_steps=k)])
    s = gan.init(0)
    out = instance_noise_level(s.hparams, step)
    want = base * max(0.0, 1 - step / k)
    assert math.isclose(float(out), want, rel_tol=1e-9, abs_tol=1e-12)
    assert float(s.hparams["instance_noise"]) == pytest.approx(base)  # input untouched


def test_fit_anneals_instance_noise_and_label_smoothing_is_in_state():
    gan = _gan(parts=[parts.instance_noise(0.5, anneal_steps=8)], loss=losses.bce(real_label=0.9))
    st, _ = fit(gan, data.ring8, steps=4, batch_size=8, **QUIET)
    # The last step (index 3) ran with 0.5 * (1 - 3/8).
    assert float(instance_noise_level(st.hparams, st.step - 1)) == pytest.approx(0.5 * (1 - 3 / 8))
    assert float(st.hparams["real_label"]) == pytest.approx(0.9)
    with pytest.raises(ValueError, match="instance_noise > 0"):
        _gan(parts=recipes.classic(instance_noise_anneal=8))


def test_bf16_autocast_keeps_fp32_state():
    gan = _gan()
    st, hist = fit(gan, data.ring8, steps=3, batch_size=8, precision="bf16", log_every=1, **QUIET)
    assert all(t.dtype == torch.float32 for t in leaves(st.g.params))
    assert all(math.isfinite(r["d_loss"]) for r in hist["train"])


def test_bad_arguments_are_clear():
    gan = _gan()
    with pytest.raises(ValueError, match="precision"):
        fit(gan, data.ring8, steps=1, precision="fp8", **QUIET)
    with pytest.raises(ValueError, match="sample"):
        fit(gan, torch.zeros(10, 3), steps=1, **QUIET)
    with pytest.raises(ValueError, match="resume=True needs run_dir"):
        fit(gan, data.ring8, steps=1, resume=True, **QUIET)
    with pytest.raises(FileNotFoundError, match="no-such-run"):
        fit(gan, data.ring8, steps=1, resume="/tmp/no-such-run", **QUIET)


def test_resume_at_or_past_steps_refuses_and_writes_nothing(tmp_path):
    from ganfn.loop import FinishedRunError

    gan = _gan()
    fit(gan, data.ring8, steps=6, batch_size=16, run_dir=tmp_path, checkpoint_every=2, config={"steps": 6}, **QUIET)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    for steps in (3, 6):  # fewer steps than done, and exactly as many
        with pytest.raises(FinishedRunError,
                           match=r"at step 6 and the run was asked for \d steps: nothing was trained") as e:
            fit(gan, data.ring8, steps=steps, batch_size=16, run_dir=tmp_path, resume=True, config={"steps": steps},
                **QUIET)
        assert (e.value.step, e.value.steps) == (6, steps)
    after = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert after == before  # config.json, metrics.json, checkpoints, tb/: untouched


def test_resume_skips_a_damaged_newest_checkpoint(tmp_path):
    gan = _gan()
    fit(gan, data.ring8, steps=4, batch_size=16, run_dir=tmp_path, checkpoint_every=2, **QUIET)
    newest = tmp_path / "checkpoints" / "ckpt-00000004.pt"
    from ganfn import checkpoint as ckpt

    w = next(iter(ckpt.load(newest)["state"].d.params.values()))
    raw = bytearray(newest.read_bytes())
    at = raw.find(w.contiguous().view(torch.uint8).numpy().tobytes())
    assert at >= 0
    raw[at + 5] ^= 0x01  # one bit inside D's first weight: torch.load would read it without complaint
    newest.write_bytes(bytes(raw))
    lines = []
    with pytest.warns(RuntimeWarning, match="ckpt-00000004.pt is damaged.*ckpt-00000002.pt"):
        state, _ = fit(gan, data.ring8, steps=5, batch_size=16, run_dir=tmp_path, resume=True, progress=False,
                       print_fn=lines.append)
    assert any("resumed from" in line and "ckpt-00000002.pt" in line for line in lines)
    assert int(state.step) == 5


def test_metrics_json_is_strict_json(tmp_path):
    import json

    # The KL of mode coverage is NaN when no sample is near any mode (the untrained generator).
    ev = Evaluator(lambda s: {"m": float(s.mean()), "kl": math.nan, "inf": math.inf}, "m", n_samples=16)
    fit(_gan(), data.ring8, steps=2, batch_size=16, run_dir=tmp_path, evaluator=ev, eval_every=1,
        config={"x": math.nan}, **QUIET)
    docs = {}
    for name in ("metrics.json", "config.json"):
        text = (tmp_path / name).read_text()
        docs[name] = json.loads(text, parse_constant=lambda c, name=name: pytest.fail(
            f"{name} holds {c}, which strict JSON forbids"))
        assert "NaN" not in text and "Infinity" not in text
    doc = docs["metrics.json"]
    assert docs["config.json"] == {"x": None}
    assert doc["final"]["figures"][0]["kl"] is None and doc["final"]["figures"][0]["inf"] is None


def test_stacked_sample_panels_are_labelled(tmp_path):
    from PIL import Image

    gan = _gan()
    fit(gan, data.ring8, steps=2, batch_size=16, run_dir=tmp_path, seeds=[5, 6],
        hparams=[{"lr_d": 1e-3}, {"lr_d": 3e-4}], **QUIET)
    plain = Image.open(tmp_path / "samples_member00.png")
    ref_h = 320  # scatter_image's size: the caption band sits above it
    assert plain.height > ref_h
    from ganfn.loop_actions import member_labels
    from ganfn.loop_setup import setup

    run = setup(gan, data.ring8, steps=2, seeds=[5, 6], hparams=[{"lr_d": 1e-3}, {"lr_d": 3e-4}])
    assert member_labels(run) == ["member 0: seed 5, lr_d=0.001", "member 1: seed 6, lr_d=0.0003"]


def test_default_print_goes_through_tqdm_and_flushes(monkeypatch):
    import io
    import sys

    from ganfn import loop

    class Spy(io.StringIO):
        flushed = 0

        def flush(self):
            Spy.flushed += 1
            super().flush()

    out = Spy()
    monkeypatch.setattr(sys, "stdout", out)
    calls = []
    monkeypatch.setattr(loop.tqdm, "write", lambda s, file=None, **k: (calls.append(s), file.write(s + "\n")))
    loop.default_print("step 5 | modes 8")
    assert calls == ["step 5 | modes 8"] and out.getvalue() == "step 5 | modes 8\n" and Spy.flushed >= 1


def test_presets_do_not_import_the_training_loop():
    import subprocess
    import sys

    code = ("import sys, ganfn.presets; "
            "assert 'ganfn.loop' not in sys.modules, sorted(m for m in sys.modules if 'ganfn' in m)")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_stacked_panels_with_captions_of_different_lengths_tile(tmp_path):
    # Long and short captions wrap to different heights; the mosaic still tiles.
    hps = [{"lr_d": 1e-4, "lr_g": 1e-4, "gp_weight": 1.0, "real_label": 0.9}, {"lr_d": 1e-3}]
    fit(_digits_gan(parts=recipes.wgan_gp()), data.digits("train", 8), steps=2, batch_size=32, run_dir=tmp_path,
        seeds=[0, 1], hparams=hps, **QUIET)
    assert (tmp_path / "samples.png").is_file() and (tmp_path / "samples_member01.png").is_file()


def test_standing_stats_reach_the_figures_and_bad_values_are_refused(tmp_path):
    # With standing_stats the run's figures are those of samples drawn with
    # recomputed BatchNorm statistics for the EMA generator, not the live G's.
    from torch import nn

    from ganfn.evaluation import evaluate_members

    G = nn.Sequential(nn.Linear(3, 5, bias=False), nn.BatchNorm1d(5), nn.Tanh(), nn.Linear(5, 2))
    gan = ganfn.GAN(G, nn.Sequential(nn.Linear(2, 8), nn.LeakyReLU(0.2), nn.Linear(8, 1)), latent_dim=3,
                    parts=[parts.ema(0.5)])
    ev = Evaluator(lambda s: {"m": float(s.mean())}, "m", n_samples=16)
    sampler = lambda n, g: torch.randn(n, 2, generator=g) + 3
    state, hist = fit(gan, sampler, steps=6, batch_size=8, eval_every=3, evaluator=ev, standing_stats=2, **QUIET)
    z = gan.draw_latents(torch.Generator().manual_seed(0), 16)
    with_standing = evaluate_members(ev, gan, state, z, False, standing=2)[0]["m"]
    live = evaluate_members(ev, gan, state, z, False)[0]["m"]
    assert with_standing != live
    _, hist_live = fit(gan, sampler, steps=6, batch_size=8, eval_every=3, evaluator=ev, **QUIET)
    assert hist["final"]["figures"] != hist_live["final"]["figures"]
    with pytest.raises(ValueError, match="standing_stats must be an int >= 0"):
        fit(gan, sampler, steps=6, batch_size=8, standing_stats=-1, run_dir=tmp_path / "bad", **QUIET)
    assert not (tmp_path / "bad").exists()

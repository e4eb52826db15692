"""PBT and successive halving inside fit() and `ganfn sweep`: resume, outputs, errors."""
import json

import pytest
import torch
from conftest import NaNAfter

import ganfn
import ganfn.population
from ganfn import cli, data, figures, models
from ganfn.lineage import Schedule
from ganfn.loop import Evaluator, fit
from ganfn.tree import leaves

torch.set_num_threads(1)
QUIET = dict(progress=False, print_fn=lambda s: None)


def _gan():
    G, D, latent = models.build("mlp", (2,), hidden=16, depth=1)
    return ganfn.GAN(G, D, latent_dim=latent, loss="hinge", parts=[ganfn.parts.ema(0.9)])


def _schedule(refill=None):
    return Schedule({"lr_d": (1e-4, 1e-2), "lr_g": (1e-4, 1e-2)}, every=2, fraction=0.25, halving_at=[4],
                    metrics=(ganfn.population.Metric("m", True),), seed=1, refill=refill)


def _evaluator():
    # A figure that depends on the parameters, so the ranking changes as training goes.
    return Evaluator(lambda s: {"m": float(s.std())}, "m", higher_is_better=True, n_samples=32)


KW = dict(steps=8, batch_size=16, eval_every=2, log_every=2, seeds=list(range(8)),
          hparams=[{"lr_d": 1e-3 * (1 + i % 4), "lr_g": 1e-3} for i in range(8)], **QUIET)


def _same(a, b):
    return all(torch.equal(x, y) for x, y in zip(leaves(a), leaves(b), strict=True))


def test_pbt_run_resumes_bit_identically_with_its_lineage(tmp_path):
    full, hist = fit(_gan(), data.ring8, evaluator=_evaluator(), population=_schedule(), run_dir=tmp_path / "full",
                     checkpoint_every=4, keep=10, **KW)
    lin = hist["population"]
    assert any(e["kind"] == "copy" for e in lin["events"]) and len(lin["retired"]) == 4
    assert json.loads((tmp_path / "full" / "metrics.json").read_text())["population"] == lin
    # Interrupted after the step-4 halving and PBT round: resume from that checkpoint.
    resumed, hist_r = fit(_gan(), data.ring8, evaluator=_evaluator(), population=_schedule(),
                          resume=tmp_path / "full" / "checkpoints" / "ckpt-00000004.pt", **KW)
    assert _same(full, resumed)
    assert hist_r["population"] == lin
    # Retired members were frozen at step 4 and never changed again.
    assert all(int(full.diverged_at[i]) == 4 for i in lin["retired"])
    # Without PBT the run differs (the comparison can fail).
    plain, _ = fit(_gan(), data.ring8, evaluator=_evaluator(), **KW)
    assert not _same(full, plain)


def test_pbt_run_with_halving_refill_resumes_bit_identically(tmp_path):
    gan = _gan()
    refill = lambda seeds: ganfn.ensemble.init_many(gan, seeds)
    full, hist = fit(gan, data.ring8, evaluator=_evaluator(), population=_schedule(refill), run_dir=tmp_path,
                     checkpoint_every=4, keep=10, **KW)
    lin = hist["population"]
    assert [e["kind"] for e in lin["events"]].count("refill") == 4 and lin["retired"] == []
    resumed, hist_r = fit(gan, data.ring8, evaluator=_evaluator(), population=_schedule(refill),
                          resume=tmp_path / "checkpoints" / "ckpt-00000004.pt", **KW)
    assert _same(full, resumed) and hist_r["population"] == lin


def test_tensorboard_shows_hyperparameters_over_time(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    fit(_gan(), data.ring8, evaluator=_evaluator(), population=_schedule(), run_dir=tmp_path, checkpoint_every=None,
        **{**KW, "steps": 4})
    acc = EventAccumulator(str(tmp_path / "tb" / "member_00"))
    acc.Reload()
    assert [e.step for e in acc.Scalars("hparams/lr_d")] == [0, 2, 4][: len(acc.Scalars("hparams/lr_d"))]
    assert len(acc.Scalars("hparams/lr_d")) >= 2


def test_fit_rejects_a_population_without_members_or_scores():
    with pytest.raises(ValueError, match="stacked run"):
        fit(_gan(), data.ring8, steps=2, population=_schedule(), evaluator=_evaluator(), **QUIET)
    with pytest.raises(ValueError, match="evaluator"):
        fit(_gan(), data.ring8, population=_schedule(), **{**KW, "steps": 2})
    bad = Schedule({"lr_x": (1e-4, 1e-2)}, every=2)
    with pytest.raises(ValueError, match="unknown hyperparameter 'lr_x'"):
        fit(_gan(), data.ring8, evaluator=_evaluator(), population=bad, **{**KW, "steps": 2})


TINY = ["--steps", "4", "--batch-size", "16", "--n-eval", "200", "--eval-every", "2", "--log-every", "1",
        "--no-progress",
        "--data", "ring8", "--model", "mlp"]


def test_sweep_with_pbt_and_halving_prints_schedules_and_draws_figures(tmp_path, capsys):
    code = cli.main(["sweep", "--grid", "lr_d=1e-4,1e-3;lr_g=1e-4,2e-4", "--pbt-every", "2", "--pbt-fraction", "0.25",
                     "--halving-at", "2", "--halving-refill", "--run-dir", str(tmp_path), *TINY])
    out = capsys.readouterr().out
    assert code == 0
    header = next(line for line in out.splitlines() if line.startswith("| member"))
    assert "schedule" in header and "lineage" in header
    assert "halved@2 refill@2" in out and "lr_d" in out
    assert (tmp_path / "population.png").stat().st_size > 0 and (tmp_path / "sweep_heatmap.png").stat().st_size > 0
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["population"]["retired"] == [] and [e["kind"] for e in m["population"]["events"]].count("refill") == 2


@pytest.mark.parametrize("extra, match", [
    (["--pbt-every", "2", "--pbt-fraction", "0.7"], "fraction"),
    (["--pbt-every", "2", "--pbt-space", "lr_d=1e-2,1e-4"], "inverted"),
    (["--pbt-every", "2", "--pbt-space", "lr_d=1e-4"], "two values"),
    (["--pbt-every", "2", "--pbt-space", "lr_q=1e-4,1e-3"], "unknown hyperparameter 'lr_q'"),
    (["--halving-at", "0"], "halving"),
    (["--pbt-every", "2", "--pbt-metric", "sharpness"], "direction unknown"),
    (["--pbt-every", "2", "--halving-refill"], "give --halving-at too"),
])
def test_sweep_population_options_give_clear_errors(tmp_path, capsys, extra, match):
    with pytest.raises(SystemExit) as e:
        cli.main(["sweep", "--grid", "lr_d=1e-4,1e-3", "--run-dir", str(tmp_path), *TINY, *extra])
    assert e.value.code == 2
    assert match in capsys.readouterr().err


def test_train_has_no_population_options(capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "--pbt-every", "2"])
    assert "unrecognized arguments" in capsys.readouterr().err


def test_population_curves_figure(tmp_path):
    evals = [{"step": s, "figures": [{"m": s * 0.1 + i} for i in range(3)]} for s in (0, 2, 4)]
    events = [{"step": 2, "kind": "copy", "member": 0, "source": 2},
              {"step": 2, "kind": "halved", "member": 1, "source": None}]
    assert figures.population_curves(evals, "m", tmp_path / "c.png", events=events).stat().st_size > 0
    with pytest.raises(ValueError, match="at least one"):
        figures.population_curves([], "m", tmp_path / "d.png")


def test_a_stop_after_halving_says_the_halved_members_did_not_diverge():
    said = []
    _, hist = fit(_gan(), NaNAfter(6), evaluator=_evaluator(), population=_schedule(),
                  **{**KW, "print_fn": said.append})
    assert hist["stopped"] == "all members diverged or were halved" and hist["steps_run"] == 7
    assert sorted(hist["halved_at"]) == [-1] * 4 + [4] * 4
    assert all((d == 6) != (h == 4) for d, h in zip(hist["diverged_at"], hist["halved_at"], strict=True))
    assert any("every member still training (4 halved earlier) has diverged" in line for line in said)

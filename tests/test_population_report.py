"""What a population run reports: halved members as halved (not diverged), the
hyperparameters each member ends with beside its schedule, and a ranking whose
ties on modes are broken by the high-quality fraction and then the KL."""
import json
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import ganfn
from ganfn import cli, data, ensemble, models, population, sweep
from ganfn.lineage import Lineage, Schedule
from ganfn.loop import Evaluator, fit

torch.set_num_threads(1)
QUIET = dict(progress=False, print_fn=lambda s: None)


def _gan():
    G, D, latent = models.build("mlp", (2,), hidden=16, depth=1)
    return ganfn.GAN(G, D, latent_dim=latent, loss="hinge")


def _evaluator():
    return Evaluator(lambda s: {"m": float(s.std())}, "m", higher_is_better=True, n_samples=32)


def test_fit_records_halved_members_as_halved_not_diverged(tmp_path):
    sched = Schedule({"lr_d": (1e-4, 1e-2)}, halving_at=[2], metrics=(population.Metric("m", True),), seed=0)
    state, hist = fit(_gan(), data.ring8, steps=4, batch_size=16, eval_every=2, log_every=1, seeds=[0, 1, 2, 3],
                      hparams=[{"lr_d": 1e-3 * (i + 1)} for i in range(4)], evaluator=_evaluator(), population=sched,
                      run_dir=tmp_path, **QUIET)
    retired = hist["population"]["retired"]
    assert len(retired) == 2
    assert hist["halved_at"] == [2 if i in retired else -1 for i in range(4)]
    assert hist["diverged_at"] == [-1] * 4
    # The state still freezes them through diverged_at: the report is what tells the two apart.
    assert [int(x) for x in state.diverged_at] == [2 if i in retired else -1 for i in range(4)]
    doc = json.loads((tmp_path / "metrics.json").read_text())
    assert doc["halved_at"] == hist["halved_at"] and doc["diverged_at"] == [-1] * 4
    last = doc["train"][-1]
    assert last["diverged"] == [0.0] * 4 and last["halved"] == [float(i in retired) for i in range(4)]


def test_a_diverged_member_that_halving_retires_stays_diverged():
    gan = _gan()
    state = ensemble.init_many(gan, [0, 1, 2, 3])
    state = state._replace(step=torch.full((4,), 3))
    state = ensemble.freeze(state, torch.tensor([True, False, False, False]))  # member 0 diverged at step 3
    state = state._replace(step=torch.full((4,), 5))
    new, rep = population.halve(state, torch.tensor([9.0, 1.0, 3.0, 2.0]))
    assert rep["was_frozen"].tolist() == [True, False, False, False]
    lin = Lineage.start(0, {"lr_d": torch.ones(4)})
    lin.record_halving(5, rep)
    assert sorted(lin.retired) == [0, 1] and [e["member"] for e in lin.events] == [1]
    diverged, halved = lin.split_frozen([float(x) for x in new.diverged_at])
    assert diverged == [3.0, -1, -1, -1] and halved == [-1, 5, -1, -1]


def test_a_refilled_slot_is_no_longer_halved():
    lin = Lineage.start(0, {"lr_d": torch.ones(3)})
    lin.record_halving(4, {"frozen": torch.tensor([True, False, True])})
    assert lin.halved_at(3) == [4, -1, 4]
    lin.record_refill(4, [2], {"lr_d": torch.tensor([0.5])})
    assert lin.halved_at(3) == [4, -1, -1]
    assert lin.final_values(2) == {"lr_d": 0.5} and lin.final_values(1) == {"lr_d": 1.0}


TINY = ["--steps", "4", "--batch-size", "16", "--n-eval", "200", "--eval-every", "2", "--log-every", "1",
        "--no-progress", "--data", "ring8", "--model", "mlp"]


def _table(out: str) -> list[dict[str, str]]:
    lines = [line for line in out.splitlines() if line.startswith("| ")]
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    return [dict(zip(head, (c.strip() for c in line.strip("|").split("|")), strict=True))
            for line in lines[1:] if not line.startswith("| mean")]


def test_sweep_table_shows_halving_and_the_values_members_end_with(tmp_path, capsys):
    code = cli.main(["sweep", "--grid", "lr_d=1e-4,1e-3;lr_g=1e-4,2e-4", "--pbt-every", "2", "--pbt-fraction", "0.5",
                     "--halving-at", "4", "--run-dir", str(tmp_path), *TINY, "--steps", "6"])
    assert code == 0
    rows = _table(capsys.readouterr().out)
    doc = json.loads((tmp_path / "metrics.json").read_text())
    lin = Lineage.from_dict(doc["population"])
    assert sorted(r["halved"] for r in rows) == ["at 4", "at 4", "no", "no"]
    assert all(r["diverged"] == "no" for r in rows)
    for r in rows:
        i = int(r["member"])
        assert float(r["lr_d (end)"]) == pytest.approx(lin.final_values(i)["lr_d"], rel=1e-3)
        assert r["schedule"] == lin.schedule_text(i)
    # PBT changed some member's values: the end column is not the starting grid.
    assert any(len(h) > 1 for h in lin.hparams)
    assert "lr_d" not in rows[0]  # the starting value is in the schedule, not in a column of its own


def _expected(rows):
    def key(i):
        m, hq, kl = rows[i]
        return tuple((1, 0.0) if math.isnan(v) else (0, v) for v in (-m, -hq, kl))

    return sorted(range(len(rows)), key=key)


figure = st.one_of(st.floats(0, 1, allow_nan=False), st.just(math.nan))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2).map(float), figure, figure), min_size=1, max_size=8))
def test_modes_ties_break_on_high_quality_then_kl_in_rank_and_table(rows):
    order = population.ranking("modes")
    assert [m.name for m in order] == ["modes", "high_quality", "kl"]
    scores, dirs = population.scores_from_figures(
        [dict(zip(["modes", "high_quality", "kl"], r, strict=True)) for r in rows], order)
    want = _expected(rows)
    assert population.rank(scores, dirs).tolist() == want
    table = sweep.rows([{} for _ in rows], [dict(zip(["modes", "high_quality", "kl"], r, strict=True)) for r in rows],
                       sort_by=[m.name for m in order], descending=[m.higher_is_better for m in order])
    assert [r["member"] for r in table] == want


def test_other_figures_rank_alone_and_bad_sort_directions_are_refused():
    assert population.ranking("FD-LeNet") == [population.Metric("FD-LeNet", False)]
    with pytest.raises(ValueError, match="2 columns but descending has 1"):
        sweep.rows([{}], [{"a": 1.0, "b": 2.0}], sort_by=["a", "b"], descending=[True])
    with pytest.raises(KeyError, match="'c' is not a column"):
        sweep.rows([{}], [{"a": 1.0}], sort_by=["a", "c"], descending=[True, False])


def test_tensorboard_hparams_record_the_values_members_end_with(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    sched = Schedule({"lr_d": (1e-4, 1e-2)}, every=2, fraction=0.5, metrics=(population.Metric("m", True),), seed=0,
                     perturb=(0.5,), resample_probability=0.0)
    _, hist = fit(_gan(), data.ring8, steps=4, batch_size=16, eval_every=2, seeds=[0, 1],
                  hparams=[{"lr_d": 1e-3}, {"lr_d": 2e-3}], evaluator=_evaluator(), population=sched, run_dir=tmp_path,
                  **QUIET)
    lin = Lineage.from_dict(hist["population"])
    copied = next(e["member"] for e in lin.events if e["kind"] == "copy")
    acc = EventAccumulator(str(tmp_path / "tb" / f"member_{copied:02d}"))
    acc.Reload()
    content = acc.summary_metadata["_hparams_/session_start_info"].plugin_data.content
    from tensorboard.plugins.hparams import plugin_data_pb2

    info = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
    assert info.hparams["lr_d_end"].number_value == pytest.approx(lin.final_values(copied)["lr_d"])
    assert info.hparams["lr_d_end"].number_value != pytest.approx(info.hparams["lr_d"].number_value)

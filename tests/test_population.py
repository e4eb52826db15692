"""Population-based training and successive halving on a stacked state."""
from __future__ import annotations

import io
import math

import optree
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

torch.set_num_threads(1)

from conftest import small_gan_modules  # noqa: E402

import ganfn  # noqa: E402
from ganfn import ensemble, tree  # noqa: E402
from ganfn import population as P  # noqa: E402
from ganfn.lineage import Lineage, Schedule  # noqa: E402

GAN = ganfn.GAN(*small_gan_modules(), latent_dim=3, loss="hinge", parts=[ganfn.penalties.r1(), ganfn.parts.ema(0.9)])
SPACE = {"lr_d": (1e-4, 1e-2), "lr_g": (1e-4, 1e-2), "r1_weight": P.Bounds(0.01, 10.0)}


def population(S: int) -> ganfn.TrainState:
    hps = [{"lr_d": 1e-3 * (1 + i % 4), "lr_g": 2e-3, "r1_weight": 1.0} for i in range(S)]
    return ensemble.init_many(GAN, list(range(S)), hps)


def trained(S: int, steps: int = 2) -> ganfn.TrainState:
    """A population after a few steps, so optimizer moments and EMA differ per member."""
    state, rngs, step = population(S), ensemble.rngs(range(S)), ensemble.make_step(GAN)
    g = torch.Generator().manual_seed(5)
    for _ in range(steps):
        state, _ = step(state, torch.randn(8, 2, generator=g), ensemble.draw_noise_many(GAN, rngs, 8))
    return state


STATES = {S: trained(S) for S in (2, 5, 8)}


def hp_leaf_ids(state, names) -> set[int]:
    # The positions among the state's leaves of the named hyperparameters'
    # tensors, found by identity through the public accessor.
    wanted = {id(t) for n, t in P.hyperparameters(state).items() if n in names}
    assert len(wanted) == len(names), "every name is a hyperparameter of the state"
    return {j for j, leaf in enumerate(leaves(state)) if id(leaf) in wanted}


def leaves(state):
    return optree.tree_leaves(state, none_is_leaf=False)


def clone(state):
    return tree.tree_map(torch.clone, state)


def same(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(leaves(a), leaves(b), strict=True))


def member(state, i):
    return tree.tree_index(state, i)


@st.composite
def rounds(draw):
    S = draw(st.sampled_from(sorted(STATES)))
    scores = draw(st.lists(st.floats(-10, 10) | st.just(math.nan), min_size=S, max_size=S))
    fraction = draw(st.floats(0.01, 0.5))
    hib = draw(st.booleans())
    seed = draw(st.integers(0, 2**31 - 1))
    return S, torch.tensor(scores, dtype=torch.float64), fraction, hib, seed


@settings(max_examples=15)
@given(rounds())
def test_exploit_copies_the_chosen_members_whole_state_bit_for_bit(r):
    S, scores, fraction, hib, seed = r
    state = STATES[S]
    before = clone(state)
    new, rep = P.exploit_explore(state, scores, torch.Generator().manual_seed(seed), space=SPACE,
                                 fraction=fraction, higher_is_better=hib)
    assert same(state, before), "exploit_explore modified its input"
    k = int(fraction * S)
    source, copied = rep["source"], rep["copied"]
    assert int(copied.sum()) == k
    order = P.rank(scores, hib)
    assert set(torch.nonzero(copied).flatten().tolist()) == set(order[S - k:].tolist()) if k else True
    assert set(source[copied].tolist()) <= set(order[:k].tolist())
    explored = hp_leaf_ids(state, SPACE)
    for j, (old_leaf, new_leaf) in enumerate(zip(leaves(state), leaves(new), strict=True)):
        if j in explored:
            continue
        # Every leaf that is not an explored hyperparameter is the source's, bit for bit.
        assert torch.equal(new_leaf, old_leaf[source]), j


@settings(max_examples=15)
@given(rounds(), st.floats(1e-5, 1e-3), st.floats(1.0, 100.0), st.floats(0, 1))
def test_explore_changes_only_declared_hyperparameters_within_bounds(r, low, ratio, p_resample):
    S, scores, fraction, hib, seed = r
    state = STATES[S]
    space = {"lr_d": (low, low * ratio)}
    new, rep = P.exploit_explore(state, scores, torch.Generator().manual_seed(seed), space=space, fraction=fraction,
                                 higher_is_better=hib, resample_probability=p_resample)
    old_hp, new_hp = P.hyperparameters(state), P.hyperparameters(new)
    src, copied = rep["source"], rep["copied"]
    for name in old_hp:
        if name == "lr_d":
            continue
        assert torch.equal(new_hp[name], old_hp[name][src]), name
    lr = new_hp["lr_d"]
    assert torch.equal(lr[~copied], old_hp["lr_d"][~copied])
    assert bool(((lr[copied] >= low) & (lr[copied] <= low * ratio)).all())
    assert torch.equal(rep["hparams"]["lr_d"], lr)
    if p_resample == 0:  # pure perturbation: x0.8 or x1.2 of the source's value, clipped
        base = old_hp["lr_d"][src][copied]
        ok = [(torch.isclose(lr[copied], (base * f).clamp(low, low * ratio))) for f in (0.8, 1.2)]
        assert bool((ok[0] | ok[1]).all())


def test_same_inputs_same_outputs_and_no_host_sync():
    state = STATES[8]
    scores = torch.arange(8.0)
    a = P.exploit_explore(state, scores, torch.Generator().manual_seed(3), space=SPACE)
    b = P.exploit_explore(state, scores, torch.Generator().manual_seed(3), space=SPACE)
    assert same(a, b)
    # On the meta device no value can be read: any host synchronisation would raise.
    meta = tree.tree_map(lambda x: x.to("meta"), state)
    new, rep = P.exploit_explore(meta, scores.to("meta"), torch.Generator().manual_seed(3), space=SPACE)
    assert rep["source"].device.type == "meta" and new.step.device.type == "meta"
    frozen, rep = P.halve(meta, scores.to("meta"))
    assert rep["frozen"].device.type == "meta"


def test_diverged_members_rank_last_and_are_replaced_by_healthy_copies():
    state = STATES[8]
    # Member 7 has the best score but diverged: it ranks last, takes a copy, comes back to life.
    state = ensemble.freeze(state, torch.arange(8) == 7)
    new, rep = P.exploit_explore(state, torch.arange(8.0), torch.Generator().manual_seed(0), space=SPACE, fraction=0.25)
    assert P.rank(torch.arange(8.0), True, last=ensemble.frozen(state))[-1] == 7
    assert bool(rep["copied"][7]) and int(rep["source"][7]) != 7
    assert not bool(ensemble.frozen(new)[7])
    assert 7 not in rep["source"][rep["copied"]].tolist()


def test_frozen_source_is_never_copied():
    state = ensemble.freeze(STATES[2], torch.tensor([True, True]))
    new, rep = P.exploit_explore(state, torch.tensor([1.0, 0.0]), torch.Generator(), space=SPACE, fraction=0.5)
    assert not bool(rep["copied"].any()) and same(new, state)


@settings(max_examples=30)
@given(st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=1, max_size=12), st.booleans(), st.data())
def test_rank_orders_best_first_nan_after_finite_and_frozen_last(values, hib, data):
    s = torch.tensor(values, dtype=torch.float64)
    last = torch.tensor(data.draw(st.lists(st.booleans(), min_size=len(values), max_size=len(values))))
    order = P.rank(s, hib, last=last)
    assert sorted(order.tolist()) == list(range(len(values)))
    key = [(bool(last[i]), math.isnan(values[i]), -values[i] if hib and not math.isnan(values[i]) else values[i])
           for i in order.tolist()]
    for a, b in zip(key, key[1:], strict=False):
        assert a[:2] <= b[:2]
        if a[:2] == b[:2] and not a[1]:
            assert a[2] <= b[2]


def test_rank_is_lexicographic_over_columns():
    s = torch.tensor([[8, 0.5], [8, 0.9], [7, 1.0], [8, 0.7]], dtype=torch.float64)
    assert P.rank(s, [True, True]).tolist() == [1, 3, 0, 2]
    assert P.rank(s, [True, False]).tolist() == [0, 3, 1, 2]


def test_halve_freezes_the_worst_half_and_frozen_members_never_change():
    state = STATES[8]
    scores = torch.tensor([5.0, 1, 7, 3, 8, 2, 6, 4])
    halved, rep = P.halve(state, scores, higher_is_better=True)
    assert torch.nonzero(rep["frozen"]).flatten().tolist() == [1, 3, 5, 7]
    assert torch.equal(ensemble.frozen(halved), rep["frozen"])
    assert torch.equal(halved.diverged_at[rep["frozen"]], state.step[rep["frozen"]])
    retired = [1, 3, 5, 7]
    # Neither training nor PBT touches a retired member again.
    step, rngs, g = ensemble.make_step(GAN), ensemble.rngs(range(8)), torch.Generator().manual_seed(1)
    s = halved
    for _ in range(2):
        s, _ = step(s, torch.randn(8, 2, generator=g), ensemble.draw_noise_many(GAN, rngs, 8))
        s, _ = P.exploit_explore(s, -scores, torch.Generator().manual_seed(2), space=SPACE, fraction=0.5,
                                 retired=retired)
    for i in retired:
        assert same(member(s, i), member(halved, i)), i
    # The next halving ranks only the four active members; a diverged one counts among the worst.
    s2, rep2 = P.halve(ensemble.freeze(halved, torch.arange(8) == 4), scores, retired=retired)
    assert torch.nonzero(rep2["frozen"]).flatten().tolist() == [0, 4]


def test_refill_puts_new_members_into_slots():
    state = ensemble.freeze(STATES[5], torch.tensor([False, True, False, True, False]))
    fresh = ensemble.init_many(GAN, [10, 11], [{"lr_d": 5e-3, "lr_g": 2e-3, "r1_weight": 1.0}] * 2)
    new = P.refill(state, [1, 3], fresh)
    for i, j in ((1, 0), (3, 1)):
        assert same(member(new, i), member(fresh, j))
    for i in (0, 2, 4):
        assert same(member(new, i), member(state, i))
    assert not bool(ensemble.frozen(new).any())
    with pytest.raises(ValueError, match="slots"):
        P.refill(state, [1, 1], fresh)
    with pytest.raises(ValueError, match="2 slots but"):
        P.refill(state, [1, 2], ensemble.init_many(GAN, [1, 2, 3]))
    other = ganfn.GAN(*small_gan_modules(), latent_dim=3, loss="hinge")
    with pytest.raises(ValueError, match="structure"):
        P.refill(state, [1, 3], ensemble.init_many(other, [1, 2]))


@pytest.mark.parametrize("kw, match", [
    (dict(fraction=0.0), "fraction"), (dict(fraction=0.6), "fraction"), (dict(fraction=-1), "fraction"),
    (dict(space={"lr_x": (1e-4, 1e-3)}), "unknown hyperparameter 'lr_x'"),
    (dict(space={"lr_d": (1e-3, 1e-4)}), "inverted"),
    (dict(space={"r1_weight": (0.0, 1.0)}), "log-uniform"),
    (dict(space={}), "at least one"),
    (dict(perturb=(0.8, -1.0)), "perturb"),
    (dict(resample_probability=1.5), "resample_probability"),
    (dict(retired=[9]), "retired"),
])
def test_bad_arguments_are_named_before_anything_changes(kw, match):
    state = STATES[5]
    args = {"space": SPACE, **kw}
    with pytest.raises(ValueError, match=match):
        P.exploit_explore(state, torch.zeros(5), torch.Generator(), **args)


def test_bad_scores_and_metrics():
    with pytest.raises(ValueError, match="shape"):
        P.exploit_explore(STATES[5], torch.zeros(4), torch.Generator(), space=SPACE)
    with pytest.raises(ValueError, match="shape"):
        P.halve(STATES[5], torch.zeros(5, 2, 1))
    with pytest.raises(ValueError, match="direction unknown"):
        P.metric("sharpness")
    assert P.metric("FD-LeNet(digits)") == P.Metric("FD-LeNet(digits)", False)
    assert P.metric("modes").higher_is_better and not P.metric("kl").higher_is_better
    with pytest.raises(ValueError, match="unknown hyperparameter"):
        P.set_hyperparameters(STATES[2], {"nope": torch.zeros(2)})


@pytest.mark.parametrize("kw, match", [
    (dict(), "needs every"), (dict(every=0), "every"), (dict(every=10, fraction=0.7), "fraction"),
    (dict(halving_at=[0]), "halving"), (dict(every=10, metrics=()), "at least one"),
    (dict(every=10, metrics=("sharpness",)), "direction unknown"),
])
def test_schedule_rejects_bad_settings(kw, match):
    with pytest.raises(ValueError, match=match):
        Schedule(SPACE, **kw)


def figures(state, t):
    """Made-up figures that depend on the state, so copies change later scores."""
    w = state.g.params[next(iter(state.g.params))].flatten(1).sum(1)
    return [{"modes": float(8 - i % 3), "high_quality": float(torch.sin(w[i] * (t + 1)))} for i in range(len(w))]


def run_schedule(state, steps, sched, stop_at=None):
    step, rngs, g = ensemble.make_step(GAN), ensemble.rngs(range(8)), torch.Generator().manual_seed(9)
    for t in range(1, steps + 1):
        real = torch.randn(8, 2, generator=g)
        state, _ = step(state, real, ensemble.draw_noise_many(GAN, rngs, 8))
        if sched.due(t):
            state = sched(t, state, figures(state, t))
        if t == stop_at:
            return state, [r.get_state() for r in rngs], g.get_state()
    return state, None, None


def test_schedule_lineage_and_resume_are_bit_identical():
    mk = lambda: Schedule(SPACE, every=2, fraction=0.25, halving_at=[3], metrics=("modes", "high_quality"), seed=4)
    a = mk()
    a.start(population(8))
    full, _, _ = run_schedule(population(8), 6, a)
    lin = a.lineage
    assert [e["kind"] for e in lin.events].count("halved") == 4 and len(lin.retired) == 4
    copies = [e for e in lin.events if e["kind"] == "copy"]
    assert copies and all(e["source"] not in lin.retired or e["step"] < 3 for e in copies)
    assert all(h[0]["step"] == 0 for h in lin.hparams)
    assert "<-" in lin.lineage_text(copies[0]["member"]) and "@" in lin.schedule_text(copies[0]["member"])
    # Interrupted at step 4, its schedule state round-tripped through a weights_only checkpoint, then continued.
    b = mk()
    b.start(population(8))
    mid, rng_states, data_state = run_schedule(population(8), 6, b, stop_at=4)
    buf = io.BytesIO()
    torch.save(b.state_dict(), buf)
    buf.seek(0)
    c = mk()
    c.load_state_dict(torch.load(buf, weights_only=True))
    step, rngs, g = ensemble.make_step(GAN), ensemble.rngs(range(8)), torch.Generator()
    for r, s in zip(rngs, rng_states, strict=True):
        r.set_state(s)
    g.set_state(data_state)
    state = mid
    for t in range(5, 7):
        state, _ = step(state, torch.randn(8, 2, generator=g), ensemble.draw_noise_many(GAN, rngs, 8))
        if c.due(t):
            state = c(t, state, figures(state, t))
    assert same(state, full)
    assert c.lineage.to_dict() == lin.to_dict()


def test_lineage_records_refills_and_round_trips():
    lin = Lineage.start(0, {"lr_d": torch.tensor([1e-3, 2e-3, 3e-3], dtype=torch.float64)})
    lin.record_halving(10, {"frozen": torch.tensor([False, True, False])})
    assert lin.retired == [1]
    lin.record_refill(10, [1], {"lr_d": torch.tensor([5e-3], dtype=torch.float64)})
    assert lin.retired == [] and lin.hparams[1][-1] == {"step": 10, "lr_d": 5e-3}
    assert Lineage.from_dict(lin.to_dict()).to_dict() == lin.to_dict()
    assert lin.lineage_text(1) == "halved@10 refill@10" and lin.lineage_text(0) == "-"


def test_halving_refill_puts_fresh_members_with_new_configurations_into_freed_slots():
    state = STATES[8]
    made = []

    def init(seeds):
        made.append(list(seeds))
        return ensemble.init_many(GAN, seeds)

    sched = Schedule(SPACE, every=2, halving_at=[2], fraction=0.25, metrics=("modes",), seed=3, refill=init)
    sched.start(state)
    scores = [{"modes": float(m)} for m in (5, 1, 7, 3, 8, 2, 6, 4)]
    new = sched(2, state, scores)
    slots = [1, 3, 5, 7]
    assert len(made) == 1 and len(made[0]) == 4
    assert not bool(ensemble.frozen(new).any()) and sched.lineage.retired == []
    assert [e["member"] for e in sched.lineage.events if e["kind"] == "refill"] == slots
    old_hp, new_hp = P.hyperparameters(state), P.hyperparameters(new)
    fresh = ensemble.init_many(GAN, made[0])
    for j, i in enumerate(slots):
        # Parameters and optimizer moments are the fresh member's; explored hyperparameters are new draws in bounds...
        assert torch.equal(new.g.params["0.weight"][i], fresh.g.params["0.weight"][j])
        assert int(new.step[i]) == 0
        for name, b in SPACE.items():
            assert b[0] <= float(new_hp[name][i]) <= b[1]
        # ...the others are the slot's old member's (not the GAN's defaults).
        assert float(new_hp["b1_d"][i]) == float(old_hp["b1_d"][i])
    # The PBT round at the same step left the refilled slots alone (they have no score yet).
    copies = [e for e in sched.lineage.events if e["kind"] == "copy"]
    assert copies and not any(e["member"] in slots or e["source"] in slots for e in copies)
    with pytest.raises(TypeError, match="refill"):
        Schedule(SPACE, halving_at=[2], refill="yes")

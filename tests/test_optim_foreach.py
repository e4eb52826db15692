"""The eager foreach fast path of ganfn.optim gives the per-leaf path's numbers bit for bit."""
from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ganfn import optim

torch.set_num_threads(1)


def _tree(gen: torch.Generator, shapes, dtype):
    return {f"w{i}": torch.randn(tuple(s), generator=gen, dtype=dtype) for i, s in enumerate(shapes)}


@settings(deadline=None, max_examples=12)
@given(
    shapes=st.lists(st.lists(st.integers(1, 5), min_size=1, max_size=3), min_size=1, max_size=4),
    seed=st.integers(0, 2**16),
    decoupled=st.booleans(),
    wd=st.sampled_from([0.0, 0.1]),
    lr=st.floats(1e-4, 1e-1),
    dtype=st.sampled_from([torch.float32, torch.float64, torch.bfloat16]),
    start=st.integers(0, 10**6),
)
def test_adam_foreach_equals_per_leaf(shapes, seed, decoupled, wd, lr, dtype, start) -> None:
    # float32/float64 on the CPU take the Python-float coefficients and addcdiv;
    # bfloat16 the tensor coefficients; ``start`` sets the bias corrections' t.
    if dtype == torch.bfloat16:
        lr = max(lr, 0.05)  # bf16 keeps 8 bits: a smaller Adam step of a unit weight rounds away
    gen = torch.Generator().manual_seed(seed)
    opt = (optim.adamw if decoupled else optim.adam)(lr, (0.5, 0.999), weight_decay=wd, schedule=optim.linear_decay(2 * 10**6, end=0.5))
    params = _tree(gen, shapes, dtype)
    grads = [_tree(gen, shapes, dtype) for _ in range(3)]
    results = {}
    for fe in (True, False):
        optim.FOREACH = fe
        try:
            p, s = params, opt.init(params)
            s = {**s, "count": torch.tensor(start)}
            for g in grads:
                p, s = opt.update(g, s, p)
        finally:
            optim.FOREACH = True
        results[fe] = (p, s)
    (pa, sa), (pb, sb) = results[True], results[False]
    moved = False
    for k in params:
        assert torch.equal(pa[k], pb[k]), k
        assert torch.equal(sa["mu"][k], sb["mu"][k]) and torch.equal(sa["nu"][k], sb["nu"][k]), k
        moved |= not torch.equal(pa[k], params[k])
    assert moved


def test_foreach_leaves_inputs_untouched() -> None:
    gen = torch.Generator().manual_seed(0)
    opt = optim.adam(1e-2)
    params, grads = _tree(gen, [(3, 4), (4,)], torch.float32), _tree(gen, [(3, 4), (4,)], torch.float32)
    state = opt.init(params)
    copies = [{k: v.clone() for k, v in t.items()} for t in (params, grads, state["mu"], state["nu"])]
    opt.update(grads, state, params)
    for orig, copy in zip((params, grads, state["mu"], state["nu"]), copies):
        for k in orig:
            assert torch.equal(orig[k], copy[k])

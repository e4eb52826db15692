"""The benchmark compares equal work: every variant of bench/workloads.py computes
the same update, so after two steps from the same start on the same data and
noise all of them hold the same parameters (float64, tiny models)."""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.workloads import WORKLOADS, available, make_pool, variant_class  # noqa: E402

# Shrunken copies of each workload kind: same code paths, milliseconds per step.
TINY = {
    "mlp": dataclasses.replace(WORKLOADS["mlp_b64"], batch=6, latent=5, size=12, hidden=7),
    "dcgan_bn": dataclasses.replace(WORKLOADS["dcgan32_b128"], batch=4, latent=5, size=8, hidden=4, channels=2),
    "wgangp": dataclasses.replace(WORKLOADS["wgangp_mlp_b64"], batch=5, latent=4, size=9, hidden=6, n_critic=3),
}


def _run(name: str, wl, steps: int = 2) -> dict[str, torch.Tensor]:
    dev, dt = torch.device("cpu"), torch.float64
    G, D = wl.models()
    pool = make_pool(wl, wl.gan(G, D), 2, dev, dt)
    v = variant_class(name)(wl, pool, dev, dt).setup()
    v.run(list(range(steps)))
    return {k: t.to(torch.float64) for k, t in v.params().items()}


@pytest.mark.parametrize("kind", sorted(TINY))
@pytest.mark.parametrize("variant", ["ganfn", "lightning", "jax"])
def test_variant_matches_imperative(kind: str, variant: str) -> None:
    ok, why = available(variant)
    if not ok:
        pytest.skip(why)
    wl = TINY[kind]
    ref = _run("imperative", wl)
    got = _run(variant, wl)
    assert sorted(got) == sorted(ref)
    start = {k: v.to(torch.float64) for k, v in _initial(wl).items()}
    # The update really happened (so the equality below is not start == start;
    # only a Wasserstein critic's last bias has zero gradient) ...
    moved = [k for k in ref if not torch.allclose(ref[k], start[k], rtol=0, atol=1e-9)]
    assert len(moved) >= len(ref) - 1 and any(k.startswith("G.") for k in moved), moved
    # ... and every variant made the same update.
    for k in ref:
        torch.testing.assert_close(got[k], ref[k], rtol=1e-7, atol=1e-9, msg=f"{variant}/{kind}: {k}")


def _initial(wl) -> dict[str, torch.Tensor]:
    G, D = wl.models()
    return {**{f"G.{k}": v.detach().double() for k, v in G.named_parameters()},
            **{f"D.{k}": v.detach().double() for k, v in D.named_parameters()}}


def test_imperative_differs_when_the_update_differs() -> None:
    """The comparison can fail: a different learning rate gives different parameters."""
    wl = TINY["mlp"]
    a = _run("imperative", wl)
    b = _run("ganfn", dataclasses.replace(wl, lr=wl.lr * 2))
    assert any(not torch.allclose(a[k], b[k], rtol=1e-7, atol=1e-9) for k in a)


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["ganfn_compiled", "ganfn_compiled_cpu_options"])
def test_compiled_matches_imperative(variant: str) -> None:
    wl = TINY["wgangp"]
    ref = _run("imperative", wl)
    got = _run(variant, wl)
    for k in ref:
        torch.testing.assert_close(got[k], ref[k], rtol=1e-7, atol=1e-9, msg=k)

"""A population split across ranks (``split="members"``) against one process holding it all.

CPU (gloo, 127.0.0.1): member-steps/s of 1 rank training 16 members (one
vmapped program) against 2 ranks training 8 members each (the same 16-member
population, ``fit(split="members")``), side by side, plus what one PBT round
sends across the network, computed from the state's size::

    python bench/population_ranks.py --model mlp --members 16 --steps 200

Each rank runs one torch thread; ``--repeat`` interleaves the two variants so
load changes hit both alike, and the median is reported. Prints one line per
run and a JSON summary on the last line.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile

import torch

import ganfn
from ganfn import data, ensemble, models
from ganfn.distributed import exploit


def make_gan(model: str) -> ganfn.GAN:
    G, D, latent = models.build(model, (2,))
    return ganfn.GAN(G, D, latent_dim=latent, loss="hinge")


def child(args: argparse.Namespace) -> None:
    """One rank (or the single process): train and print this rank's steps/s as JSON."""
    from ganfn import distributed as gd
    from ganfn.loop import fit

    torch.set_num_threads(1)
    gd.setup("gloo", timeout_s=120)
    try:
        seeds = list(range(args.members))
        hps = [{"lr_d": 1e-3 * (1 + i % 4)} for i in seeds]
        _, hist = fit(make_gan(args.model), data.ring8, steps=args.steps, batch_size=args.batch, seeds=seeds,
                      hparams=hps,
                      log_every=args.steps, image_every=args.steps, eval_every=args.steps, checkpoint_every=None,
                      progress=False, print_fn=lambda _m: None, split="members" if gd.is_distributed() else "batch")
        # Leave out the first step (allocation warm-up) so both variants time the same steady state.
        steady = (hist["steps_run"] - 1) / (hist["wall_time_s"] - hist["first_step_s"])
        print(json.dumps({"rank": gd.rank(), "steps_per_s": steady}), flush=True)
    finally:
        gd.teardown()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(args: argparse.Namespace, world: int) -> float:
    """Member-steps/s of the whole population trained on ``world`` ranks (the slowest rank sets the pace)."""
    port, procs = _free_port(), []
    cmd = [sys.executable, __file__, "--child", "--model", args.model, "--members", str(args.members),
           "--steps", str(args.steps), "--batch", str(args.batch)]
    for r in range(world):
        env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}
        if world > 1:
            env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(r), WORLD_SIZE=str(world),
                       LOCAL_RANK=str(r))
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True, cwd=tempfile.gettempdir()))
    rates = []
    for p in procs:
        out, _ = p.communicate(timeout=600)
        if p.returncode != 0:
            raise RuntimeError(f"a rank failed (exit {p.returncode})")
        rates.append(json.loads(out.strip().splitlines()[-1])["steps_per_s"])
    return min(rates) * args.members


def state_bytes(model: str) -> dict[str, int]:
    """Bytes of one member's state: the part a PBT copy sends (everything but the
    hyperparameters, step and diverged_at) and the part every round gathers."""
    state = ensemble.init_many(make_gan(model), [0])
    light = exploit.light_leaves(state)
    leaves = ganfn.tree.leaves(state)
    size = [x[0].numel() * x.element_size() for x in leaves]
    pairs = list(zip(size, light, strict=True))
    return {"copied": sum(s for s, m in pairs if not m), "gathered": sum(s for s, m in pairs if m)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="mlp")
    p.add_argument("--members", type=int, default=16)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--fraction", type=float, default=0.25, help="PBT fraction, for the traffic estimate")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args)
    one, two = [], []
    for i in range(args.repeat):
        one.append(_run(args, 1))
        two.append(_run(args, 2))
        print(f"repeat {i}: 1 rank x {args.members}: {one[-1]:.0f} member-steps/s; "
              f"2 ranks x {args.members // 2}: {two[-1]:.0f} member-steps/s", flush=True)
    b = state_bytes(args.model)
    copies = int(args.fraction * args.members)
    traffic = {"member_state_bytes": b["copied"], "gathered_bytes_per_member": b["gathered"],
               "copies_per_round_at_most": copies, "copy_bytes_per_round_at_most": copies * b["copied"]}
    print(json.dumps({"model": args.model, "members": args.members, "steps": args.steps, "batch": args.batch,
                      "one_rank_member_steps_per_s": statistics.median(one),
                      "two_ranks_member_steps_per_s": statistics.median(two), **traffic}))


if __name__ == "__main__":
    main()

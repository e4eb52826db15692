"""The default `ganfn train` run, written against the Python API.

A small DCGAN on scikit-learn's 8x8 digits with ``ganfn.loop.fit``: progress
bar, TensorBoard logs, checkpoints, FD-LeNet(digits) every 500 steps, and
samples.png / losses.png / metrics.json in runs/digits-example/.

    python examples/train_digits.py            # a few minutes on a 2-core CPU
    python examples/train_digits.py --steps 200
"""
import argparse

import torch

import ganfn
from ganfn import data, models, optim, presets
from ganfn.loop import fit

parser = argparse.ArgumentParser()
parser.add_argument("--steps", type=int, default=10000)
parser.add_argument("--run-dir", default="runs/digits-example")
args = parser.parse_args()

torch.set_num_threads(1)
x = data.digits("train", 8)                                     # [1400, 1, 8, 8] in [-1, 1]
G, D, latent = models.build("dcgan", x.shape[1:], width=64, latent_dim=32)
gan = ganfn.GAN(G, D, latent_dim=latent, loss="non_saturating", parts=[ganfn.parts.ema(0.999)],
                g_optimizer=optim.adam(2e-4, (0.5, 0.999)), d_optimizer=optim.adam(2e-4, (0.5, 0.999)))
evaluator = presets.make_evaluator(presets.Config(data="digits"))  # FD-LeNet(digits) vs held-out digits
state, history = fit(gan, x, steps=args.steps, batch_size=64, run_dir=args.run_dir, seed=0,
                     evaluator=evaluator, eval_every=500, checkpoint_every=1000)
first, last = history["initial"]["figures"][0], history["final"]["figures"][0]
print(f"FD-LeNet(digits): untrained {first['FD-LeNet(digits)']:.3f} -> trained {last['FD-LeNet(digits)']:.3f}")

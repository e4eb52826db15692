"""Your own training loop around ganfn's pure step (the README's example).

An MLP GAN on the 8-Gaussian ring; prints the losses and the mode coverage.
35 s on a loaded 2-core CPU (load average 7), less on an idle one:  python examples/custom_loop.py
"""
import torch
from torch import nn

import ganfn
from ganfn import data, metrics, optim

torch.set_num_threads(1)
G = nn.Sequential(nn.Linear(2, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 2))
D = nn.Sequential(nn.Linear(2, 128), nn.LeakyReLU(0.2), nn.Linear(128, 128), nn.LeakyReLU(0.2), nn.Linear(128, 1))
gan = ganfn.GAN(G, D, latent_dim=2, loss="non_saturating", parts=[ganfn.parts.ema(0.99)],
                g_optimizer=optim.adam(1e-3, (0.5, 0.999)), d_optimizer=optim.adam(1e-3, (0.5, 0.999)))
state = gan.init(seed=0)                         # parameters, optimizer states, EMA: a pytree of tensors
noise_rng, data_rng = torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)
for step in range(2000):
    real = data.ring8(256, data_rng)             # [256, 2]
    noise = gan.draw_noise(noise_rng, 256)       # every random tensor the step needs
    state, m = gan.train_step(state, real, noise)  # pure: a new state, inputs untouched
    if step % 500 == 0:
        ganfn.check_finite(m, step)
        print(f"step {step}: d_loss {float(m['d_loss']):.3f}  g_loss {float(m['g_loss']):.3f}")
fake = gan.sample(state, gan.draw_latents(torch.Generator().manual_seed(3), 2000))  # EMA generator
cov = metrics.mode_coverage(fake, metrics.ring8_centers(), metrics.RING8_STD)
print(f"modes covered: {int(cov.modes)}/8, high-quality samples: {float(cov.high_quality):.0%}")

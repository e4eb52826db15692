"""Your own training loop around ganfn's pure step (the README's example).

Trains an MLP GAN on the 8-Gaussian ring with WGAN-GP-style hinge + R1 and
prints mode coverage. Runs in well under a minute on a CPU:

    python examples/custom_loop.py
"""
import torch

import ganfn
from ganfn import data, metrics, models, optim

torch.set_num_threads(1)
G, D, latent = models.build("mlp", (2,))                       # any nn.Modules work
gan = ganfn.GAN(G, D, latent_dim=latent, loss="hinge", penalty=ganfn.penalties.r1(0.1),
                g_optimizer=optim.adam(1e-3, (0.5, 0.9)), d_optimizer=optim.adam(1e-3, (0.5, 0.9)))
state = gan.init(seed=0)                                        # a pytree of tensors
rng = torch.Generator().manual_seed(0)                          # every random draw comes from here
for step in range(2000):
    real = data.ring8(256, rng)
    noise = gan.draw_noise(rng, 256)
    state, m = gan.train_step(state, real, noise)               # pure: returns a new state
    ganfn.check_finite(m, step)
    if step % 500 == 0:
        print(f"step {step}: d_loss {float(m['d_loss']):.3f}  g_loss {float(m['g_loss']):.3f}")
fake = gan.sample(state, gan.draw_latents(rng, 2000))
mc = metrics.mode_coverage(fake, metrics.ring8_centers(), metrics.RING8_STD)
print(f"modes covered: {int(mc.modes)}/8, high-quality samples: {float(mc.high_quality):.0%}")

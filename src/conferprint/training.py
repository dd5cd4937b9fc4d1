"""One training loop for every model of the study.

Label sources: ground truth (hard labels), or a teacher's outputs computed once on the training
inputs (as an API thief would query them): soft labels at temperature ``T`` (distillation,
Hinton et al. 2015), or the teacher's top-1 labels only.
Randomness (initialisation, shuffling, augmentation, dropout) comes from ``seed`` inside
:func:`torch.random.fork_rng`, so the caller's global RNG is never touched.
"""
from __future__ import annotations

import contextlib
import logging
import math
from dataclasses import asdict, dataclass, replace
from typing import Callable, Iterable, Iterator, Literal

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from conferprint.device import model_device

log = logging.getLogger(__name__)

LabelSource = Literal["ground_truth", "soft", "hard"]


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 10
    batch_size: int = 256
    lr: float = 0.05  # peak learning rate of SGD with Nesterov momentum
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup: float = 0.15  # fraction of steps with a linear warm-up; then linear decay to 0 (one-cycle)
    augment: bool = True  # random shifts of up to `shift` pixels; horizontal flips for 32×32 colour images
    shift: int = 2
    temperature: float = 1.0  # distillation temperature for soft labels

    def to_dict(self) -> dict:
        return asdict(self)


MAX_LR = 3.2  # the linear rule stops here: Goyal et al. trained ResNet-50 at batch 8k with lr 3.2


def scale_batch(cfg: TrainConfig, batch_size: int) -> TrainConfig:
    """``cfg`` at another batch size with the linear scaling rule (Goyal et al. 2017, "Accurate, large
    minibatch SGD"): the peak learning rate grows with the batch, ``lr · batch_size / cfg.batch_size``
    (capped at :data:`MAX_LR`), and the warm-up the rule needs is already part of the schedule
    (``cfg.warmup``, at least 5 % of the steps here). For GPUs, where small batches leave it idle."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
    return replace(cfg, batch_size=batch_size, lr=min(MAX_LR, cfg.lr * batch_size / cfg.batch_size),
                   warmup=max(cfg.warmup, 0.05))


def uses_channels_last(model: nn.Module) -> bool:
    for p in model.parameters():
        if p.ndim == 4:
            return p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous()
    return False


def weights_channels_last(model: nn.Module) -> bool:
    """Whether ``model``'s convolution weights are laid out channels_last, judged by the first 4-D weight whose two
    layouts differ (:func:`uses_channels_last`, which lays out the inputs, cannot tell a 1-channel first convolution's
    weight, the same in both layouts, from a contiguous one)."""
    return next((p.is_contiguous(memory_format=torch.channels_last) for p in model.parameters()
                 if p.ndim == 4 and p.is_contiguous() != p.is_contiguous(memory_format=torch.channels_last)), False)


@contextlib.contextmanager
def _training_layout(model: nn.Module, dev: torch.device) -> Iterator[bool]:
    """Train ``model`` in the layout its architecture trains fastest in on a CPU (``ArchInfo.train_channels_last``,
    which ``build_model`` sets as the model's ``train_channels_last``), and give it back in its own layout after.
    The parameters stay the same objects (their data is re-laid), so optimisers and hooks that hold them still
    work. Yields whether to lay the batches out channels_last (``uses_channels_last`` of the model as trained)."""
    want = getattr(model, "train_channels_last", None)
    own = weights_channels_last(model)
    if dev.type != "cpu" or want is None or bool(want) == own:
        yield uses_channels_last(model)
        return
    model.to(memory_format=torch.channels_last if want else torch.contiguous_format)
    try:
        yield uses_channels_last(model)
    finally:
        model.to(memory_format=torch.channels_last if own else torch.contiguous_format)


def _layout(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if uses_channels_last(model) else x


# Inference batches: on a 2-core CPU the conv nets run up to twice as fast at 128 images as at 1,024 (median of 9:
# cnn_small 1.9×, cnn 2.4×, cnn_small32 2.4×; LeNet and the MLP 0.82–0.95×, cheap either way), the same logits bit
# for bit (python benchmarks/predict_batch.py, which checks it); a GPU wants large batches.
PREDICT_BATCH = {"cpu": 128}
PREDICT_BATCH_DEFAULT = 1024


@torch.no_grad()
def predict_logits(model: nn.Module, x: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
    """Logits of ``model`` on ``x`` in batches (default: :data:`PREDICT_BATCH` for the model's device); ``x`` goes
    to the model's device and the logits come back on ``x``'s device."""
    was_training = model.training
    model.eval()
    dev = model_device(model)
    batch_size = batch_size or PREDICT_BATCH.get(dev.type, PREDICT_BATCH_DEFAULT)
    out = torch.cat([model(_layout(model, x[i: i + batch_size].to(dev))).to(x.device)
                     for i in range(0, len(x), batch_size)])
    model.train(was_training)
    return out


def predict_labels(model: nn.Module, x: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
    return predict_logits(model, x, batch_size).argmax(1)


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int | None = None) -> float:
    return float((predict_labels(model, x, batch_size) == y).float().mean())


def teacher_labels(teacher: nn.Module, x: torch.Tensor, mode: Literal["soft", "hard"], temperature: float = 1.0) -> torch.Tensor:
    """The teacher's answers on ``x``: probabilities at ``temperature`` (soft) or top-1 labels (hard)."""
    logits = predict_logits(teacher, x)
    if mode == "soft":
        return F.softmax(logits / temperature, dim=1)
    if mode == "hard":
        return logits.argmax(1)
    raise ValueError(f"teacher label mode must be 'soft' or 'hard', got {mode!r}")


def draw_augmentation(sizes: Iterable[int], shift: int, flip: bool, gen: torch.Generator
                      ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """The random shifts (``dy``, ``dx``) and flip mask of consecutive batches of ``sizes``, drawn from
    ``gen`` in exactly the order :func:`augment_batch` draws them batch by batch, concatenated.
    Drawn once per epoch, they travel to a GPU in one copy instead of three per step."""
    dys, dxs, masks = [], [], []
    for b in sizes:
        if shift > 0:
            dys.append(torch.randint(0, 2 * shift + 1, (b,), generator=gen))
            dxs.append(torch.randint(0, 2 * shift + 1, (b,), generator=gen))
        if flip:
            masks.append(torch.rand(b, generator=gen) < 0.5)
    return (torch.cat(dys) if dys else None, torch.cat(dxs) if dxs else None, torch.cat(masks) if masks else None)


def apply_augmentation(x: torch.Tensor, shift: int, dy: torch.Tensor | None, dx: torch.Tensor | None,
                       mask: torch.Tensor | None) -> torch.Tensor:
    """Translate each sample by ``(dy, dx) - shift`` pixels (zero padding), then flip where ``mask``;
    the draws live on ``x``'s device.

    One ``gather`` from the padded batch does both, the flip as reversed column indices: the same pixels
    as shifting and flipping in turn, and faster on the CPU than the advanced indexing and separate flip it
    replaced: with the batch's gather from the data, 0.27 against 0.55 ms per 256 Fashion-MNIST images, 0.75
    against 2.96 ms per 256 CIFAR images with flips (interleaved passes over an epoch, median of 6)."""
    if dy is None and mask is None:
        return x
    b, c, h, w = x.shape
    dev = x.device
    pad = shift if dy is not None else 0
    hp, wp = h + 2 * pad, w + 2 * pad
    rows = torch.arange(h, device=dev).expand(b, h)
    cols = torch.arange(w, device=dev).expand(b, w)
    if mask is not None:  # out[..., j] = shifted[..., w - 1 - j]
        cols = torch.where(mask[:, None], w - 1 - cols, cols)
    if dy is not None and dx is not None:
        rows, cols = rows + dy[:, None], cols + dx[:, None]
    index = (rows[:, :, None] * wp + cols[:, None, :]).reshape(b, 1, h * w).expand(b, c, h * w)
    padded = F.pad(x, (pad, pad, pad, pad)) if pad else x
    return padded.reshape(b, c, hp * wp).gather(2, index).reshape(b, c, h, w)


def shifted_windows(x: torch.Tensor, shift: int) -> torch.Tensor:
    """Every translation of every sample by up to ``shift`` pixels (zero padding) as one strided view of the
    padded data, shape ``(n, c, 2·shift + 1, 2·shift + 1, h, w)``: ``windows[i, :, dy, dx]`` is sample ``i`` as
    :func:`apply_augmentation` shifts it by ``(dy, dx)``. Indexing the view with a batch's indices and shifts
    takes the batch and shifts it in one copy, with no per-batch padding and no index tensor as large as the
    batch: the training loop's path when it shifts without flipping (the 28×28 and 8×8 data)."""
    n, c, h, w = x.shape
    padded = F.pad(x, (shift, shift, shift, shift)).contiguous()
    hp, wp = h + 2 * shift, w + 2 * shift
    return padded.as_strided((n, c, 2 * shift + 1, 2 * shift + 1, h, w), (c * hp * wp, hp * wp, wp, 1, wp, 1))


def _windows_for(x: torch.Tensor, cfg: TrainConfig, flip: bool, adversarial: bool) -> torch.Tensor | None:
    """The training loop's :func:`shifted_windows` of the whole data, where it applies (shifts, no flip, draws
    made per epoch); else None and the loop takes ``x[idx]`` then :func:`apply_augmentation`."""
    return shifted_windows(x, cfg.shift) if cfg.augment and cfg.shift > 0 and not flip and not adversarial else None


def augment_batch(x: torch.Tensor, shift: int, flip: bool, gen: torch.Generator) -> torch.Tensor:
    """Per-sample random translation by up to ``shift`` pixels (zero padding) and optional h-flip."""
    dy, dx, mask = draw_augmentation([len(x)], shift, flip, gen)
    return apply_augmentation(x, shift, *(t.to(x.device) if t is not None else None for t in (dy, dx, mask)))


def _loss(logits: torch.Tensor, target: torch.Tensor, temperature: float) -> torch.Tensor:
    if target.ndim == 1:
        return F.cross_entropy(logits, target)
    # soft labels: cross-entropy against the teacher's distribution at the same temperature, scaled by T²
    return -(target * F.log_softmax(logits / temperature, dim=1)).sum(1).mean() * temperature**2


def optimizer_and_schedule(params: Iterable[nn.Parameter], cfg: TrainConfig, total_steps: int
                           ) -> tuple[torch.optim.SGD, torch.optim.lr_scheduler.LambdaLR]:
    """The study's optimiser: SGD with Nesterov momentum at ``cfg.lr``, a linear warm-up over
    ``cfg.warmup`` of ``total_steps``, then a linear decay to 0 (one-cycle); step the schedule per batch."""
    warm = max(1, int(cfg.warmup * total_steps))
    opt = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=True, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warm if s < warm else max(0.0, (total_steps - s) / max(1, total_steps - warm))
    )
    return opt, sched


def train_model(
    model: nn.Module,
    x: torch.Tensor,
    labels: torch.Tensor,
    cfg: TrainConfig,
    *,
    seed: int,
    progress: bool = False,
    desc: str = "train",
    params: Iterable[nn.Parameter] | None = None,
    set_mode: Callable[[nn.Module], None] | None = None,
    perturb: Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Generator], torch.Tensor] | None = None,
    after_step: Callable[[], None] | None = None,
    device: torch.device | str | None = None,
    amp: bool = False,
) -> list[float]:
    """Train ``model`` in place on ``(x, labels)``; ``labels`` are class indices or probabilities.

    Hooks for the removal attacks: ``params`` limits what the optimiser updates (default: all);
    ``set_mode(model)`` replaces ``model.train()`` (e.g. frozen layers kept in eval mode, so their
    BatchNorm statistics stay put); ``perturb(model, xb, target, gen)`` replaces each augmented batch
    before the step (adversarial training); ``after_step()`` runs after every optimiser step (pruning
    masks). ``device``: where to train (the model is moved there and the data made resident there;
    default: where the model is); ``amp``: bf16 autocast of the forward pass and loss (weights,
    gradients and optimiser state stay fp32), on CUDA and on CPU alike (on a CPU with AVX-512 BF16
    it trains the small CNNs 1.8–2.5× faster: benchmarks/results/training-bf16.json). On a CPU the model trains in
    its architecture's training layout (``ArchInfo.train_channels_last``) and is given back in its own. Returns the
    mean training loss of each epoch.
    """
    if len(x) != len(labels):
        raise ValueError(f"{len(x)} inputs but {len(labels)} labels")
    if len(x) == 0:
        raise ValueError("no training data")
    dev = torch.device(device) if device is not None else model_device(model)
    model.to(dev)
    x, labels = x.to(dev), labels.to(dev)  # resident on the device for the whole run
    n = len(x)
    steps_per_epoch = math.ceil(n / cfg.batch_size)
    total = cfg.epochs * steps_per_epoch
    flip = x.shape[1] == 3 and x.shape[-1] >= 32
    set_mode = set_mode or (lambda m: m.train())
    trainable = list(params) if params is not None else list(model.parameters())
    if not trainable:
        raise ValueError("nothing to train: the parameter list is empty")
    opt, sched = optimizer_and_schedule(trainable, cfg, total)
    history: list[float] = []
    set_mode(model)
    with _training_layout(model, dev) as channels_last, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # dropout and any other module-level randomness; restored on exit
        gen = torch.Generator().manual_seed(seed)
        bar = tqdm(total=total, desc=desc, disable=not progress, leave=False, unit="step")
        starts = range(0, n, cfg.batch_size)
        sizes = [min(cfg.batch_size, n - i) for i in starts]
        windows = _windows_for(x, cfg, flip, perturb is not None)  # the same pixels as x[idx] then the shift
        for _ in range(cfg.epochs):
            perm = torch.randperm(n, generator=gen).to(dev)  # one copy per epoch, not one per step
            draws = None
            if cfg.augment and perturb is None:  # adversarial training draws from `gen` between batches
                draws = [t.to(dev) if t is not None else None for t in draw_augmentation(sizes, cfg.shift, flip, gen)]
            losses = []  # kept on the device: reading one back each step would stall a GPU
            for i in starts:
                idx = perm[i: i + cfg.batch_size]
                if windows is not None:  # the batch and its shifts in one copy
                    xb = windows[idx, :, draws[0][i: i + len(idx)], draws[1][i: i + len(idx)]]
                elif draws is not None:
                    xb = apply_augmentation(x[idx], cfg.shift, *(t[i: i + len(idx)] if t is not None else None
                                                                 for t in draws))
                elif cfg.augment:
                    xb = augment_batch(x[idx], cfg.shift, flip, gen)
                else:
                    xb = x[idx]
                if perturb is not None:
                    xb = perturb(model, xb, labels[idx], gen)
                    set_mode(model)
                if channels_last:
                    xb = xb.contiguous(memory_format=torch.channels_last)
                with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
                    loss = _loss(model(xb), labels[idx], cfg.temperature)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                if after_step is not None:
                    after_step()
                losses.append(loss.detach())
                bar.update(1)
            # one read-back per epoch; summed in batch order as before
            history.append(sum(value * b for value, b in zip(torch.stack(losses).tolist(), sizes)) / n)
            bar.set_postfix(loss=f"{history[-1]:.3f}")
        bar.close()
    model.eval()
    return history

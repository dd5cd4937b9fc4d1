import pytest
import torch

from conferprint.models import ARCHITECTURES, arch_info, build_model


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_every_architecture_maps_images_to_logits(name):
    info = arch_info(name)
    cin = 3 if info.input_size == 32 else 1
    m = build_model(name, in_channels=cin, num_classes=7, seed=0).eval()
    x = torch.rand(2, cin, info.input_size, info.input_size)
    with torch.no_grad():
        out = m(x.contiguous(memory_format=torch.channels_last) if info.channels_last else x)
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()


def test_seed_reproduces_initial_weights_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = build_model("cnn", in_channels=1, num_classes=10, seed=5)
    b = build_model("cnn", in_channels=1, num_classes=10, seed=5)
    c = build_model("cnn", in_channels=1, num_classes=10, seed=6)
    assert torch.equal(torch.get_rng_state(), before)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_normalisation_lives_inside_the_model_and_is_saved():
    m = build_model("mlp", in_channels=1, num_classes=10, mean=(0.3,), std=(0.2,), seed=0)
    sd = m.state_dict()
    assert torch.allclose(sd["0.mean"].flatten(), torch.tensor([0.3]))
    assert torch.allclose(sd["0.std"].flatten(), torch.tensor([0.2]))


def test_unknown_architecture_is_refused_with_the_known_names():
    with pytest.raises(ValueError, match="resnet20"):
        build_model("resnet21", in_channels=3, num_classes=10)


def test_resnet_depths_differ():
    r20 = build_model("resnet20", in_channels=3, num_classes=10)
    r56 = build_model("resnet56", in_channels=3, num_classes=10)
    n20 = sum(p.numel() for p in r20.parameters())
    n56 = sum(p.numel() for p in r56.parameters())
    assert 0.26e6 < n20 < 0.28e6  # He et al. 2016: 0.27M
    assert 0.84e6 < n56 < 0.87e6  # 0.85M


def test_every_preset_uses_architectures_of_its_datasets_input_size():
    from conferprint.experiments.quickstart import PRESETS

    side = {"fashion-mnist": 28, "cifar10": 32}
    for name, cfg in PRESETS.items():
        archs = {cfg.source_arch} | {g.arch for g in cfg.training + cfg.testing + cfg.calibration}
        sizes = {a: arch_info(a).input_size for a in archs}
        assert all(s == side[cfg.dataset] for s in sizes.values()), (name, sizes)
        # the testing models hold the protocol: surrogates of ≥ 3 architectures, the source's among the references
        assert len({g.arch for g in cfg.testing if g.role == "surrogate"}) >= 3, name
        assert cfg.source_arch in {g.arch for g in cfg.testing if g.role == "reference"}, name


def test_the_cli_offers_every_preset():
    from conferprint.cli import PRESET_NAMES
    from conferprint.experiments.quickstart import PRESETS

    assert list(PRESET_NAMES) == list(PRESETS)


def _with_statistics(name: str, seed: int = 0) -> tuple[torch.nn.Module, torch.Tensor]:
    """An eval-mode model of ``name`` whose BatchNorms hold running statistics of real passes (fresh ones are the
    identity map), and a batch of its inputs."""
    info = arch_info(name)
    cin = 3 if info.input_size == 32 else 1
    m = build_model(name, in_channels=cin, num_classes=10, seed=seed)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _ in range(3):  # training-mode passes move the running mean and variance
            m(torch.rand(32, cin, info.input_size, info.input_size, generator=g) * 2)
    return m.eval(), torch.rand(16, cin, info.input_size, info.input_size, generator=g)


@pytest.mark.parametrize("name", ["cnn_small", "lenet_bn", "cnn32", "resnet20"])
def test_fold_batchnorm_computes_the_same_function_without_batchnorm(name):
    from conferprint.models.common import fold_batchnorm
    from conferprint.training import uses_channels_last

    m, x = _with_statistics(name)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    f = fold_batchnorm(m)
    assert f is not m and f.batchnorm_folded
    assert not any(isinstance(q, torch.nn.BatchNorm2d) for q in f.modules())
    # the original is untouched: its BatchNorms and every weight and statistic
    assert any(isinstance(q, torch.nn.BatchNorm2d) for q in m.modules())
    assert all(torch.equal(v, before[k]) for k, v in m.state_dict().items())
    # the weights keep the model's layout, so its members' inputs are laid out as before
    assert uses_channels_last(f) == uses_channels_last(m)
    assert [p.is_contiguous(memory_format=torch.channels_last) for p in f.parameters() if p.ndim == 4][-1] == \
        [p.is_contiguous(memory_format=torch.channels_last) for p in m.parameters() if p.ndim == 4][-1]
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    ya, yb = m(xa), f(xb)
    torch.testing.assert_close(yb, ya, rtol=1e-4, atol=1e-5)  # rounding, not bit for bit
    assert float((ya - yb).detach().abs().max()) > 0  # really another computation
    ya.logsumexp(1).sum().backward()
    yb.logsumexp(1).sum().backward()
    torch.testing.assert_close(xb.grad, xa.grad, rtol=1e-4, atol=1e-6)
    assert fold_batchnorm(f) is f  # folded once


def test_fold_batchnorm_returns_what_it_cannot_fold_as_it_is():
    from torch import nn

    from conferprint.models.common import fold_batchnorm

    m, x = _with_statistics("cnn_small")
    m.train()
    assert fold_batchnorm(m) is m  # batch statistics: not a fixed map
    m.eval()
    m[1][1].train()  # one BatchNorm still in training mode
    assert fold_batchnorm(m) is m
    mlp = build_model("mlp", in_channels=1, num_classes=10, seed=0).eval()
    assert fold_batchnorm(mlp) is mlp  # nothing to fold

    class Counted(nn.Module):  # a wrapper of its own: tracing would drop its count (and a noise draw, a branch)
        def __init__(self, inner):
            super().__init__()
            self.inner, self.calls = inner, 0

        def forward(self, x):
            self.calls += 1
            return self.inner(x)

    wrapped = Counted(m).eval()
    assert fold_batchnorm(wrapped) is wrapped
    wrapped(x)
    assert wrapped.calls == 1
    # a plain stack of PyTorch's layers folds
    plain = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU()).eval()
    assert getattr(fold_batchnorm(plain), "batchnorm_folded", False)

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

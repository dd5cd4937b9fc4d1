import pytest
import torch

from conferprint.models import build_model
from conferprint.training import (TrainConfig, accuracy, apply_augmentation, augment_batch, draw_augmentation, teacher_labels,
                                  train_model)


def test_training_on_real_digits_learns(digits, digit_models):
    acc = accuracy(digit_models["source"], digits.x_test, digits.y_test)
    assert acc > 0.9, acc


def test_same_seed_same_weights_and_global_rng_untouched(digits):
    x, y = digits.x_train[:300], digits.y_train[:300]
    cfg = TrainConfig(epochs=2, batch_size=32, augment=True, shift=1)
    torch.manual_seed(7)
    state = torch.get_rng_state()
    ms = []
    for _ in range(2):
        m = build_model("digits_cnn", in_channels=1, num_classes=10, seed=3)
        train_model(m, x, y, cfg, seed=11)
        ms.append(m.state_dict())
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(ms[0][k], ms[1][k]) for k in ms[0])
    m = build_model("digits_cnn", in_channels=1, num_classes=10, seed=3)
    train_model(m, x, y, cfg, seed=12)
    assert not all(torch.equal(ms[0][k], m.state_dict()[k]) for k in ms[0])


def test_distillation_from_soft_and_hard_labels_follows_the_teacher(digits, digit_models):
    src = digit_models["source"]
    x = digit_models["x"]
    for mode in ("soft", "hard"):
        labels = teacher_labels(src, x, mode)
        assert labels.shape == ((len(x), 10) if mode == "soft" else (len(x),))
        student = build_model("digits_linear", in_channels=1, num_classes=10, seed=4)
        train_model(student, x, labels, TrainConfig(epochs=20, batch_size=64, augment=False), seed=4)
        agree = (student(digits.x_test).argmax(1) == src(digits.x_test).argmax(1)).float().mean()
        assert agree > 0.85, (mode, float(agree))


def test_augmentation_shifts_within_bounds():
    g = torch.Generator().manual_seed(0)
    x = torch.zeros(16, 1, 8, 8)
    x[:, :, 3, 3] = 1.0
    out = augment_batch(x, 2, False, g)
    assert out.shape == x.shape
    pos = out.flatten(1).argmax(1)
    rows, cols = pos // 8, pos % 8
    assert ((rows - 3).abs() <= 2).all() and ((cols - 3).abs() <= 2).all()
    assert len(set(pos.tolist())) > 1  # per-sample shifts differ
    assert torch.allclose(out.sum((1, 2, 3)), torch.ones(16))


def test_augmentation_drawn_per_epoch_equals_drawing_it_batch_by_batch():
    """The training loop draws a whole epoch's shifts and flips at once (one copy to a GPU); they must be
    the draws, in order, that batch-by-batch augmentation would have made, so CPU results are unchanged."""
    x = torch.rand(70, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    sizes = [32, 32, 6]
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    one_by_one = torch.cat([augment_batch(x[i: i + b], 2, True, g1) for i, b in zip((0, 32, 64), sizes)])
    dy, dx, mask = draw_augmentation(sizes, 2, True, g2)
    assert dy.shape == dx.shape == mask.shape == (70,)
    assert torch.equal(apply_augmentation(x, 2, dy, dx, mask), one_by_one)
    assert torch.equal(g1.get_state(), g2.get_state())  # the generator moved on exactly as far
    assert not torch.equal(one_by_one, x)
    assert draw_augmentation(sizes, 0, False, g2) == (None, None, None)


def test_mismatched_labels_are_refused(digits):
    m = build_model("digits_linear", in_channels=1, num_classes=10)
    try:
        train_model(m, digits.x_train[:10], digits.y_train[:9], TrainConfig(epochs=1), seed=0)
    except ValueError as e:
        assert "10 inputs but 9 labels" in str(e)
    else:
        raise AssertionError("expected ValueError")


def test_device_auto_is_the_cpu_here_and_cuda_without_a_gpu_is_refused():
    import torch

    from conferprint.device import DeviceError, resolve_device

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert resolve_device("auto").type == "cpu" and resolve_device("cpu").type == "cpu"
    with pytest.raises(DeviceError, match="no CUDA GPU"):
        resolve_device("cuda")
    with pytest.raises(DeviceError, match="auto, cpu or cuda"):
        resolve_device("meta")


def test_training_on_an_explicit_cpu_device_is_the_default_training(digits):
    import torch

    from conferprint.models import build_model
    from conferprint.training import TrainConfig, train_model

    cfg = TrainConfig(epochs=1, batch_size=64, augment=True)
    a = build_model("digits_linear", in_channels=1, num_classes=10, seed=0)
    b = build_model("digits_linear", in_channels=1, num_classes=10, seed=0)
    train_model(a, digits.x_train, digits.y_train, cfg, seed=3)
    train_model(b, digits.x_train, digits.y_train, cfg, seed=3, device="cpu")
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k


def test_bf16_autocast_on_cpu_trains_other_fp32_weights_that_learn_as_well(digits):
    """``amp`` on the CPU runs the forward pass in bf16: the weights stay fp32 but differ from an fp32
    run's, and the model learns about as well."""
    cfg = TrainConfig(epochs=3, batch_size=64, augment=False)
    models = {}
    for amp in (False, True):
        models[amp] = build_model("digits_cnn", in_channels=1, num_classes=10, seed=0)
        train_model(models[amp], digits.x_train, digits.y_train, cfg, seed=3, device="cpu", amp=amp)
    fp32, bf16 = (models[k].state_dict() for k in (False, True))
    assert all(v.dtype == fp32[k].dtype for k, v in bf16.items())
    assert any(not torch.equal(v, fp32[k]) for k, v in bf16.items() if v.is_floating_point())
    acc = {k: accuracy(m, digits.x_test, digits.y_test) for k, m in models.items()}
    assert acc[True] > 0.85 and abs(acc[True] - acc[False]) < 0.05, acc


def test_zoo_keeps_bf16_and_fp32_models_apart(digits, tmp_path):
    from conferprint.experiments.zoo_builder import ZooBuilder
    from conferprint.zoo import Zoo

    x, y = digits.x_train[:300], digits.y_train[:300]
    cfg = TrainConfig(epochs=1, batch_size=64, augment=False)
    fp32 = ZooBuilder(Zoo(tmp_path), digits, cfg, seed=0).build("m", "digits_linear", "source", "D1", x, y, "ground_truth", 1)
    bf16 = ZooBuilder(Zoo(tmp_path), digits, cfg, seed=0, amp=True).build("m", "digits_linear", "source", "D1", x, y,
                                                                         "ground_truth", 1)
    assert fp32.trained_now and bf16.trained_now  # the fp32 entry was not reused for a bf16 run
    assert bf16.meta["spec"]["extra"] == {"amp": "bf16"} and fp32.meta["spec"]["extra"] == {}
    again = ZooBuilder(Zoo(tmp_path), digits, cfg, seed=0, amp=True).build("m", "digits_linear", "source", "D1", x, y,
                                                                          "ground_truth", 1)
    assert not again.trained_now and again.meta["sha256"] == bf16.meta["sha256"]


def test_quickstart_refuses_cuda_without_a_gpu(tmp_path, capsys):
    import torch

    from conferprint.cli import main

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert main(["quickstart", "--out", str(tmp_path), "--preset", "tiny", "--device", "cuda",
                 "--data-dir", str(tmp_path)]) == 2
    assert "no CUDA GPU" in capsys.readouterr().err


def test_linear_scaling_rule_for_large_batches(digits):
    from conferprint.training import MAX_LR, scale_batch

    base = TrainConfig(epochs=25, batch_size=64, lr=0.05, augment=False, warmup=0.0)
    big = scale_batch(base, 256)
    assert big.batch_size == 256 and big.lr == pytest.approx(0.2) and big.warmup == pytest.approx(0.05)
    assert scale_batch(base, 32).lr == pytest.approx(0.025)
    assert scale_batch(base, 10**6).lr == MAX_LR
    assert scale_batch(base, 64) == TrainConfig(epochs=25, batch_size=64, lr=0.05, augment=False, warmup=0.05)
    with pytest.raises(ValueError, match="batch_size"):
        scale_batch(base, 0)
    # the scaled run still learns: 4x fewer steps at 4x the rate
    m = build_model("digits_cnn", in_channels=1, num_classes=10, seed=0)
    train_model(m, digits.x_train, digits.y_train, big, seed=0)
    assert accuracy(m, digits.x_test, digits.y_test) > 0.9


def test_augmentation_gathers_the_shifted_and_flipped_pixels():
    """apply_augmentation (one gather) against the definition, sample by sample: pad by ``shift``, crop at
    ``(dy, dx)``, then flip horizontally where ``mask``; with and without each part."""
    g = torch.Generator().manual_seed(3)
    x = torch.rand(40, 3, 9, 7, generator=g)
    dy, dx, mask = torch.randint(0, 5, (40,), generator=g), torch.randint(0, 5, (40,), generator=g), torch.rand(40, generator=g) < 0.5

    def by_hand(dy, dx, mask):
        out = []
        for i in range(len(x)):
            xi = x[i]
            if dy is not None:
                p = torch.nn.functional.pad(xi, (2, 2, 2, 2))
                xi = p[:, int(dy[i]): int(dy[i]) + 9, int(dx[i]): int(dx[i]) + 7]
            if mask is not None and mask[i]:
                xi = xi.flip(2)
            out.append(xi)
        return torch.stack(out)

    for args in ((dy, dx, mask), (dy, dx, None), (None, None, mask)):
        assert torch.equal(apply_augmentation(x, 2, *args), by_hand(*args))
    assert torch.equal(apply_augmentation(x, 2, None, None, None), x)
    assert not torch.equal(apply_augmentation(x, 2, dy, dx, mask), x)



def test_shifted_windows_give_the_batch_apply_augmentation_gives():
    """shifted_windows: indexing the strided view of the padded data with a batch's indices and shifts gives,
    pixel for pixel, the batch taken then shifted by apply_augmentation (one and three channels, odd sizes)."""
    from conferprint.training import shifted_windows

    g = torch.Generator().manual_seed(4)
    for c, h, w, shift in ((1, 8, 8, 1), (3, 9, 7, 2), (1, 28, 28, 2)):
        x = torch.rand(50, c, h, w, generator=g)
        idx = torch.randperm(50, generator=g)[:17]
        dy, dx = torch.randint(0, 2 * shift + 1, (17,), generator=g), torch.randint(0, 2 * shift + 1, (17,), generator=g)
        got = shifted_windows(x, shift)[idx, :, dy, dx]
        assert got.shape == (17, c, h, w) and got.is_contiguous()
        assert torch.equal(got, apply_augmentation(x[idx], shift, dy, dx, None))


def test_training_loop_shifting_through_windows_trains_the_same_weights(digits, monkeypatch):
    """The loop's one-copy path (shifts without flips) trains bit for bit the weights of taking the batch and
    then shifting it, the path it replaced and still takes with flips."""
    import conferprint.training as training

    x, y = digits.x_train[:300], digits.y_train[:300]
    cfg = TrainConfig(epochs=2, batch_size=32, augment=True, shift=1)
    assert training._windows_for(x, cfg, flip=False, adversarial=False) is not None
    assert training._windows_for(x, cfg, flip=True, adversarial=False) is None
    weights = []
    for windows in (True, False):
        if not windows:
            monkeypatch.setattr(training, "_windows_for", lambda *a, **k: None)
        m = build_model("digits_cnn", in_channels=1, num_classes=10, seed=3)
        train_model(m, x, y, cfg, seed=11)
        weights.append(m.state_dict())
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_lenet_trains_contiguous_on_a_cpu_and_comes_back_in_channels_last():
    """ArchInfo.train_channels_last: LeNet trains in the contiguous layout (faster on a CPU,
    benchmarks/memory_layout.py) and is given back in channels_last, its layout for CEM, the same parameters."""
    def uses_channels_last(m):  # the second convolution's weight (the first, on 1 channel, looks the same in both)
        return [p for p in m.parameters() if p.ndim == 4][1].is_contiguous(memory_format=torch.channels_last)

    gen = torch.Generator().manual_seed(0)
    x, y = torch.rand(96, 1, 28, 28, generator=gen), torch.randint(0, 10, (96,), generator=gen)
    cfg = TrainConfig(epochs=1, batch_size=32, lr=0.05)
    model = build_model("lenet_bn", in_channels=1, num_classes=10, seed=0)
    assert uses_channels_last(model) and model.train_channels_last is False
    params = list(model.parameters())
    seen = []
    train_model(model, x, y, cfg, seed=0, after_step=lambda: seen.append(uses_channels_last(model)))
    assert seen == [False] * 3  # every step in the contiguous layout
    assert uses_channels_last(model) and all(a is b for a, b in zip(params, model.parameters()))
    # the same weights as training a contiguous copy that keeps its layout
    plain = build_model("lenet_bn", in_channels=1, num_classes=10, seed=0).to(memory_format=torch.contiguous_format)
    plain.train_channels_last = None
    train_model(plain, x, y, cfg, seed=0)
    assert not uses_channels_last(plain)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), plain.state_dict().values()))
    # the small CNN keeps channels_last throughout
    cnn = build_model("cnn_small", in_channels=1, num_classes=10, seed=0)
    seen.clear()
    train_model(cnn, x, y, cfg, seed=0, after_step=lambda: seen.append(uses_channels_last(cnn)))
    assert seen == [True] * 3 and cnn.train_channels_last is True


@pytest.mark.parametrize("arch", ["cnn_small", "lenet_bn", "mlp"])
def test_inference_batch_size_does_not_change_the_logits(arch):
    """predict_logits' CPU batch (PREDICT_BATCH, chosen for speed) gives the logits of any other batch size."""
    from conferprint.training import PREDICT_BATCH, predict_logits

    x = torch.rand(300, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    model = build_model(arch, in_channels=1, num_classes=10, seed=0)
    default = predict_logits(model, x)
    assert PREDICT_BATCH["cpu"] < len(x)  # several batches, one of them partial
    assert torch.equal(default, predict_logits(model, x, 1024)) and torch.equal(default, predict_logits(model, x, 64))

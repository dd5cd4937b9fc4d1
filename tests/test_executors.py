"""The parallel executors: local worker processes (``pool``) and Ray tasks against a local Ray instance
(ray.init(num_cpus=2)): the zoo trained in parallel, then resumed."""
import pytest

from conferprint.experiments.zoo_builder import ZooBuilder
from conferprint.training import TrainConfig, predict_labels
from conferprint.zoo import Zoo


@pytest.fixture
def executor_options(request):
    if request.param == "pool":
        yield "pool", {"workers": 2}
        return
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield "ray", {"num_cpus": 1}
    ray.shutdown()


@pytest.mark.slow
@pytest.mark.parametrize("executor_options", ["pool", "ray"], indirect=True)
def test_parallel_executors_train_into_the_zoo_and_a_rerun_resumes(executor_options, digits, tmp_path):
    executor, options = executor_options
    x, y = digits.x_train[:600], digits.y_train[:600]
    builder = ZooBuilder(Zoo(tmp_path / "zoo"), digits, TrainConfig(batch_size=64, augment=False), seed=0,
                         executor=executor, executor_options=options)
    source = builder.build("source", "digits_cnn", "source", "D1", x, y, "ground_truth", 15)  # local, the teacher
    jobs = [builder.job("surrogate-0", "digits_linear", "surrogate", "D1", x, y, "soft", 15, source),
            builder.job("surrogate-1", "digits_cnn", "surrogate", "D1", x, y, "hard", 15, source),
            builder.job("reference-0", "digits_cnn", "reference", "D1", x, y, "ground_truth", 15)]
    trained = builder.run_all(jobs)
    assert [t.name for t in trained] == ["surrogate-0", "surrogate-1", "reference-0"]
    assert all(t.trained_now for t in trained)
    for t in trained:
        assert (tmp_path / "zoo" / f"{t.name}.safetensors").is_file()
        assert t.meta["spec"]["name"] == t.name and t.meta["test_acc"] > 0.5
    assert trained[0].meta["label_source"] == "soft" and trained[0].meta["spec"]["teacher_sha256"] == source.meta["sha256"]
    # the surrogates learned the source's labels (a Ray task reads the teacher from the zoo, the pool is sent its labels)
    agree = (predict_labels(trained[1].model, digits.x_test) == predict_labels(source.model, digits.x_test)).float().mean()
    assert float(agree) > 0.8

    # a rerun trains nothing; losing one entry retrains only that one
    again = builder.run_all(jobs)
    assert not any(t.trained_now for t in again)
    assert [t.meta["sha256"] for t in again] == [t.meta["sha256"] for t in trained]
    (tmp_path / "zoo" / "surrogate-1.json").unlink()
    third = builder.run_all(jobs)
    assert [t.trained_now for t in third] == [False, True, False]


def test_unknown_executor_is_refused(digits, tmp_path):
    with pytest.raises(ValueError, match="executor must be"):
        ZooBuilder(Zoo(tmp_path), digits, TrainConfig(), seed=0, executor="spark")


@pytest.mark.parametrize("options", [{"workers": 0}, {"workers": 2, "threads": 0}])
def test_pool_refuses_bad_worker_counts_before_any_training(digits, tmp_path, options):
    with pytest.raises(ValueError, match="workers and threads must be"):
        ZooBuilder(Zoo(tmp_path), digits, TrainConfig(), seed=0, executor="pool", executor_options=options)
    assert not any(tmp_path.iterdir())  # nothing written


@pytest.mark.slow
def test_a_pool_worker_trains_the_same_weights_as_this_process_on_one_thread(digits, tmp_path):
    import torch

    x, y = digits.x_train[:400], digits.y_train[:400]
    cfg = TrainConfig(batch_size=64)
    pooled = ZooBuilder(Zoo(tmp_path / "pool"), digits, cfg, seed=3, executor="pool", executor_options={"workers": 1})
    local = ZooBuilder(Zoo(tmp_path / "local"), digits, cfg, seed=3)
    job = ("reference-0", "digits_cnn", "reference", "D1", x, y, "ground_truth", 3)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the pool's workers train on one thread
    try:
        here = local.run_all([local.job(*job)])[0]
    finally:
        torch.set_num_threads(threads)
    there = pooled.run_all([pooled.job(*job)])[0]
    assert there.trained_now and there.meta["spec"] == here.meta["spec"]
    assert there.meta["sha256"] == here.meta["sha256"]  # same seed, same ops: bit-identical weights


def test_cli_refuses_workers_without_the_pool(tmp_path, capsys):
    from conferprint.cli import main

    rc = main(["quickstart", "--out", str(tmp_path / "o"), "--preset", "tiny", "--workers", "2"])
    assert rc == 2 and "--workers applies to --executor pool" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()  # refused before anything was written


def test_cli_refuses_a_threshold_rule_where_the_threshold_is_fixed(tmp_path, capsys):
    from conferprint.cli import main

    rc = main(["quickstart", "--out", str(tmp_path / "o"), "--preset", "tiny", "--threshold-rule", "tolerance"])
    assert rc == 2 and "apply to presets with a calibrated threshold" in capsys.readouterr().err
    # a confidence without the rule it belongs to, or out of range: refused before anything runs
    rc = main(["quickstart", "--out", str(tmp_path / "o"), "--threshold-rule", "prediction", "--threshold-confidence", "0.95"])
    assert rc == 2 and "applies to --threshold-rule tolerance" in capsys.readouterr().err
    rc = main(["quickstart", "--out", str(tmp_path / "o"), "--threshold-rule", "tolerance", "--threshold-confidence", "0"])
    assert rc == 2 and "threshold_confidence must be in (0, 1)" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()

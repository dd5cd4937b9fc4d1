"""The Ray executor against a local Ray instance (ray.init(num_cpus=2)): the zoo trained as tasks, then resumed."""
import pytest

from conferprint.experiments.zoo_builder import ZooBuilder
from conferprint.training import TrainConfig, predict_labels
from conferprint.zoo import Zoo

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.mark.slow
def test_ray_tasks_train_into_the_zoo_and_a_rerun_resumes(local_ray, digits, tmp_path):
    x, y = digits.x_train[:600], digits.y_train[:600]
    builder = ZooBuilder(Zoo(tmp_path / "zoo"), digits, TrainConfig(batch_size=64, augment=False), seed=0,
                         executor="ray", executor_options={"num_cpus": 1})
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
    # the surrogates learned the source's labels, computed inside the task from the zoo's teacher
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

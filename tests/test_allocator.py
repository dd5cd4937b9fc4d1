"""conferprint.allocator: glibc's heap thresholds raised, so a training step stops faulting in fresh pages."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from conferprint import allocator
from conferprint.allocator import ENV, tune_cpu_allocator

GLIBC = allocator._glibc() is not None

# A child process: fixes glibc's mmap threshold at its initial 128 KiB, tunes the heap if asked, trains cnn_small
# for an epoch to grow the heap, then counts the minor page faults of the
# last 32 steps of a second, 3-epoch run (48 steps); prints them with a digest of the weights.
CHILD = textwrap.dedent("""
    import hashlib, json, resource, sys
    import torch
    from conferprint.allocator import tune_cpu_allocator
    from conferprint.models import build_model
    from conferprint.training import TrainConfig, train_model

    from conferprint.allocator import M_MMAP_THRESHOLD, _glibc

    # every buffer above 128 KiB a fresh mapping: glibc's start, held there (its own dynamic thresholds would
    # make the control depend on the allocation history)
    assert _glibc().mallopt(M_MMAP_THRESHOLD, 128 * 1024) == 1
    applied = tune_cpu_allocator(respect_env=False) if sys.argv[1] == "tuned" else None
    x = torch.rand(4096, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    y = torch.randint(0, 10, (4096,), generator=torch.Generator().manual_seed(1))
    train_model(build_model("cnn_small", in_channels=1, num_classes=10, seed=0), x, y,
                TrainConfig(epochs=1, batch_size=256, lr=0.05), seed=0)
    model = build_model("cnn_small", in_channels=1, num_classes=10, seed=0)
    seen = []  # the process's minor page faults after each step
    train_model(model, x, y, TrainConfig(epochs=3, batch_size=256, lr=0.05), seed=0,
                after_step=lambda: seen.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt))
    faults = seen[-1] - seen[15]  # the last two epochs' 32 steps
    digest = hashlib.sha256(b"".join(t.contiguous().numpy().tobytes() for t in model.state_dict().values())).hexdigest()
    print(json.dumps({"applied": applied, "faults": faults, "digest": digest}))
""")


def _child(kind: str) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, kind], check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.skipif(not GLIBC, reason="the settings are glibc's")
def test_tuned_heap_stops_the_page_faults_and_trains_the_same_weights():
    control, tuned = _child("control"), _child("tuned")
    assert tuned["applied"] is True
    # every step maps its activations afresh and faults them in (glibc's default does so too, depending on its
    # history: 19,094–397,250 faults in these steps, and once 3,136); the tuned heap reuses them
    assert control["faults"] > 32 * 1000, control
    assert tuned["faults"] * 20 < control["faults"], (control, tuned)  # here: 0–3,137 against 836,349–837,639
    assert tuned["digest"] == control["digest"]  # where the memory comes from changes no number


@pytest.mark.parametrize("bad", [0, -1, 1 << 31, 1.5, True, "1"])
def test_thresholds_out_of_mallopts_range_are_refused(bad):
    with pytest.raises(ValueError, match="mmap_threshold"):
        tune_cpu_allocator(mmap_threshold=bad)
    with pytest.raises(ValueError, match="trim_threshold"):
        tune_cpu_allocator(trim_threshold=bad)


def test_the_environment_variable_turns_it_off_and_is_checked(monkeypatch):
    monkeypatch.setenv(ENV, "0")
    assert tune_cpu_allocator() is False
    monkeypatch.setenv(ENV, "yes")
    with pytest.raises(ValueError, match=ENV):
        tune_cpu_allocator()
    assert tune_cpu_allocator(respect_env=False) is GLIBC  # the variable is not read then


def test_without_glibc_nothing_is_applied(monkeypatch):
    monkeypatch.setattr(allocator, "_glibc", lambda: None)
    monkeypatch.delenv(ENV, raising=False)
    assert tune_cpu_allocator() is False


def test_the_command_tunes_the_heap_before_it_runs(monkeypatch, capsys):
    from conferprint import cli

    calls = []
    monkeypatch.setattr(allocator, "tune_cpu_allocator", lambda: calls.append(True) or True)
    assert cli.main(["archs"]) == 0
    assert calls == [True]
    assert "cnn_small" in capsys.readouterr().out


def test_the_command_reports_a_bad_setting_as_an_error(monkeypatch, capsys):
    from conferprint import cli

    monkeypatch.setenv(ENV, "on")
    assert cli.main(["archs"]) == 2
    assert f"{ENV} must be 0 or 1" in capsys.readouterr().err

"""Checkpoints: written atomically every epoch, refused from another architecture or run, kept when the
loss turns NaN, and a run killed with SIGKILL resumes to bit-identical weights.

Run as a script (``python test_distill_checkpoint.py CKPT TEACHER_WEIGHTS STOP_AFTER``) this file is
the training run that the kill test starts in a subprocess and kills.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from test_distill import TinyNet, student, tiny_data, trained_teacher, with_labels

from edgekd.distill.trainer import distill
from edgekd.errors import ConfigError, ModelError
from edgekd.types import DistillConfig

# Feature loss (projector state), augmentation (numpy RNG every batch), OneCycle schedule, AdamW state.
RESUMABLE = DistillConfig(epochs=4, lr=5e-2, batch_size=32, augment=True, losses="kd:1,hint:0.5", seed=3)
QUICK = DistillConfig(epochs=2, lr=5e-2, batch_size=32, augment=False)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data():
    return tiny_data()


@pytest.fixture(scope="module")
def teacher(data):
    return trained_teacher(data)


def test_a_checkpoint_is_written_every_epoch_and_loads_weights_only(data, tmp_path):
    path = tmp_path / "ckpt" / "run.pt"
    result = distill(student(), data, QUICK, progress=False, checkpoint=path)
    ckpt = torch.load(path, weights_only=True)
    assert result.checkpoint == str(path)
    assert ckpt["epoch"] == 2 and len(ckpt["history"]) == 2
    assert {"student", "optimizer", "scheduler", "parts", "rng", "best", "arch", "run"} <= set(ckpt)
    assert ckpt["best"]["epoch"] == result.best_epoch
    assert [p.name for p in path.parent.iterdir()] == ["run.pt"]  # no temporary files left behind


def test_resuming_a_finished_run_returns_its_best_weights(data, tmp_path):
    path = tmp_path / "run.pt"
    first = distill(student(), data, QUICK, progress=False, checkpoint=path)
    again = distill(student(seed=5), data, QUICK, progress=False, checkpoint=path, resume=True)
    assert again.best_epoch == first.best_epoch and len(again.history) == 2
    for a, b in zip(first.model.state_dict().values(), again.model.state_dict().values()):
        assert torch.equal(a, b)


def test_a_resumed_near_best_run_keeps_what_the_uninterrupted_one_kept(data, tmp_path):
    path = tmp_path / "run.pt"
    config = replace(QUICK, epochs=5, keep="near-best")
    first = distill(student(), data, config, progress=False, checkpoint=path)
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["best"]["peak"] == max(h.val_accuracy for h in first.history)
    again = distill(student(seed=5), data, config, progress=False, checkpoint=path, resume=True)
    assert (again.best_epoch, again.keep) == (first.best_epoch, "near-best")
    with pytest.raises(ConfigError, match=r"another run configuration \(keep: 'near-best' -> None\)"):
        distill(student(), data, replace(config, keep="best"), progress=False, checkpoint=path, resume=True)


def test_a_checkpoint_from_before_the_keep_option_still_resumes(data, tmp_path):
    """The default rule leaves the run description as it was, so a run checkpointed by an older edgekd
    (no "keep" in its description, no "peak" in its best record) resumes."""
    path = tmp_path / "run.pt"
    first = distill(student(), data, QUICK, progress=False, checkpoint=path)
    ckpt = torch.load(path, weights_only=True)
    assert "keep" not in json.loads(ckpt["run"])["config"]
    del ckpt["best"]["peak"]
    torch.save(ckpt, path)
    again = distill(student(seed=5), data, QUICK, progress=False, checkpoint=path, resume=True)
    assert again.best_epoch == first.best_epoch


def test_a_checkpoint_of_another_architecture_is_refused(data, tmp_path):
    path = tmp_path / "run.pt"
    distill(student(), data, QUICK, progress=False, checkpoint=path)
    with pytest.raises(ModelError, match="written for another student architecture.*start fresh"):
        distill(student(width=6), data, QUICK, progress=False, checkpoint=path, resume=True)


def test_a_checkpoint_missing_what_resuming_reads_is_refused_as_no_checkpoint(data, tmp_path):
    """A checkpoint with the format's mark but fields missing or of the wrong kind was a KeyError traceback."""
    path = tmp_path / "run.pt"
    distill(student(), data, QUICK, progress=False, checkpoint=path)
    whole = torch.load(path, weights_only=True)
    for edit, why in ((lambda c: c.pop("history"), "it has no 'history'"),
                      (lambda c: c["best"].pop("state"), "it has no 'state'"),
                      (lambda c: c.update(run="not json"), "its 'run' is not a run description"),
                      (lambda c: c.update(epoch="two"), "ValueError: ")):
        ckpt = {**whole, "best": dict(whole["best"])}
        edit(ckpt)
        torch.save(ckpt, tmp_path / "edited.pt")
        with pytest.raises(ModelError, match=f"is not an edgekd training checkpoint \\(format 1, but {why}"):
            distill(student(), data, QUICK, progress=False, resume=tmp_path / "edited.pt")


def test_a_checkpoint_of_another_run_configuration_is_refused(data, tmp_path):
    path = tmp_path / "run.pt"
    distill(student(), data, QUICK, progress=False, checkpoint=path)
    changed = DistillConfig(**{**QUICK.to_dict(), "lr": 0.01})
    with pytest.raises(ConfigError, match=r"another run configuration \(lr: 0.05 -> 0.01\).*original settings"):
        distill(student(), data, changed, progress=False, resume=path)
    other = with_labels(data, y_train=np.roll(data.y_train, 1))
    with pytest.raises(ConfigError, match=r"another run configuration \(data: "):
        distill(student(), other, QUICK, progress=False, resume=path)


def test_a_teacher_with_other_weights_is_refused_on_resume(data, teacher, tmp_path):
    """The teacher was compared by its architecture alone: a run resumed with other weights of it, and
    distill.json then named the second teacher for a student half learnt from the first."""
    import copy

    path = tmp_path / "run.pt"
    distill(student(), data, QUICK, teacher=teacher, progress=False, checkpoint=path)
    other = copy.deepcopy(teacher)
    with torch.no_grad():
        other.fc.bias += 0.01
    with pytest.raises(ConfigError, match=r"another run configuration \(teacher_weights: "):
        distill(student(), data, QUICK, teacher=other, progress=False, resume=path)
    # A checkpoint from before the teacher's weights were recorded still resumes with its teacher.
    ckpt = torch.load(path, weights_only=True)
    run = json.loads(ckpt["run"])
    del run["teacher_weights"]
    ckpt["run"] = json.dumps(run, sort_keys=True)
    torch.save(ckpt, path)
    distill(student(), data, QUICK, teacher=teacher, progress=False, resume=path)


def test_another_validation_set_is_refused_on_resume(data, tmp_path):
    """Only the training data was compared: a run resumed on other validation images kept an epoch chosen
    on two validation sets."""
    path = tmp_path / "run.pt"
    distill(student(), data, QUICK, progress=False, checkpoint=path)
    other = replace(data, x_val=data.x_val[:20], y_val=data.y_val[:20])
    with pytest.raises(ConfigError, match=r"another run configuration \(val_data: "):
        distill(student(), other, QUICK, progress=False, resume=path)
    # A checkpoint from before the validation data was recorded still resumes.
    ckpt = torch.load(path, weights_only=True)
    run = json.loads(ckpt["run"])
    del run["val_data"]
    ckpt["run"] = json.dumps(run, sort_keys=True)
    torch.save(ckpt, path)
    distill(student(), data, QUICK, progress=False, resume=path)


def test_other_images_of_the_same_count_and_labels_are_refused_on_resume(data, tmp_path):
    """Only the first 64 images were hashed: a run resumed on images changed past them (the count and labels
    kept) trained its first epochs on one dataset and the rest on another, with no word."""
    path = tmp_path / "run.pt"
    distill(student(), data, QUICK, progress=False, checkpoint=path)
    x_train, x_val = data.x_train.copy(), data.x_val.copy()
    x_train[-1], x_val[-1] = 1.0, 1.0  # a white square past the first 64 of each split
    for other, key in ((replace(data, x_train=x_train), "images"), (replace(data, x_val=x_val), "val_images")):
        with pytest.raises(ConfigError, match=rf"another run configuration \(.*\b(?<!_){key}: "):
            distill(student(), other, QUICK, progress=False, resume=path)
    # A checkpoint from before every image was hashed is compared on its first 64, as it was made, and resumes.
    ckpt = torch.load(path, weights_only=True)
    run = json.loads(ckpt["run"])
    del run["images"], run["val_images"]
    ckpt["run"] = json.dumps(run, sort_keys=True)
    torch.save(ckpt, path)
    distill(student(), data, QUICK, progress=False, resume=path)


def test_resume_needs_an_existing_readable_checkpoint(data, tmp_path):
    with pytest.raises(ConfigError, match="resume needs a checkpoint"):
        distill(student(), data, QUICK, progress=False, resume=True)
    with pytest.raises(ConfigError, match="no checkpoint at .*missing.pt"):
        distill(student(), data, QUICK, progress=False, resume=tmp_path / "missing.pt")
    (tmp_path / "folder.pt").mkdir()  # there, but no file: "no checkpoint" named no reason
    with pytest.raises(ConfigError, match=r"^checkpoint .*folder.pt is a folder, not a file; remove it and start"):
        distill(student(), data, QUICK, progress=False, resume=tmp_path / "folder.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match="junk.pt cannot be read"):
        distill(student(), data, QUICK, progress=False, resume=junk)


def test_a_failed_write_keeps_the_previous_checkpoint(data, tmp_path, monkeypatch):
    from edgekd.distill import checkpoint as ckpt_module

    path = tmp_path / "run.pt"
    distill(student(), data, QUICK, progress=False, checkpoint=path)
    before = path.read_bytes()

    def broken_save(obj, f):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(ckpt_module.torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        ckpt_module.save_checkpoint(path, {"epoch": 3})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["run.pt"]


def test_a_disk_full_while_a_checkpoint_is_written_names_the_checkpoint(tmp_path, monkeypatch):
    """torch.save into an open file raised ENOSPC naming no file: the CLI said "check free space ... there"."""
    import errno

    from edgekd.distill import checkpoint as ckpt_module

    def full(obj, f):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(ckpt_module.torch, "save", full)
    with pytest.raises(OSError) as caught:
        ckpt_module.save_checkpoint(tmp_path / "checkpoint.pt", {"epoch": 3})
    assert caught.value.filename == str(tmp_path / "checkpoint.pt")
    assert list(tmp_path.iterdir()) == []


class NanAfter(TinyNet):
    """Returns NaN logits once it has trained on ``steps`` batches."""

    def __init__(self, steps: int) -> None:
        torch.manual_seed(0)
        super().__init__()
        self.steps, self.calls = steps, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(x)
        if self.training:
            self.calls += 1
            if self.calls > self.steps:
                out = out * float("nan")
        return out


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(data, tmp_path):
    path = tmp_path / "run.pt"
    batches = len(data.y_train) // QUICK.batch_size
    with pytest.raises(ModelError, match=r"loss became nan at epoch 2; the last good checkpoint \(epoch 1\) "
                                         r"is kept at .*run\.pt; lower the learning rate"):
        distill(NanAfter(batches), data, QUICK, progress=False, checkpoint=path)
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in ckpt["student"].values() if v.is_floating_point())


def _start_killable(tmp_path: Path, teacher: TinyNet, stop_after: int) -> subprocess.Popen:
    teacher_path = tmp_path / "teacher.pt"
    torch.save(teacher.state_dict(), teacher_path)
    args = [sys.executable, __file__, str(tmp_path / "cut.ckpt"), str(teacher_path), str(stop_after)]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _kill_after_checkpoint(proc: subprocess.Popen, epoch: int) -> None:
    ready, _, _ = select.select([proc.stdout], [], [], 300)
    line = proc.stdout.readline() if ready else ""
    if not line.startswith(f"checkpoint {epoch} written"):
        proc.kill()
        pytest.fail(f"the training subprocess did not reach epoch {epoch}: {line}{proc.communicate()[1][-2000:]}")
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL


def test_a_killed_run_resumes_to_bit_identical_weights(data, teacher, tmp_path):
    """A subprocess trains and is SIGKILLed after its epoch-2 checkpoint; this process resumes it and
    compares with an uninterrupted run (trained meanwhile), tensor by tensor."""
    killed = _start_killable(tmp_path, teacher, stop_after=2)
    full = distill(student(), data, RESUMABLE, teacher=teacher, progress=False, checkpoint=tmp_path / "full.ckpt")
    _kill_after_checkpoint(killed, 2)
    assert torch.load(tmp_path / "cut.ckpt", weights_only=True)["epoch"] == 2
    resumed = distill(student(seed=9), data, RESUMABLE, teacher=teacher, progress=False,
                      checkpoint=tmp_path / "cut.ckpt", resume=True)
    assert [h.epoch for h in resumed.history] == [1, 2, 3, 4] and resumed.best_epoch == full.best_epoch
    assert [(h.train_loss, h.val_accuracy) for h in resumed.history] == \
        [(h.train_loss, h.val_accuracy) for h in full.history]
    a, b = (torch.load(tmp_path / f"{name}.ckpt", weights_only=True) for name in ("full", "cut"))
    pairs = ((full.model.state_dict(), resumed.model.state_dict()), (a["student"], b["student"]),
             (a["parts"], b["parts"]))
    for left, right in pairs:
        assert left.keys() == right.keys()
        assert all(torch.equal(left[k], right[k]) for k in left)


def _script(argv: list[str]) -> None:
    """The run the kill test starts: trains like the test does, and after checkpoint ``stop_after``
    waits to be killed."""
    import time

    import edgekd.distill.trainer as trainer

    ckpt, teacher_path, stop_after = argv[0], argv[1], int(argv[2])
    torch.set_num_threads(1)
    save = trainer._save

    def save_then_wait(run, state, path):
        save(run, state, path)
        if state.epoch == stop_after:
            print(f"checkpoint {stop_after} written", flush=True)
            time.sleep(600)

    trainer._save = save_then_wait
    teacher = TinyNet(width=8)
    teacher.load_state_dict(torch.load(teacher_path, weights_only=True))
    distill(student(), tiny_data(), RESUMABLE, teacher=teacher.eval(), progress=False, checkpoint=ckpt)


if __name__ == "__main__":
    _script(sys.argv[1:])


def test_a_checkpoint_resumes_without_a_temperature_or_alpha_its_losses_never_read(tmp_path):
    """A run interrupted before an unread --temperature was refused recorded it; CompressConfig now refuses the
    flag, and resuming without it was refused as another run configuration: the run could not be resumed."""
    from edgekd.distill.checkpoint import TRAINING_KEYS, load_checkpoint, save_checkpoint
    from edgekd.errors import ConfigError

    def run(losses, **config):
        return {"config": {"temperature": 4.0, "alpha": 0.9, "use_labels": True, **config}, "losses": losses}

    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"arch": "a", "run": json.dumps(run([["ce", 1.0]], temperature=2.0, alpha=0.5)),
                           **{k: 0 for k in TRAINING_KEYS}})
    assert load_checkpoint(path, "a", run([["ce", 1.0]]))["epoch"] == 0
    # read by the losses of either side, they still tell two runs apart
    differs = r"another run configuration \(alpha: 0.5 -> 0.9; temperature: 2.0 -> 4.0; losses: "
    with pytest.raises(ConfigError, match=differs):
        load_checkpoint(path, "a", run([["kd", 1.0]]))
    save_checkpoint(path, {"arch": "a", "run": json.dumps(run([["kd", 1.0]], temperature=2.0)),
                           **{k: 0 for k in TRAINING_KEYS}})
    with pytest.raises(ConfigError, match=r"another run configuration \(temperature: 2.0 -> 4.0\)"):
        load_checkpoint(path, "a", run([["kd", 1.0]]))


def test_every_signal_held_while_a_checkpoint_is_written_is_delivered_after():
    """Only the first signal held was delivered: a SIGINT after a SIGTERM whose handler does not exit was lost."""
    import signal

    from edgekd.distill.checkpoint import interrupts_held

    heard: list[int] = []
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda got, _frame: heard.append(got))
    try:
        with interrupts_held():
            signal.raise_signal(signal.SIGTERM)
            signal.raise_signal(signal.SIGINT)
            signal.raise_signal(signal.SIGTERM)
            assert heard == []  # held
        assert heard == [signal.SIGTERM, signal.SIGINT]
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)


def test_a_checkpoint_of_another_process_count_says_how_to_launch_its_resume(data, tmp_path, monkeypatch):
    """A 2-process torchrun run resumed in one process was refused, after the data and teacher had loaded,
    as "another run configuration (processes: 2 -> 1); resume with the original settings": no flag sets it."""
    from edgekd.distill.checkpoint import check_resumable

    path = tmp_path / "run.pt"
    distill(student(), data, QUICK, progress=False, checkpoint=path)
    check_resumable(path, QUICK)  # the same single process
    saved = torch.load(path, weights_only=True)
    saved["run"] = json.dumps({**json.loads(saved["run"]), "processes": 2})
    torch.save(saved, path)
    for resume in (lambda: check_resumable(path, QUICK), lambda: distill(student(), data, QUICK, progress=False,
                                                                         resume=path)):
        with pytest.raises(ConfigError) as caught:
            resume()
        assert caught.value.message.startswith(
            f"checkpoint {path} was written by a run of 2 training processes (torchrun --nproc-per-node 2), and this "
            "one is one process (no torchrun); resume it under `torchrun --nproc-per-node 2 -m edgekd distill ...`")
    monkeypatch.setenv("WORLD_SIZE", "1")  # torchrun --nproc-per-node 1: one process, but under torchrun
    with pytest.raises(ConfigError, match=r"2 training processes .*, and this one is one process \(torchrun "
                                          r"--nproc-per-node 1\); resume it under `torchrun --nproc-per-node 2"):
        check_resumable(path, QUICK)
    monkeypatch.setenv("WORLD_SIZE", "3")  # as torchrun --nproc-per-node 3 sets it, for the early check
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(ConfigError, match=r"2 training processes .*, and this one is 3 training processes"):
        check_resumable(path, QUICK)

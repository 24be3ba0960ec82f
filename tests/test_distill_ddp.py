"""Data-parallel distillation under ``torchrun --nproc-per-node 2`` (gloo on CPU): both ranks end with
identical weights and only rank 0 writes the checkpoint.

Run by torchrun (``test_distill_ddp.py OUT_DIR TEACHER_WEIGHTS``) this file is the training worker.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from test_distill import TinyNet, student, tiny_data, trained_teacher

from edgekd.distill.ddp import World, shard
from edgekd.distill.trainer import distill
from edgekd.types import DistillConfig

CFG = DistillConfig(epochs=2, lr=5e-2, batch_size=32, augment=True, losses="kd:1,hint:0.5", seed=1)


def test_each_rank_trains_on_its_slice_of_every_batch():
    idx = torch.arange(10).numpy()
    parts = [shard(idx, World(rank, 3)).tolist() for rank in range(3)]
    assert parts == [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]]
    assert shard(idx, World()).tolist() == list(range(10))


@pytest.mark.slow  # ~20 s on 2 shared cores: three processes import torch
def test_torchrun_ranks_end_with_identical_weights(tmp_path):
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        teacher = trained_teacher(tiny_data())
    finally:
        torch.set_num_threads(before)
    torch.save(teacher.state_dict(), tmp_path / "teacher.pt")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           __file__, str(tmp_path), str(tmp_path / "teacher.pt")],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    best = [r["best"] for r in ranks]
    assert best[0].keys() == best[1].keys() and all(torch.equal(best[0][k], best[1][k]) for k in best[0])
    assert ranks[0]["history"] == ranks[1]["history"] and ranks[0]["best_epoch"] == ranks[1]["best_epoch"]
    assert ranks[0]["trained_by"] == (2, 1)  # the record says what changes the weights: processes and threads
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".ckpt") == ["run.ckpt"]
    ckpt = torch.load(tmp_path / "run.ckpt", weights_only=True)
    assert ckpt["epoch"] == 2 and json.loads(ckpt["run"])["processes"] == 2
    assert all(torch.equal(ckpt["best"]["state"][k], best[0][k]) for k in best[0])


def _worker(out: str, teacher_path: str) -> None:
    from pathlib import Path

    torch.set_num_threads(1)
    teacher = TinyNet(width=8)
    teacher.load_state_dict(torch.load(teacher_path, weights_only=True))
    result = distill(student(), tiny_data(), CFG, teacher=teacher.eval(), progress=False,
                     checkpoint=Path(out) / "run.ckpt")
    torch.save({"best": result.model.state_dict(), "best_epoch": result.best_epoch,
                "trained_by": (result.processes, result.threads),
                "history": [(h.epoch, h.train_loss, h.val_accuracy) for h in result.history]},
               Path(out) / f"rank{os.environ['RANK']}.pt")


if __name__ == "__main__":
    _worker(*sys.argv[1:3])


def test_a_rank_without_a_world_of_several_is_one_process_and_bad_numbers_are_refused(monkeypatch):
    """A stray RANK made distill a silent follower that wrote nothing; a WORLD_SIZE that is no number was a
    traceback."""
    from edgekd.distill.ddp import launched
    from edgekd.errors import ConfigError

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setenv("RANK", "3")
    assert launched() == (1, 0)
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert launched() == (2, 3)
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ConfigError, match="WORLD_SIZE='two' is not a process count"):
        launched()


def test_a_world_size_without_the_rest_of_torchrun_s_environment_names_what_is_missing(monkeypatch):
    """With RANK set and MASTER_ADDR not, the error said "without RANK/MASTER_ADDR"."""
    from edgekd.distill.ddp import join
    from edgekd.errors import ConfigError

    monkeypatch.delenv("MASTER_ADDR", raising=False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    with pytest.raises(ConfigError, match=r"^WORLD_SIZE=2 is set without MASTER_ADDR; "):
        join(torch.nn.Linear(2, 2))
    monkeypatch.delenv("RANK")
    with pytest.raises(ConfigError, match=r"^WORLD_SIZE=2 is set without RANK and MASTER_ADDR; "):
        join(torch.nn.Linear(2, 2))


def test_a_training_process_lost_mid_run_is_one_line_naming_the_checkpoint_to_resume(tmp_path, monkeypatch):
    """One rank killed (the OOM killer, a node lost) left rank 0 a ~50-line traceback ending in gloo's
    "Connection reset by peer", and no word that its checkpoint could be resumed. Stood in for without torchrun:
    a world of two whose gradient sync fails once the first checkpoint is written."""
    import edgekd.distill.ddp as ddp
    from edgekd.errors import ModelError

    lost: list[int] = []

    def wrap(_world, _student, _parts, loss):
        def step(index, xb):
            if lost:
                raise RuntimeError("[../third_party/gloo/gloo/transport/tcp/pair.cc:537] Read error "
                                   "[127.0.0.1]:41149: Connection reset by peer")
            return loss(index, xb)
        return step

    monkeypatch.setattr(ddp, "join", lambda _student: World(0, 2))
    monkeypatch.setattr(ddp, "wrap", wrap)
    monkeypatch.setattr(ddp, "global_mean", lambda value, _world: value.detach())
    monkeypatch.setattr(ddp, "sync_buffers", lambda *_args: None)
    ckpt = tmp_path / "checkpoint.pt"
    config = DistillConfig(epochs=3, lr=5e-2, batch_size=32, augment=False, seed=1)
    with pytest.raises(ModelError, match=r"^another of the 2 training processes stopped \(connection reset\), and "
                       rf"this one \(rank 0\) cannot train on without it; {ckpt} holds the last finished epoch \(1\); "
                       r".*run the same command with --resume"):
        distill(student(), tiny_data(), config, progress=False, checkpoint=ckpt,
                on_checkpoint=lambda _path: lost.append(1))

    def broken(_index, _xb):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    monkeypatch.setattr(ddp, "wrap", lambda *_args: broken)
    with pytest.raises(RuntimeError, match="^mat1 and mat2"):  # any other error passes through as it came
        distill(student(), tiny_data(), config, progress=False)

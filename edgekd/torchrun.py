"""Where this process stands in a ``torchrun`` launch, read from torchrun's environment without importing
torch: the CLI reads it for every error line, and ``edgekd --help`` stays instant."""

from __future__ import annotations

import os

from edgekd.errors import ConfigError


def env_world() -> tuple[int, int]:
    """(processes, this one's rank) that torchrun's WORLD_SIZE and RANK ask for; (1, 0) alone. A RANK without a
    WORLD_SIZE above one is no run of several, and is ignored. A value that is no count or rank is a
    ConfigError: a stray one made distill a silent follower that wrote nothing."""
    size, rank = _env_int("WORLD_SIZE", 1), _env_int("RANK", 0)
    return (size, rank) if size > 1 else (1, 0)


def _env_int(name: str, default: int) -> int:
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise ConfigError(f"{name}={text!r} is not a process count or rank",
                          "start distributed training with torchrun --nproc-per-node N, or unset it")
    return value


def check_alone(command: str) -> None:
    """Refuse every command but distill under torchrun: each process ran the whole command, searching and
    measuring on its own (two at once on one machine, each timing the other's load) and writing one --out,
    and compress's training then joined them into one data-parallel run of students they chose apart."""
    size, _ = env_world()
    if size > 1:
        raise ConfigError(f"`edgekd {command}` runs in one process, not under torchrun's {size}",
                          "run it without torchrun; to train data-parallel, run `torchrun --nproc-per-node N -m "
                          "edgekd distill --search search.json --out DIR`, then `edgekd compress --distilled DIR`")

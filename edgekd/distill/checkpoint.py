"""Training checkpoints: written atomically after every epoch, loaded with ``weights_only=True``, and
refused when they come from another architecture or another run configuration."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgekd.errors import ConfigError, ModelError
from edgekd.fsutil import creation_mode

FORMAT = 1


def arch_fingerprint(model: torch.nn.Module) -> str:
    """A hash of the sorted state_dict keys and shapes: equal for models of one architecture."""
    if hasattr(model, "sha256"):  # an ONNX teacher: its file and external data files (OnnxTeacher's digest)
        return str(model.sha256)[:16]
    if not hasattr(model, "state_dict"):  # a torch.export teacher wrapper: its parameters' shapes
        return hashlib.sha256(json.dumps([list(p.shape) for p in model.parameters()]).encode()).hexdigest()[:16]
    layout = sorted((k, list(v.shape)) for k, v in model.state_dict().items())
    return hashlib.sha256(json.dumps(layout).encode()).hexdigest()[:16]


def weights_fingerprint(model: Any) -> str:
    """A hash of the values of ``model``'s weights and buffers: a teacher trained further, or loaded with other
    weights, differs from the one a checkpoint was distilled from though its architecture is the same."""
    if hasattr(model, "sha256"):  # an ONNX teacher: its weights are in its file or in external data files beside it
        return str(model.sha256)[:16]
    tensors = (sorted(model.state_dict().items()) if hasattr(model, "state_dict")
               else list(enumerate(model.parameters())))
    h = hashlib.sha256()
    for key, value in tensors:
        h.update(str(key).encode())
        if isinstance(value, torch.Tensor):
            h.update(_raw_bytes(value))
    return h.hexdigest()[:16]


def _raw_bytes(tensor: torch.Tensor) -> bytes:
    tensor = tensor.detach().cpu()
    if tensor.is_quantized:
        tensor = tensor.int_repr()
    if tensor.layout != torch.strided:
        tensor = tensor.to_dense()
    return tensor.contiguous().view(-1).view(torch.uint8).numpy().tobytes()


def data_fingerprint(x: np.ndarray, y: np.ndarray, images: int | None = 64) -> str:
    """Shapes, all labels and the first ``images`` images (all of them with None). The first 64 alone, as
    checkpoints recorded them first, missed images changed past them with the count and labels kept; hashing
    them all costs a few milliseconds per 10 MB, and the images are in memory already."""
    h = hashlib.sha256(json.dumps([list(x.shape), str(x.dtype)]).encode())
    h.update(np.ascontiguousarray(y).tobytes())
    h.update(np.ascontiguousarray(x if images is None else x[:images]).tobytes())
    return h.hexdigest()[:16]


def images_fingerprint(x: np.ndarray, y: np.ndarray) -> str:
    """``data_fingerprint`` over every image: what a run records of its data (checkpoints, distill.json)."""
    return data_fingerprint(x, y, images=None)


def rng_state(rng: np.random.Generator) -> dict[str, Any]:
    """torch's and numpy's generator states as tensors and plain types (``weights_only`` loads them)."""
    return {"torch": torch.get_rng_state(), "numpy": json.dumps(rng.bit_generator.state)}


def set_rng_state(state: dict[str, Any], rng: np.random.Generator) -> None:
    torch.set_rng_state(state["torch"])
    rng.bit_generator.state = json.loads(state["numpy"])


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Write to a temporary file in the same folder, fsync, then ``os.replace``: a reader (or a run
    killed mid-write) only ever sees the previous complete checkpoint or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = creation_mode(path, folder=False)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            torch.save({"format": FORMAT, **payload}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        # torch.save and fsync into an open file name none (a system error, with errno: one without has no file)
        if isinstance(exc, OSError) and exc.errno is not None and exc.filename is None:
            exc.filename = str(path)
        raise


@contextlib.contextmanager
def interrupts_held() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM while a checkpoint is written and reported, and deliver them after: one arriving
    between the two left a complete checkpoint that the run did not know of, and the run, taking itself for one
    with nothing to resume, deleted it (or said "nothing was written")."""
    held = (signal.SIGINT, signal.SIGTERM)
    before = {s: signal.getsignal(s) for s in held}
    if threading.current_thread() is not threading.main_thread() or None in before.values():
        yield  # only the main thread may set a handler; one set outside Python cannot be put back
        return
    caught: list[int] = []
    for s in held:
        signal.signal(s, lambda signum, _frame: caught.append(signum))
    try:
        yield
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)
        for signum in dict.fromkeys(caught):  # each signal held, once, in the order it came, to its own handler
            signal.raise_signal(signum)


def load_checkpoint(path: Path, arch: str, run: dict[str, Any]) -> dict[str, Any]:
    """Read ``path`` and check it belongs to this architecture (``arch``) and run description (``run``)."""
    data, saved = _read(path)
    fresh = _fresh(path)
    if data["arch"] != arch:
        raise ModelError(f"checkpoint {path} was written for another student architecture "
                         f"(fingerprint {data['arch']}, this student is {arch})", fresh)
    # A checkpoint written before one of these was recorded is not comparable on it, and still resumes.
    run = {k: v for k, v in run.items() if k in saved or k not in LATER_KEYS}
    _check_processes(path, saved.get("processes"), run.get("processes"))
    _check_same_run(path, saved, run)
    missing = next((k for k in TRAINING_KEYS if k not in data), None)
    if missing:
        raise not_a_checkpoint(path, f"it has no '{missing}'")
    return data


def check_resumable(path: Path, config: Any) -> None:
    """Refuse a checkpoint written with other training settings than ``config``'s (a DistillConfig), or by
    another number of processes than this run's, before the data and teacher load, which can take minutes;
    ``load_checkpoint`` checks the whole run description (data, teacher, architecture) once they have."""
    from edgekd.distill.ddp import launched

    _, saved = _read(path)
    _check_processes(path, saved.get("processes"), launched()[0])
    now = {"config": config_record(config), "losses": [list(t) for t in (config.losses or (("kd", 1.0),))]}
    _check_same_run(path, {k: saved.get(k) for k in now}, now)


def config_record(config: Any) -> dict[str, Any]:
    """``config`` (a DistillConfig) as a run description records it."""
    record = json.loads(json.dumps(config.to_dict()))
    if record.get("keep") == "best":  # as before the option existed, so that their checkpoints still resume
        del record["keep"]
    return record


def _read(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The checkpoint at ``path`` and the run description it records, or the reason it is not one."""
    fresh = _fresh(path)
    if path.is_dir():  # "no checkpoint" named no reason for the one that is there
        raise ConfigError(f"checkpoint {path} is a folder, not a file", f"remove it and {fresh}")
    if not path.is_file():
        raise ConfigError(f"no checkpoint at {path} to resume from", "run without resume to start fresh")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt or foreign files
        raise ModelError(f"checkpoint {path} cannot be read ({type(exc).__name__}: {str(exc)[:200]})",
                         f"delete it and {fresh}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ModelError(f"{path} is not an edgekd training checkpoint (format {FORMAT})", fresh)
    # The right format with fields missing (a file written by hand, or by another tool) was a KeyError traceback.
    missing = next((k for k in ("arch", "run") if k not in data), None)
    if missing:
        raise not_a_checkpoint(path, f"it has no '{missing}'")
    try:
        saved = json.loads(data["run"])
    except (TypeError, ValueError):
        raise not_a_checkpoint(path, "its 'run' is not a run description") from None
    if not isinstance(saved, dict):
        raise not_a_checkpoint(path, "its 'run' is not a run description")
    return data, saved


def _check_processes(path: Path, saved: Any, now: Any) -> None:
    """A run of N processes resumes as N: each trains its shard of every batch, and the data order and
    batch statistics are those of N. No flag of edgekd sets N (torchrun does), so the generic "resume with
    the original settings" named nothing a user could pass back."""
    if not isinstance(saved, int) or not isinstance(now, int) or saved == now:
        return

    def said(n: int, here: bool) -> str:
        if n > 1:
            return f"{n} training processes (torchrun --nproc-per-node {n})"
        if not here:  # which of the two a run of one was, its checkpoint does not say
            return "one process (no torchrun, or torchrun --nproc-per-node 1)"
        # torchrun --nproc-per-node 1 is one process too: "no torchrun" told its user they had not used it
        return f"one process ({'torchrun --nproc-per-node 1' if os.environ.get('WORLD_SIZE') else 'no torchrun'})"

    launch = (f"under `torchrun --nproc-per-node {saved} -m edgekd distill ...`" if saved > 1
              else "without torchrun")
    raise ConfigError(f"checkpoint {path} was written by a run of {said(saved, False)}, and this one is "
                      f"{said(now, True)}", f"resume it {launch}, or {_fresh(path)}")


def _check_same_run(path: Path, saved: dict[str, Any], run: dict[str, Any]) -> None:
    saved, run = _without_unread(saved, run)
    if saved != run:
        raise ConfigError(f"checkpoint {path} was written by another run configuration ({_differences(saved, run)})",
                          f"resume with the original settings, or {_fresh(path)}")


def _without_unread(saved: dict[str, Any], run: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The run descriptions ``saved`` and ``run`` without the temperature and alpha that the losses of neither
    read. A run interrupted before those were refused recorded them, and dropping the flag, as CompressConfig
    now asks, was refused as another configuration: the run could not be resumed at all."""
    unread = set.intersection(*(_unread(side) for side in (saved, run)))
    if not unread:
        return saved, run

    def without(side: dict[str, Any]) -> dict[str, Any]:
        return {**side, "config": {k: v for k, v in side["config"].items() if k not in unread}}

    return without(saved), without(run)


def _unread(run: dict[str, Any]) -> set[str]:
    """Of temperature and alpha, those the losses of the run described by ``run`` never read."""
    from edgekd.distill.losses import reads

    config, losses = run.get("config"), run.get("losses")
    if not isinstance(config, dict) or not isinstance(losses, list):
        return set()  # not comparable on this: the description differs, or is refused, as it is
    try:
        read = reads([(name, weight) for name, weight in losses], bool(config.get("use_labels", True)))
    except (ConfigError, TypeError, ValueError):
        return set()
    return {k for k, is_read in read.items() if not is_read}


# What resuming reads besides the architecture and the run description.
TRAINING_KEYS = ("epoch", "student", "parts", "optimizer", "scheduler", "rng", "best", "history")


def not_a_checkpoint(path: Path, why: str) -> ModelError:
    """The refusal of a file with the checkpoint format's mark but not its contents (``why``)."""
    return ModelError(f"{path} is not an edgekd training checkpoint (format {FORMAT}, but {why})", _fresh(path))


def _fresh(path: Path) -> str:
    # Worded for `edgekd distill`, whose --out holds the checkpoint: there is no flag naming the checkpoint itself.
    return (f"start fresh without --resume (--force replaces '{path.parent}'), or give --out the folder of the run "
            "this command continues")


# What a run records beyond what the first checkpoints did: the teacher's weights, the validation data, and
# every training and validation image (``data`` and ``val_data`` hash the first 64, and are still compared as made).
LATER_KEYS = ("teacher_weights", "val_data", "images", "val_images")


def _differences(saved: dict[str, Any], now: dict[str, Any]) -> str:
    out, named = [], set()
    for key in sorted(set(saved) | set(now)):
        old, new = saved.get(key), now.get(key)
        if isinstance(old, dict) and isinstance(new, dict) and key == "config":
            named = {k for k in set(old) | set(new) if old.get(k) != new.get(k)}
            out += [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(named)]
        elif old != new and key not in named:  # the losses the config names differently were said once, as given
            out.append(f"{key}: {_short(old)} -> {_short(new)}")
    return "; ".join(out)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."

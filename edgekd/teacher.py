"""Teachers: the embedded default (trained on the fly, cached) and a user's own model.

A user's teacher is ``module_or_file.py:factory`` (with literal arguments if it takes any) plus a
state-dict file, a ``torch.export`` ``.pt2`` program, or (the Python API) a module already in memory.
Checkpoints load with ``weights_only=True``: a checkpoint never runs code.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.data import Dataset
from edgekd.errors import ConfigError, DataError, ModelError, api_log, first_line
from edgekd.teacher_files import is_torchscript, load_weights
from edgekd.teacher_spec import (
    FACTORY_REF,
    check_no_weights,
    import_ref,
    importable,
    is_onnx,
    is_program,
    parse_factory_ref,
    resolved_spec,
    teacher_origin,
    user_folders,
)
from edgekd.types import DistillConfig


@dataclass(frozen=True)
class TeacherRecipe:
    """The embedded default teacher: a small ResNet trained on the default data."""

    stem: int = 24
    widths: tuple[int, ...] = (24, 48, 96)
    depths: tuple[int, ...] = (2, 2, 2)
    training: DistillConfig = field(default_factory=lambda: DistillConfig(
        epochs=15, lr=3e-3, weight_decay=1e-4, augment=True, seed=0))

    def digest(self, data: Dataset) -> str:
        """Of what changes the trained teacher. Training options left at their defaults are left out, so a
        new option added to DistillConfig does not make every cached teacher stale."""
        recipe = asdict(self)
        # The defaults as they stood when caches were first written (epochs 30, lr 0.01, weight decay 5e-4):
        # compared with today's, a training option now at its default would drop out and every cache go stale.
        defaults = {**DistillConfig().to_dict(), "epochs": 30, "lr": 0.01, "weight_decay": 5e-4}
        recipe["training"] = {k: v for k, v in self.training.to_dict().items() if v != defaults.get(k)}
        from edgekd.preprocess import comparable

        # comparable: a teacher cached before the resize method was named exactly is the same teacher
        payload = json.dumps({"recipe": recipe, "data": comparable(data.describe()), "version": 2}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


@dataclass(frozen=True, eq=False)
class Teacher:
    module: Any  # torch.nn.Module in eval mode
    source: str  # how it was obtained, for the manifest
    exportable: bool = True  # an eager nn.Module (or .pt2 program) the ONNX exporter accepts
    origin: str | None = None  # what runs compare to tell teachers apart (teacher_origin); None: in memory
    # The seed of the run split whose training images trained it (the default teacher, trained by edgekd on
    # it): its file then records that split as a student's does. None: trained elsewhere, on images edgekd
    # cannot know, so no split is claimed for it.
    split_seed: int | None = None
    # (spec, weights) load_teacher read it from, their files resolved: what a run given this Teacher records, as
    # it records a spec given as text; None for a module held in memory or the default teacher
    files: tuple[str, str | None] | None = None
    loaded: tuple[Any, ...] | None = field(default=None, repr=False)  # weights_state(module) as load_teacher left it


def weights_state(module: Any) -> tuple[Any, ...] | None:
    """Which tensors ``module`` holds and how often each was changed in place (torch counts every in-place
    write of a tensor, an optimizer step's too): differs once it is trained further or given other weights
    or layers, at no cost of hashing them. None for a teacher torch holds no state dict of (ONNX)."""
    if not hasattr(module, "state_dict"):
        return None
    return tuple((name, id(t), t._version) for name, t in module.state_dict(keep_vars=True).items())


DEFAULT_ORIGIN = "default resnet teacher"  # one per data, which runs compare on their own


def cache_dir() -> Path:
    env = os.environ.get("EDGEKD_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "edgekd"


def uncached_warning(what: str, path: Path, exc: Exception) -> str:
    """The line logged when a cache entry cannot be written: a cache only saves work, so the run goes on."""
    return f"warning: {what}: {getattr(exc, 'strerror', None) or exc} ({path}); check EDGEKD_CACHE_DIR"


def default_teacher(data: Dataset, recipe: TeacherRecipe | None = None, progress: bool = True,
                    log: Callable[[str], None] | None = None, seed: int | None = None) -> Teacher:
    """The default ResNet teacher for ``data``: loaded from the cache, or trained and cached (``log``
    hears the epochs when there is no progress bar). ``seed``: the one that split ``data``, recorded as the
    teacher's ``split_seed`` where it trained on that split (see ``_trained_split``)."""
    import torch

    from edgekd.distill.trainer import distill
    from edgekd.models import resnet, stem_pools

    recipe = recipe or TeacherRecipe()
    c, h, w = data.input_shape
    pools = stem_pools(min(h, w), 1)  # none at digits' 32x32; large images pooled as the students are

    def seeded() -> Any:
        with torch.random.fork_rng(devices=[]):  # the caller's generator is handed back as it was
            torch.manual_seed(recipe.training.seed)
            return resnet(c, data.num_classes, recipe.stem, recipe.widths, recipe.depths, pools=pools)

    model = seeded()
    path = cache_dir() / "teachers" / f"resnet-{recipe.digest(data)}.pt"
    if path.is_file():
        try:
            model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
            model.eval()
            return Teacher(model, f"default resnet teacher (cached {path})", origin=DEFAULT_ORIGIN,
                           split_seed=_trained_split(path, data, seed))
        except Exception:  # a corrupt cache entry is retrained, never trusted
            path.unlink(missing_ok=True)
    model = seeded()  # a fresh one: the load above may have half-filled it
    distill(model, data, recipe.training, teacher=None, progress=progress, desc="teacher: training", log=log)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), tmp)
        _split_file(path).unlink(missing_ok=True)  # never beside weights it does not describe
        os.replace(tmp, path)
        _record_split(path, data, seed)
    except (OSError, RuntimeError) as exc:  # torch.save reports a failed write as RuntimeError
        # minutes of training are not thrown away for a cache: the run goes on, and says so
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        api_log(log)(uncached_warning("the trained teacher could not be cached (the next run "
                                                    "trains it again)", path, exc))
        return Teacher(model, "default resnet teacher (trained, not cached)", origin=DEFAULT_ORIGIN, split_seed=seed)
    return Teacher(model, f"default resnet teacher (trained, cached {path})", origin=DEFAULT_ORIGIN, split_seed=seed)


# The cache key (TeacherRecipe.digest) is the data's record, not its split: with --normalize none or MEAN/STD
# two seeds' runs share one cached teacher, trained on the first one's training images, some of which are the
# second's test images. So the split a cached teacher trained on is kept beside it, and claimed only when it
# is this run's.
def _split_file(weights: Path) -> Path:
    return weights.with_suffix(".split.json")


def _split_record(data: Dataset, seed: int | None) -> dict[str, Any] | None:
    from edgekd.data import split_fingerprint

    return None if seed is None else {"seed": int(seed), "split": split_fingerprint(data)}


def _record_split(weights: Path, data: Dataset, seed: int | None) -> None:
    record = _split_record(data, seed)
    if record is not None:
        with contextlib.suppress(OSError):  # without it the cached teacher claims no split: said less, not wrong
            _split_file(weights).write_text(json.dumps(record, sort_keys=True))


def _trained_split(weights: Path, data: Dataset, seed: int | None) -> int | None:
    """``seed`` when the cached teacher at ``weights`` was trained on the split it deals of ``data``, else None
    (another seed's, another pool of images, or a teacher cached before its split was kept)."""
    try:
        kept = json.loads(_split_file(weights).read_text())
    except (OSError, ValueError):
        return None
    from edgekd.data import same_split

    wanted = _split_record(data, seed)
    if wanted is None or not isinstance(kept, dict) or kept.get("seed") != wanted["seed"]:
        return None
    return seed if same_split(kept.get("split"), wanted["split"]) else None


SHOWN_CLASSES = 5  # the data's classes past the teacher's outputs named in the error


def _classes_unlike(data: Dataset, outputs: int) -> str:
    """The data's labels past the teacher's last output and how many images carry each, where the data has more
    classes than the teacher has ``outputs``: one bad row, a "nan" or a 10, makes a class of its own."""
    from edgekd.textfmt import one_line

    names = data.class_names
    if len(names) <= outputs:
        return ""
    counts = sum(np.bincount(y, minlength=len(names)) for y in (data.y_train, data.y_val, data.y_test))
    numbered = names == tuple(str(i) for i in range(len(names)))
    extra = [f"{'label' if numbered else 'class'} {names[i] if numbered else repr(one_line(names[i]))} "
             f"({int(counts[i])} image{'s' * (int(counts[i]) != 1)})" for i in range(outputs, len(names))]
    more = f", and {len(extra) - SHOWN_CLASSES} more" if len(extra) > SHOWN_CLASSES else ""
    return f"; past its {outputs} outputs: {', '.join(extra[:SHOWN_CLASSES])}{more}"


def load_teacher(spec: str, weights: str | None = None) -> Teacher:
    """A user's teacher: ``file.py:factory`` / ``package.module:factory`` (optionally with literal
    arguments, ``factory(num_classes=10)``) with ``weights``, a ``.pt2`` file, or an ``.onnx`` model
    (``edgekd.onnx_teacher``)."""
    if not isinstance(spec, (str, os.PathLike)):
        raise ConfigError(f"load_teacher takes a spec or a path, not a {type(spec).__name__}",
                          "pass a module you hold as it is (CompressConfig(teacher=model), search(model, ...)), "
                          "or name a file: load_teacher('my_model.py:build', weights='weights.pt')")
    spec = os.fspath(spec)
    check_no_weights(spec, weights)
    teacher = _load_teacher(spec, weights)
    return replace(teacher, origin=teacher_origin(spec, weights), files=resolved_spec(spec, weights),
                   loaded=weights_state(teacher.module))


def _load_teacher(spec: str, weights: str | None) -> Teacher:
    if is_program(spec):
        return _load_exported(Path(spec).expanduser())  # as the early file check and an .onnx read it
    if is_onnx(spec):
        return _load_onnx(Path(spec).expanduser())
    if FACTORY_REF.fullmatch(spec) is None:
        _refuse_model_file(spec)
    module_ref, factory_name, args, kwargs = parse_factory_ref(spec)
    with importable(*user_folders(module_ref)):  # the factory may import helpers too
        module = import_ref(module_ref)
        factory = getattr(module, factory_name, None)
        if not callable(factory):
            names = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_")
                           and getattr(v, "__module__", None) == module.__name__)
            raise ModelError(f"'{module_ref}' has no factory '{factory_name}'",
                             f"callables defined there: {', '.join(names) or 'none'}")
        try:
            model = factory(*args, **kwargs)
        except Exception as exc:
            raise ModelError(f"factory '{spec}' failed: {type(exc).__name__}: {exc}",
                             f"pass its arguments as literals, e.g. --teacher '{module_ref}:{factory_name}"
                             "(num_classes=10)', or fix the factory") from None
    import torch

    if not isinstance(model, torch.nn.Module):
        raise ModelError(f"factory '{spec}' returned {type(model).__name__}, not a torch.nn.Module",
                         "return the model instance from the factory")
    if weights is None:
        raise ModelError(f"teacher '{spec}' needs its trained weights", "pass --weights path/to/state_dict.pt")
    # float32 on the CPU, where edgekd distils and exports, whatever device or dtype the factory chose;
    # before the weights load, so that they keep their full precision
    model = model.float().cpu()
    load_weights(model, Path(weights).expanduser())
    return Teacher(model.eval(), f"{spec} with weights {weights}")


# Files users hand over as the teacher itself: they hold weights or a traced graph, not code that builds
# the module edgekd trains against (and prunes, and reads features from).
_WEIGHT_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".pkl", ".tar", ".safetensors")
_GRAPH_SUFFIXES = (".ptl", ".jit", ".torchscript", ".tflite")


def _refuse_model_file(spec: str) -> None:
    """A model or weights file passed as ``--teacher``: say what edgekd needs instead of only the form."""
    suffix = Path(spec).suffix.lower()
    build = "--teacher my_model.py:build --weights state_dict.pt, a torch.export .pt2 file or an .onnx model"
    if suffix in _GRAPH_SUFFIXES or (suffix in _WEIGHT_SUFFIXES and is_torchscript(Path(spec))):
        raise ModelError(f"teacher '{spec}' is a TorchScript or mobile model; edgekd needs the module in Python",
                         f"pass {build} exported from the code that scripted it")
    if suffix in _WEIGHT_SUFFIXES:
        raise ModelError(f"teacher '{spec}' is a weights file; edgekd needs the code that builds the model too",
                         f"pass --teacher my_model.py:build --weights {spec} (a state dict, or a checkpoint "
                         "holding one), or a torch.export .pt2 file")


def from_module(module: Any) -> Teacher:
    """A teacher handed over in memory (the Python API). edgekd works on a float32 CPU copy in eval mode
    (it distils and exports on the CPU), so the caller's module keeps its device, dtype, mode and weights
    whatever the run does."""
    import copy

    try:
        model = copy.deepcopy(module)
    except Exception as exc:
        raise ModelError(f"the teacher module cannot be copied ({type(exc).__name__}: {exc})",
                         "pass it as file.py:factory with weights, or as a torch.export .pt2 file") from None
    cls = type(module)
    return Teacher(model.float().cpu().eval(), f"in-memory module {cls.__module__}.{cls.__qualname__} (Python API)")


def api_teacher(teacher: Any, data: Dataset) -> Any:
    """The module ``search()`` or ``distill()`` runs for the ``teacher`` handed to it, as compress takes one: a
    Teacher's module; a module of another dtype or device as a float32 CPU copy (the caller's is left as it
    is); and one that does not fit ``data``, or returns probabilities, refused before any work (they were raw
    torch tracebacks, or a near-uniform target distilled in silence). None stays None."""
    import torch

    if teacher is None:
        return None
    if isinstance(teacher, (str, os.PathLike)):
        raise ConfigError(f"the teacher '{os.fspath(teacher)}' is a spec, and this function takes the model",
                          f"pass load_teacher({os.fspath(teacher)!r}, weights), or the torch module itself")
    teacher = teacher.module if isinstance(teacher, Teacher) else teacher
    if isinstance(teacher, torch.nn.Module) and any(t.is_floating_point() and (t.dtype != torch.float32 or
                                                                               t.device.type != "cpu")
                                                    for t in (*teacher.parameters(), *teacher.buffers())):
        teacher = from_module(teacher).module
    check_fits(Teacher(teacher, "the teacher"), data)
    return teacher


def logits_only(teacher: Teacher, data: Dataset) -> Teacher:
    """``teacher``, or (when its forward returns a mapping with ``logits``, as Hugging Face models do) the
    same module taken by its logits (``edgekd.teacher_logits``); a .pt2 program exported again so."""
    import torch

    sample = torch.from_numpy(np.ascontiguousarray(data.x_val[:2]))
    try:
        with torch.inference_mode():
            out = teacher.module(sample)
    except Exception:
        return teacher  # check_fits names what does not fit
    from edgekd.teacher_files import ExportedTeacher, logits_program
    from edgekd.teacher_logits import LogitsOf, gives_logits_mapping

    if not gives_logits_mapping(out):
        return teacher
    source = f"{teacher.source}, its 'logits' output"
    if isinstance(teacher.module, ExportedTeacher):
        return replace(teacher, module=logits_program(teacher.module, sample), source=source)
    if not isinstance(teacher.module, torch.nn.Module):
        return teacher
    return replace(teacher, module=LogitsOf(teacher.module).eval(), source=source)


def check_fits(teacher: Teacher, data: Dataset) -> None:
    """Run one sample through the teacher; shape errors become a DataError naming both shapes."""
    import torch

    from edgekd.distill.taps import evaluating, runs_on

    sample = torch.from_numpy(np.ascontiguousarray(data.x_val[:4]))
    try:
        # in eval mode, as it teaches: a caller's teacher left in train mode had its BatchNorm statistics moved
        # by this look (inference_mode does not stop them), and search() and distill() changed the user's model
        with torch.inference_mode(), evaluating(teacher.module):
            out = teacher.module(sample)
    except Exception as exc:
        first = first_line(exc, 160)
        if len(sample) > 1 and not hasattr(teacher.module, "bind") and runs_on(teacher.module, sample[:1]):
            # the images fit (one goes through): a forward written for one image, which distillation feeds batches
            again = " and export it again" if _is_exported(teacher) else ""
            raise ModelError(f"the teacher fixes its batch size: it runs one image but not a batch of {len(sample)} "
                             f"({first})", "write its forward for any batch (x.flatten(1) or x.view(x.size(0), -1), "
                             f"not x.view(1, -1)){again}") from None
        if _takes_channels_last(teacher, sample):
            channels, height, width = data.input_shape
            raise ModelError(f"the teacher takes channels-last images (batch, {height}, {width}, {channels}) and "
                             f"edgekd feeds (batch, {channels}, {height}, {width}) ({first})",
                             "wrap it in a module whose forward returns model(x.permute(0, 2, 3, 1)) and teach "
                             "with that (" + ("export the wrapper again" if _is_exported(teacher) else
                                              "--teacher my_model.py:factory returning it") + ")") from None
        raise DataError(f"data images of shape {data.input_shape} do not fit the teacher ({first})",
                        "pass data at the resolution and channel count the teacher was trained on "
                        "(see --resolution and --channels)") from None
    again = " and export it again" if _is_exported(teacher) else ""
    if not isinstance(out, torch.Tensor) or out.ndim != 2:
        what = f"a tensor of shape {tuple(out.shape)}" if isinstance(out, torch.Tensor) else f"a {type(out).__name__}"
        raise ModelError(f"the teacher's forward returns {what}, not (batch, classes) logits",
                         "make forward return the logits tensor alone, or a dict holding it under 'logits' (wrap "
                         f"the model if it returns auxiliary outputs){again}")
    if out.shape[1] != data.num_classes:
        raise DataError(f"the teacher predicts {out.shape[1]} classes but the data has {data.num_classes}"
                        f"{_classes_unlike(data, int(out.shape[1]))}",
                        "pass data with as many classes as the teacher predicts" + (
                            " (correct or remove the images of those labels)" if data.num_classes > out.shape[1]
                            else ""))
    # Softmax outputs as logits would distil a nearly uniform target at any temperature.
    if len(out) > 1 and float(out.min()) >= 0 and torch.allclose(out.float().sum(1), torch.ones(len(out)), atol=1e-3):
        if hasattr(teacher.module, "bind"):  # an ONNX model: its graph is what changes, not a forward
            raise ModelError(f"teacher '{teacher.module.path}' outputs probabilities (every row is >= 0 and sums "
                             "to 1), and distillation needs logits", "export the model without its final softmax, "
                             "or with it as one Softmax node (distilled from its log) or a LogSoftmax")
        raise ModelError("the teacher's forward returns probabilities (every row is >= 0 and sums to 1), and "
                         "distillation needs logits", "return the scores before the softmax (log-probabilities "
                         f"from log_softmax work too){again}")


def _takes_channels_last(teacher: Teacher, sample: Any) -> bool:
    """Whether a torch teacher that fails on (N, C, H, W) runs on the same images as (N, H, W, C): a model
    from a channels-last framework (its forward permutes to channels first), which no resolution or channel
    count fixes. Images as wide as they have channels are left out: both layouts are the same shape."""
    from edgekd.distill.taps import runs_on

    if hasattr(teacher.module, "bind") or sample.ndim != 4 or sample.shape[1] == sample.shape[3]:
        return False
    return runs_on(teacher.module, sample.permute(0, 2, 3, 1).contiguous())


def _is_exported(teacher: Teacher) -> bool:
    return hasattr(teacher.module, "program")


def _load_exported(path: Path) -> Teacher:
    from edgekd.teacher_files import load_exported

    return Teacher(load_exported(path), f"torch.export program {path}")


def _load_onnx(path: Path) -> Teacher:
    from edgekd.onnx_teacher import OnnxTeacher

    if not path.is_file():
        raise ModelError(f"teacher model '{path}' does not exist", "check the .onnx path")
    return Teacher(OnnxTeacher(path), f"ONNX model {path}")

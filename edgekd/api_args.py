"""What the Python API's stage functions (search, distill, prune_distill, validate) are handed, checked on the
way in: a path, a dict or a spec where they take a loaded object failed deep inside as a raw AttributeError
('str' object has no attribute 'x_val'), far from the argument that caused it. Each check names the argument
and the call that makes what it takes."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edgekd.errors import ConfigError, kind_of


def require_dataset(data: Any, optional: bool = False) -> None:
    """``data`` is a Dataset (or, with ``optional``, None)."""
    from edgekd.data import Dataset

    if isinstance(data, Dataset) or (optional and data is None):
        return
    source = repr(str(data)) if isinstance(data, (str, Path)) else "'digits'"
    raise ConfigError(f"data is {kind_of(data)}, not a Dataset",
                      f"pass load_data({source}), or load_data_for(model, ...) to read it as a model takes it")


def require_config(name: str, config: Any, kind: type, example: str = "") -> None:
    """``config`` is a ``kind`` (SearchConfig, DistillConfig, PruneConfig), made as ``example`` shows."""
    if isinstance(config, kind):
        return
    fix = (f"pass {kind.__name__}(**{name})" if isinstance(config, dict)
           else f"pass a {kind.__name__}, e.g. {kind.__name__}({example})")
    raise ConfigError(f"{name} is {kind_of(config)}, not a {kind.__name__}", fix)


def require_student(student: Any) -> None:
    """``student`` is a torch module to train: a StudentSpec is built first."""
    import torch

    from edgekd.types import StudentSpec

    if isinstance(student, torch.nn.Module):
        return
    fix = ("pass build_student(spec, data.input_shape, data.num_classes) (with teacher= for the 'pruned' space)"
           if isinstance(student, StudentSpec) else "pass the torch module to train, e.g. build_student(spec, "
           "data.input_shape, data.num_classes)")
    raise ConfigError(f"student is {kind_of(student)}, not a torch module", fix)


def require_artifacts(artifacts: Any) -> None:
    """``artifacts`` is a sequence of Artifact; a path to a model is read with artifact_from_file."""
    from edgekd.types import Artifact

    if isinstance(artifacts, Sequence) and not isinstance(artifacts, str) and all(
            isinstance(a, Artifact) for a in artifacts):
        return
    wrong = artifacts if isinstance(artifacts, (str, Path, Artifact)) or not isinstance(artifacts, Sequence) \
        else next(a for a in artifacts if not isinstance(a, Artifact))
    if isinstance(wrong, Artifact):
        fix = "pass a list of them: [artifact]"
    elif isinstance(wrong, (str, Path)):
        fix = f"pass [artifact_from_file({str(wrong)!r})]"
    else:
        fix = "pass [artifact_from_file('model.onnx')] for each model file"
    raise ConfigError(f"artifacts holds {kind_of(wrong)}, not an Artifact" if wrong is not artifacts else
                      f"artifacts is {kind_of(wrong)}, not a list of Artifact", fix)


def require_budget(budget: Any) -> None:
    """``budget`` is a Budget, or None for no limits."""
    from edgekd.types import Budget

    if budget is None or isinstance(budget, Budget):
        return
    raise ConfigError(f"budget {budget!r} is not a Budget", "pass Budget(latency_ms, max_size_kb), e.g. "
                      "Budget(0.5, 128)")


def require_references(references: Any) -> None:
    """``references`` maps an artifact's name to the torch model it must agree with (or is None)."""
    from collections.abc import Mapping

    if references is None or (isinstance(references, Mapping) and all(isinstance(k, str) for k in references)):
        return
    raise ConfigError(f"references is {kind_of(references)}, not a mapping of artifact names to models",
                      "pass {artifact.name: model}, e.g. {'student-fp32': student}")


def require_input_shape(input_shape: Any) -> None:
    """``input_shape`` is one image's (channels, height, width), as ``Dataset.input_shape`` gives it."""
    if isinstance(input_shape, Sequence) and not isinstance(input_shape, str) and len(input_shape) == 3 and all(
            isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in input_shape):
        return
    raise ConfigError(f"input_shape is {input_shape!r}, not (channels, height, width)",
                      "pass data.input_shape, e.g. (1, 16, 16) for 16x16 grayscale images")

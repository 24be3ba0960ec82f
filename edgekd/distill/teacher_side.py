"""The teacher's side of a distillation run: hooks on the layers the feature losses tap, its forward
pass without gradients, and its outputs over the training split computed once when inputs do not change
between epochs."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from edgekd.distill.run_state import RunState
from edgekd.errors import ConfigError

CACHE_LIMIT_BYTES = 1 << 30  # teacher features beyond this are recomputed per batch, not cached


def uses_features(terms: Any) -> bool:
    from edgekd.distill.losses import LOSSES

    return any(LOSSES.get(name).features for name, _ in terms)


def teacher_taps(teacher: Any, t_seen: dict[str, Any], paths: tuple[str, ...],
                 terms: Sequence[tuple[str, float]]) -> tuple[str, ...]:
    """The teacher layers the feature losses in ``terms`` tap (``paths``, or its last feature map), checked
    against the teacher and its forward pass (``t_seen``, from ``taps.output_shapes``): that they exist, run,
    and give what each loss takes. The pipeline checks them before a search, since the student's own taps can
    only be checked once a student is chosen."""
    from edgekd.distill.losses import check_tap_ranks
    from edgekd.distill.taps import default_tap, feature_maps, find_module, tap_shapes

    if not hasattr(teacher, "get_submodule"):
        raise ConfigError("feature losses (hint, at, rkd) tap the teacher's layers, and a torch.export "
                          "program or an ONNX teacher has none to tap", "use kd, dkd or dist, or load the teacher "
                          "as file.py:factory with its weights")
    paths = paths or (default_tap(t_seen, "teacher", terms),)
    for path in paths:
        find_module(teacher, path, "teacher", feature_maps(t_seen))
    check_tap_ranks(terms, tap_shapes(t_seen, paths, "teacher"), "teacher")
    return paths


def tap_pairs(student: Any, teacher: Any, example: Any, config: Any,
              terms: Sequence[tuple[str, float]]) -> list[tuple[str, str]]:
    """The (student, teacher) layers the feature losses in ``terms`` will tap, as the run resolves them: the
    configured ones, or each model's default. For the log before training, which otherwise named none."""
    from edgekd.distill.taps import default_tap, output_shapes

    t_paths = teacher_taps(teacher, output_shapes(teacher, example)[1], config.teacher_taps, terms)
    s_paths = config.student_taps or (default_tap(output_shapes(student, example)[1], "student", terms),)
    return list(zip(s_paths, t_paths))


def attach_features(run: RunState, s_seen: dict[str, Any], t_seen: dict[str, Any]) -> None:
    """Hooks on the tapped layers and the learned parts the feature losses need."""
    from edgekd.distill.losses import LOSSES, check_tap_ranks
    from edgekd.distill.taps import Taps, default_tap, feature_maps, find_module, tap_shapes

    if not uses_features(run.terms):
        return
    cfg = run.config
    t_paths = teacher_taps(run.teacher, t_seen, cfg.teacher_taps, run.terms)
    s_paths = cfg.student_taps or (default_tap(s_seen, "student", run.terms),)
    for path in s_paths:
        find_module(run.student, path, "student", feature_maps(s_seen))
    s_shapes = tap_shapes(s_seen, s_paths, "student")
    check_tap_ranks(run.terms, s_shapes, "student")
    shapes = list(zip(s_shapes, tap_shapes(t_seen, t_paths, "teacher")))
    for name, _ in run.terms:
        build = LOSSES.get(name).build
        if build is not None:
            run.parts[name] = build(shapes)
    run.student_taps = Taps(run.student, s_paths, "student")
    run.teacher_taps = Taps(run.teacher, t_paths, "teacher")


def teacher_forward(run: RunState, xb: Any) -> tuple[Any, tuple[Any, ...]]:
    import torch

    with torch.no_grad():
        if run.teacher_taps is None:
            return run.teacher(xb).float(), ()
        with run.teacher_taps.capture() as taps:
            logits = run.teacher(xb).float()
            return logits, tuple(f.float() for f in taps.features())


def teacher_cache(run: RunState, batch: int = 512) -> tuple[Any, tuple[Any, ...]] | None:
    """Without augmentation the teacher sees the same inputs every epoch: run it once."""
    import torch

    per_image = sum(math.prod(s[1:]) for s in _tapped_shapes(run))
    if per_image * 4 * len(run.x) > CACHE_LIMIT_BYTES:
        return None
    chunks = [teacher_forward(run, run.x[i:i + batch]) for i in range(0, len(run.x), batch)]
    logits = torch.cat([c[0] for c in chunks])
    feats = tuple(torch.cat([c[1][k] for c in chunks]) for k in range(len(chunks[0][1])))
    return logits, feats


def _tapped_shapes(run: RunState) -> list[tuple[int, ...]]:
    if run.teacher_taps is None:
        return []
    _, feats = teacher_forward(run, run.x[:1])
    return [tuple(f.shape) for f in feats]

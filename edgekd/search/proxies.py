"""Training-free scores of a student at random initialisation. Higher is better.

``diswot`` follows DisWOT (Dong et al., CVPR 2023): a student whose randomly initialised
features already relate samples the way the teacher's trained features do, and whose class
activation maps already look at the same places, distils better. Both similarities are
computed on one mini-batch, against the trained teacher. ``diswot_init`` is the paper's own
setting: the teacher's architecture and the student both at random initialisation, the semantic
term from the classifier's weight gradients (class-by-class similarity) instead of CAMs.
``naswot``, ``synflow`` and ``grad_norm`` are the zero-cost proxies of the NAS literature (Mellor
et al. 2021; Tanaka et al. 2020 / Abdelfattah et al. 2021), which ignore the teacher. ``params``
(more parameters is better) is the baseline every proxy must beat. ``zico`` (Li et al., ICLR 2023) is the
zero-cost proxy published as beating parameter count across NAS benchmarks: how consistent the
gradients are across mini-batches, relative to their size. ``diswot_params`` adds the two:
DisWOT's similarities say how alike a student already is to the teacher, not how much it can learn, and
on digits parameter count ranked distilled students better than any similarity alone.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgekd.registry import Registry


@dataclass(frozen=True, eq=False)
class Probe:
    """The teacher's side of a proxy, computed once: its last feature map and CAMs on a mini-batch."""

    x: Any  # torch.Tensor inputs
    y: Any  # torch.Tensor labels
    relation: Any  # (B, B) teacher sample-relation matrix
    cam: Any | None  # (B, B) teacher CAM-similarity matrix, None when the teacher has no feature map
    teacher: Any = None

    @functools.cached_property
    def init(self) -> tuple[Any, Any] | None:
        """(relation, class similarity) of the teacher's architecture at random initialisation, for
        diswot_init; None when the teacher is not an nn.Module with a Linear classifier. Computed on first
        use: only diswot_init needs it, and it copies the teacher."""
        import torch

        if not isinstance(self.teacher, torch.nn.Module) or not _classifier(self.teacher):
            return None
        return _at_init(self.teacher, self.x, self.y)


Proxy = Callable[[Any, Probe], float]
PROXIES: Registry[Proxy] = Registry("proxy")


def make_probe(teacher: Any, x: np.ndarray, y: np.ndarray | None) -> Probe:
    """The teacher's side on the images ``x``, each once, with labels ``y``; ``y=None`` (data whose labels are
    placeholders) labels each image with the teacher's predicted class."""
    import torch

    x, y = distinct_images(x, y)
    xb = torch.from_numpy(np.ascontiguousarray(x))
    feats, logits = _features_and_logits(teacher, xb, need_grad=True)
    yb = logits.detach().argmax(1) if y is None else torch.from_numpy(y)
    if feats is None:  # e.g. a torch.export program: no hooks; fall back to the logits' relations
        return Probe(xb, yb, _logit_relation(logits.detach()), None, teacher)
    return Probe(xb, yb, _relation(feats.detach()), _cam_relation(feats, logits, yb), teacher)


def distinct_images(x: np.ndarray, y: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    """``x`` (and its labels) without repeats of an image, in their order. A repeated image makes naswot's kernel
    singular and counts twice in every relation, so a batch that happens to hold one would score the same
    students otherwise than one that does not."""
    from edgekd.errors import DataError

    _, first = np.unique(np.asarray(x).reshape(len(x), -1), axis=0, return_index=True)
    if len(first) < 2:
        raise DataError(f"the search's probe batch of {len(x)} training images holds {len(first)} distinct image(s), "
                        "and its proxies compare images with each other",
                        "use training data with at least two different images")
    if len(first) == len(x):
        return x, y
    keep = np.sort(first)
    return x[keep], (None if y is None else y[keep])


@PROXIES.register("diswot")
def diswot(student: Any, probe: Probe) -> float:
    feats, logits = _features_and_logits(student, probe.x, need_grad=probe.cam is not None)
    if feats is None or probe.cam is None:
        return -_distance(_logit_relation(logits.detach()), probe.relation)
    rel = _distance(_relation(feats.detach()), probe.relation)
    sem = _distance(_cam_relation(feats, logits, probe.y), probe.cam)
    return -(rel + sem)


@PROXIES.register("diswot_params")
def diswot_params(student: Any, probe: Probe) -> float:
    """diswot plus the natural log of the parameter count, unweighted: doubling a student's parameters is
    worth as much as closing 0.69 of its distance to the teacher (5-12 on digits). On that log scale
    capacity decides between students of very different sizes, similarity between students of about one."""
    return diswot(student, probe) + float(np.log(params(student, probe)))


@PROXIES.register("diswot_init")
def diswot_init(student: Any, probe: Probe) -> float:
    """DisWOT as Dong et al. set it: the student and the teacher's architecture both randomly initialised
    (the student re-initialised here too, so a ``pruned`` student is scored at init like the others)."""
    from edgekd.errors import ModelError

    require_init(probe)
    if not _classifier(student):
        raise ModelError("the diswot_init proxy needs students ending in a Linear classifier",
                         "use --proxy diswot")
    # Relations of one kind on both sides: the student's logits where the teacher has no feature map.
    relation, classes = _at_init(student, probe.x, probe.y, logits=probe.cam is None)
    return -(_distance(relation, probe.init[0]) + _distance(classes, probe.init[1]))


def require_init(probe: Probe) -> None:
    """diswot_init's teacher side exists (the teacher is an nn.Module ending in a Linear classifier)."""
    from edgekd.errors import ModelError

    if probe.init is None:
        raise ModelError("the diswot_init proxy needs the teacher as an nn.Module ending in a Linear classifier",
                         "use --proxy diswot (it compares with the trained teacher's outputs)")


@PROXIES.register("params")
def params(student: Any, probe: Probe) -> float:
    return float(sum(p.numel() for p in student.parameters()))


NASWOT_RIDGE = 1e-9  # added to naswot's kernel, per ReLU unit, times the identity


@PROXIES.register("naswot")
def naswot(student: Any, probe: Probe) -> float:
    """log|K| of the Hamming-similarity kernel of ReLU on/off codes: inputs the untrained network
    already tells apart. Mellor et al., "Neural Architecture Search without Training", 2021."""
    import torch

    from edgekd.distill.taps import evaluating

    codes: list[Any] = []

    def hook(_module: Any, _inputs: Any, output: Any) -> None:
        codes.append((output.detach().flatten(1) > 0).double())

    handles = [m.register_forward_hook(hook) for m in student.modules() if isinstance(m, torch.nn.ReLU)]
    try:
        with evaluating(student), torch.no_grad():
            student(probe.x)
    finally:
        for h in handles:
            h.remove()
    if not codes:
        return 0.0
    c = torch.cat(codes, dim=1)
    kernel = c @ c.t() + (1 - c) @ (1 - c).t()
    # Two inputs with the same codes make the kernel singular and the score -inf, which the search reads as
    # infeasible: a ridge of NASWOT_RIDGE per unit keeps it finite (each code-for-code repeat costs about
    # log(NASWOT_RIDGE)), and a non-singular kernel's score moves by under 1e-6 (mbv2 and resnet students on 64
    # digits: scores of 520-630).
    kernel = kernel + NASWOT_RIDGE * c.shape[1] * torch.eye(len(c), dtype=kernel.dtype)
    return float(torch.linalg.slogdet(kernel)[1])


@PROXIES.register("synflow")
def synflow(student: Any, probe: Probe) -> float:
    """log of sum |theta * dR/dtheta| with R the output of the all-positive (|theta|) network on an
    all-ones input: data-free saliency flow (Tanaka et al. 2020). Computed in float64 on a copy."""
    import copy

    import torch

    model = copy.deepcopy(student).double().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.abs_()
    model.zero_grad()
    model(torch.ones((1, *probe.x.shape[1:]), dtype=torch.float64)).sum().backward()
    total = sum(float((p.detach() * p.grad).abs().sum()) for p in model.parameters() if p.grad is not None)
    return float(np.log(total)) if total > 0 else float("-inf")


@PROXIES.register("grad_norm")
def grad_norm(student: Any, probe: Probe) -> float:
    """Sum of the per-tensor L2 norms of the cross-entropy gradient on the probe batch."""
    import copy

    import torch.nn.functional as F

    model = copy.deepcopy(student).train()  # a copy: train mode would move the student's BN statistics
    F.cross_entropy(model(probe.x), probe.y).backward()
    return sum(float(p.grad.norm()) for p in model.parameters() if p.grad is not None)


ZICO_BATCHES = 2  # the paper's split of one batch; more halves the images each gradient sees


@PROXIES.register("zico")
def zico(student: Any, probe: Probe) -> float:
    """Sum over Conv2d and Linear layers of log(sum over weights of mean|g| / std(g)), with g the
    cross-entropy gradient of each of ``ZICO_BATCHES`` parts of the probe batch (ZiCo, Li et al.,
    "Zero-shot NAS via Inverse Coefficient of Variation on Gradients", ICLR 2023): a network whose
    gradients are large and agree across batches trains fast and far. Weights whose gradient does not
    vary are left out, as in the paper."""
    import copy

    import torch
    import torch.nn.functional as F

    model = copy.deepcopy(student).train()  # a copy: train mode would move the student's BN statistics
    layers = [m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    grads: list[list[Any]] = [[] for _ in layers]
    for xb, yb in zip(probe.x.chunk(ZICO_BATCHES), probe.y.chunk(ZICO_BATCHES), strict=True):
        model.zero_grad()
        F.cross_entropy(model(xb), yb).backward()
        for per_layer, layer in zip(grads, layers, strict=True):
            if layer.weight.grad is not None:
                per_layer.append(layer.weight.grad.detach().flatten().clone())
    total = 0.0
    for per_layer in grads:
        if len(per_layer) < 2:
            continue
        g = torch.stack(per_layer).double()
        std = g.std(dim=0, unbiased=False)
        varies = std > 0
        ratio = float((g.abs().mean(dim=0)[varies] / std[varies]).sum())
        if ratio > 0:
            total += float(np.log(ratio))
    return total


def _features_and_logits(model: Any, x: Any, need_grad: bool) -> tuple[Any, Any]:
    """Run ``model`` once, capturing the last multi-pixel 4-D activation through forward hooks."""
    import torch

    from edgekd.distill.taps import evaluating

    captured: list[Any] = []

    def hook(_module: Any, _inputs: Any, output: Any) -> Any:
        if not (isinstance(output, torch.Tensor) and output.ndim == 4 and output.shape[-1] * output.shape[-2] > 1):
            return None
        if need_grad and not output.requires_grad:
            # Frozen parameters (requires_grad_(False)) leave the map outside the graph, and Grad-CAM would have
            # nothing to differentiate: the rest of the forward runs on a copy that requires grad, so the
            # logits depend on it whatever the parameters' flags. A copy, not the leaf itself: an in-place
            # op after it (ReLU(inplace=True)) is refused on a leaf that requires grad.
            output = output.detach().requires_grad_().clone()
            captured.append(output)
            return output
        if need_grad:
            output.retain_grad()
        captured.append(output)
        return None

    handles = [m.register_forward_hook(hook) for _, m in model.named_modules()
               if isinstance(m, torch.nn.Module) and not list(m.children())]
    try:
        with evaluating(model), torch.set_grad_enabled(need_grad):
            logits = model(x)
    finally:
        for h in handles:
            h.remove()
    return (captured[-1] if captured else None), logits


def _relation(feats: Any) -> Any:
    import torch.nn.functional as F

    flat = feats.flatten(1)
    gram = flat @ flat.t()
    return F.normalize(gram, dim=1)


def _logit_relation(logits: Any) -> Any:
    """The sample relation of logits centred over the batch and over the classes. Over the batch: a randomly
    initialised student's rows are all but one vector (its biases dominate), so uncentred every student's
    relation came out alike and diswot scored them alike (a spread of 4e-4 over 12 mbv2 students against an
    MLP teacher, 3 centred). Over the classes: log-probabilities, which an ONNX teacher may give, are logits
    less a constant per sample, and then relate as the logits do."""
    centred = logits - logits.mean(dim=0, keepdim=True)
    return _relation(centred - centred.mean(dim=1, keepdim=True))


def _cam_relation(feats: Any, logits: Any, labels: Any) -> Any:
    """Grad-CAM of each sample's own class, compared across samples (B x B)."""
    import torch
    import torch.nn.functional as F

    if not logits.requires_grad:
        return _relation(feats.detach())
    score = logits.gather(1, labels[:, None]).sum()
    (grads,) = torch.autograd.grad(score, feats, retain_graph=False, allow_unused=True)
    if grads is None:
        return _relation(feats.detach())
    weights = grads.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * feats).sum(1, keepdim=True)).detach()
    cam = F.adaptive_avg_pool2d(cam, 8).flatten(1)
    cam = F.normalize(cam, dim=1)
    return F.normalize(cam @ cam.t(), dim=1)


def _classifier(model: Any) -> Any:
    """The last Linear layer, or None."""
    import torch

    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    return linears[-1] if linears else None


def _at_init(model: Any, x: Any, y: Any, logits: bool = False) -> tuple[Any, Any]:
    """(sample relation, class similarity) of a copy of ``model`` re-initialised with a fixed seed: the
    relation of its last multi-pixel feature map (or of its logits: with ``logits``, or when it has no such map), and
    the cosine similarity between classes of
    the cross-entropy gradient of its classifier's weights. The caller's random state is left as it was."""
    import copy

    import torch
    import torch.nn.functional as F

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = copy.deepcopy(model).eval()  # a copy: both passes below run it in eval mode
        for module in model.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
            if hasattr(module, "reset_running_stats"):
                module.reset_running_stats()
    feats, out = _features_and_logits(model, x, need_grad=False)
    relation = _logit_relation(out.detach()) if feats is None or logits else _relation(feats.detach())
    model.zero_grad()
    with torch.enable_grad():
        F.cross_entropy(model(x), y).backward()
    grad = F.normalize(_classifier(model).weight.grad.detach(), dim=1)
    return relation, F.normalize(grad @ grad.t(), dim=1)


def _distance(a: Any, b: Any) -> float:
    return float(((a - b) ** 2).sum().sqrt())

"""The report's plots, each a base64 PNG (matplotlib, Agg backend, imported only here and only when
called), or ``None`` when the manifest or search result lacks what the plot needs.

Every function takes plain manifest/search dicts, so a report can be rendered again from the JSON
files of any finished run.
"""

from __future__ import annotations

import base64
import io
import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from edgekd.types.search import LOWEST_SCORE

_BUDGET_STYLE = {"color": "tab:red", "linestyle": "--", "linewidth": 1}
# (color, marker, size) of the predicted-vs-measured series; a student file's point is labelled by its name
_LATENCY_STYLE = {"candidate": ("tab:blue", "o", 30), "chosen student": ("tab:orange", "*", 160),
                  "shipped": ("tab:red", "D", 60), "not shipped": ("tab:purple", "D", 60)}


@contextmanager
def _figure(ncols: int = 1, width: float = 6.4) -> Iterator[tuple[Any, Any, list[str]]]:
    """A figure with ``ncols`` axes; its PNG, base64-encoded, lands in the yielded list on exit."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    # Labels hold names from the user's files (a proxy, an artifact): a '$' in one is text, not TeX to parse.
    with matplotlib.rc_context({"text.parse_math": False}):
        fig, axes = plt.subplots(1, ncols, figsize=(width, 4.0), squeeze=False)
        png: list[str] = []
        try:
            yield fig, list(axes[0]), png
            fig.tight_layout()
            buf = io.BytesIO()
            fig.savefig(buf, format="png", dpi=96)
            png.append(base64.b64encode(buf.getvalue()).decode("ascii"))
        finally:
            plt.close(fig)


def candidate_key(candidate: dict[str, Any]) -> str:
    """The key search.json's ``pareto`` list uses (``StudentSpec.key``)."""
    spec = candidate["spec"]
    return f"{spec['space']}:{json.dumps(spec['config'], sort_keys=True)}"


def _latency(candidate: dict[str, Any]) -> float | None:
    """Measured latency when there is one, else the predicted one."""
    value = candidate.get("latency_ms")
    return value if value is not None else candidate.get("predicted_ms")


def pareto_plot(search: dict[str, Any] | None, budget_ms: float | None = None) -> str | None:
    """Proxy score vs latency of every candidate; the Pareto front joined, the chosen one starred."""
    if not search or not search.get("candidates"):
        return None
    points = [(c, _latency(c)) for c in search["candidates"]]
    # a score of -inf (unscored) or LOWEST_SCORE (a proxy's "nothing at all") has no place on the axis
    points = [(c, ms) for c, ms in points if ms is not None and math.isfinite(c["score"]) and c["score"] > LOWEST_SCORE]
    if not points:
        return None
    front = set(search.get("pareto", ()))
    chosen = candidate_key(search["chosen"]) if search.get("chosen") else None
    with _figure() as (_, (ax,), png):
        ax.scatter([ms for _, ms in points], [c["score"] for c, _ in points], s=18, color="tab:gray", alpha=0.6,
                   label="candidates")
        on_front = sorted((ms, c["score"]) for c, ms in points if candidate_key(c) in front)
        if on_front:
            ax.plot(*zip(*on_front), "o-", color="tab:blue", markersize=5, label="Pareto front")
        picked = [(ms, c["score"]) for c, ms in points if candidate_key(c) == chosen]
        if picked:
            ax.scatter(*zip(*picked), marker="*", s=220, color="tab:orange", edgecolor="black", zorder=5,
                       label="chosen")
        if budget_ms is not None:
            ax.axvline(budget_ms, **_BUDGET_STYLE, label=f"budget {budget_ms:g} ms")
        ax.set_xlabel("latency (ms; measured, else predicted)")
        ax.set_ylabel(f"proxy score ({search.get('proxy', '?')})")
        ax.set_title("Search: score vs latency")
        ax.legend(fontsize=8)
    return png[0]


def latency_pairs(manifest: dict[str, Any], search: dict[str, Any] | None) -> list[tuple[str, float, float]]:
    """(label, predicted ms, measured ms) wherever both are known: search candidates, the chosen student as the
    search measured it, and its file of the search's precision as validation measured it, labelled by name and
    called shipped only when it is the primary artifact. A student pruned after the search has no such point:
    the prediction is the searched network's, the file another, smaller one."""
    from edgekd.report import pruned_from_search

    pairs = []
    for c in (search or {}).get("candidates", []):
        if c.get("predicted_ms") is not None and c.get("latency_ms") is not None:
            pairs.append(("candidate", float(c["predicted_ms"]), float(c["latency_ms"])))
    student = manifest.get("student") or {}
    predicted = student.get("predicted_latency_ms")
    if predicted is None:
        return pairs
    if student.get("search_latency_ms") is not None:
        pairs.append(("chosen student", float(predicted), float(student["search_latency_ms"])))
    if pruned_from_search(student) is not None:
        return pairs
    precision = (search or {}).get("precision", "fp32")  # the precision the search predicted latency for
    for entry in manifest.get("artifacts") or []:
        art = entry["artifact"]
        if art["role"] == "student" and art["precision"] == precision and entry.get("latency"):
            label = f"shipped {art['name']}" if art["name"] == manifest.get("primary") else art["name"]
            pairs.append((f"{label} (validation)", float(predicted), float(entry["latency"]["p50_ms"])))
    return pairs


def _latency_style(label: str) -> tuple[str, str, int]:
    if label in _LATENCY_STYLE:
        return _LATENCY_STYLE[label]
    return _LATENCY_STYLE["shipped" if label.startswith("shipped ") else "not shipped"]


def latency_plot(manifest: dict[str, Any], search: dict[str, Any] | None) -> str | None:
    """Predicted vs measured latency with the y = x line and a +-10% band."""
    pairs = latency_pairs(manifest, search)
    if not pairs:
        return None
    with _figure() as (_, (ax,), png):
        for label in dict.fromkeys(lab for lab, _, _ in pairs):
            color, marker, size = _latency_style(label)
            xs = [(p, m) for lab, p, m in pairs if lab == label]
            ax.scatter(*zip(*xs), s=size, color=color, label=label, marker=marker, edgecolor="black",
                       linewidth=0.3, zorder=4)
        hi = max(max(p, m) for _, p, m in pairs) * 1.1
        ax.plot([0, hi], [0, hi], color="black", linewidth=1, label="measured = predicted")
        ax.fill_between([0, hi], [0, hi * 0.9], [0, hi * 1.1], color="tab:green", alpha=0.12, label="+-10%")
        ax.set_xlim(0, hi)
        ax.set_ylim(0, hi)
        ax.set_xlabel("predicted latency (ms)")
        ax.set_ylabel("measured latency (ms)")
        ax.set_title("Latency model: predicted vs measured")
        ax.legend(fontsize=8)
    return png[0]


def training_history(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    return list(((manifest.get("student") or {}).get("distill") or {}).get("history") or [])


def calibrated_point(distill: dict[str, Any]) -> tuple[list[int], list[float]] | None:
    """([epoch], [accuracy %]) of the kept student when QAT kept the calibrated one: that epoch's weights
    quantized before any QAT step, whose accuracy is not the fp32 point the curve shows at that epoch."""
    from edgekd.types import kept_calibrated

    best, acc = distill.get("best_epoch"), distill.get("best_val_accuracy")
    if acc is None or not kept_calibrated(best, distill.get("qat_start")):
        return None
    return [best], [acc * 100]


def training_plot(manifest: dict[str, Any]) -> str | None:
    """Train loss and validation accuracy per distillation epoch; the selected epoch marked."""
    history = training_history(manifest)
    if not history:
        return None
    distill = manifest["student"]["distill"]
    epochs = [h["epoch"] for h in history]
    with _figure(ncols=2, width=9.6) as (_, (loss_ax, acc_ax), png):
        loss_ax.plot(epochs, [h["train_loss"] for h in history], "o-", color="tab:blue", markersize=3)
        loss_ax.set_xlabel("epoch")
        loss_ax.set_ylabel("train loss")
        loss_ax.set_title("Distillation: train loss")
        acc_ax.plot(epochs, [h["val_accuracy"] * 100 for h in history], "o-", color="tab:green", markersize=3)
        best = distill.get("best_epoch")
        if best is not None:
            acc_ax.axvline(best, color="tab:orange", linestyle=":", label=f"selected epoch {best}")
            kept = calibrated_point(distill)
            if kept is not None:
                acc_ax.plot(*kept, "*", color="tab:orange", markersize=10, label="kept: quantized before QAT")
            acc_ax.legend(fontsize=8)
        acc_ax.set_xlabel("epoch")
        acc_ax.set_ylabel("validation accuracy (%)" if distill.get("selected_on", "val_labels") == "val_labels"
                          else "agreement with teacher (%)")
        acc_ax.set_title("Distillation: validation")
        from matplotlib.ticker import MaxNLocator

        for ax in (loss_ax, acc_ax):
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return png[0]


NOT_MEASURED = "not measured"  # a bar's label where the manifest records no figure


def comparison_plot(manifest: dict[str, Any]) -> str | None:
    """Accuracy, size and p50 latency of every artifact side by side; budget lines where there is a budget."""
    entries = manifest.get("artifacts") or []
    if not entries:
        return None
    names = [e["artifact"]["name"] for e in entries]
    colors = ["tab:gray" if e["artifact"]["role"] == "teacher" else
              ("tab:orange" if e.get("primary") else "tab:blue") for e in entries]
    budget = manifest.get("budget") or {}
    panels = [
        ("accuracy (%)", [e["accuracy"] * 100 if e.get("accuracy") is not None else None for e in entries], None),
        ("size (KB)", [e["artifact"]["size_bytes"] / 1024 for e in entries], budget.get("max_size_kb")),
        ("p50 latency (ms)", [(e.get("latency") or {}).get("p50_ms") for e in entries], budget.get("latency_ms")),
    ]
    with _figure(ncols=3, width=12.0) as (_, axes, png):
        for ax, (label, values, limit) in zip(axes, panels):
            # a figure the manifest does not hold is labelled so, not drawn as a bar of 0 (a 0 ms model)
            bars = ax.bar(range(len(names)), [v or 0 for v in values], color=colors)
            ax.bar_label(bars, labels=[NOT_MEASURED if v is None else f"{v:.4g}" for v in values], fontsize=7)
            if limit is not None:
                ax.axhline(limit, **_BUDGET_STYLE, label=f"budget {limit:g}")
                ax.legend(fontsize=8)
            ax.set_xticks(range(len(names)), names, rotation=20, ha="right", fontsize=8)
            ax.set_title(label)
    return png[0]

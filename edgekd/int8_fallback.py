"""The int8 guarantee: an int8 artifact that is not faster than its fp32 twin gets node-level fallback.

Quantize; measure int8 against fp32 interleaved on the profile; if int8 is not faster by ``margin``,
profile both per node (``edgekd.latency.nodeprofile``) and keep in fp32 the set of quantized nodes whose
int8 kernels, with the quantize/dequantize and layout nodes charged to them, cost more than the same
nodes in fp32 plus the new int8/fp32 boundaries that cutting them out adds (``edgekd.fallback_plan``:
an exact minimum cut over the int8 regions); quantize again and measure again. A few rounds at most; then
every round's file is measured once more in one interleaved run with fp32, and the fastest is kept.
Nothing is assumed: each decision is a measurement, and the result says whether int8 ended up faster.

Measured here (AVX2 without VNNI, host-cpu-1t, mbv2 students on 1x32x32, int8/fp32 p50): narrow
students (1.6x, 1.03x) only reach parity by falling back entirely, so they keep their int8 file and
say int8 is not faster; students with squeeze-excitation went from 1.08x to 0.94x and from 0.99x to
0.95x by keeping their early high-resolution convs, residual Adds (one fused kernel in fp32, a
QLinearAdd between layout transposes in int8) and SE ReduceMean/Mul in fp32; a wide one was 0.92x as is.

Per-node times come from onnxruntime on this machine with the profile's session settings. The
round measurements go through the profile's runner, so for a remote device they are the device's
while the node times that guide the exclusions are this host's (the result notes it).
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.errors import ConfigError, first_line
from edgekd.fallback_plan import Exclusion, boundary_ms_per_element, plan_exclusions, qdq_edges, quantized_nodes
from edgekd.profiles import DeviceProfile
from edgekd.types import Artifact, Ratio


@dataclass(frozen=True)
class FallbackConfig:
    """How hard to try (see ``edgekd.fallback_plan.plan_exclusions`` for how nodes are picked).

    ``margin``: int8 counts as faster when its p50 is at most (1 - margin) of fp32's (validate's
    INT8_MIN_GAIN). A set of nodes is kept fp32 when its int8 cost exceeds its fp32 cost times
    (1 + ``node_tolerance``), plus, with ``boundaries``, the estimated cost of the dequantize/quantize and
    layout changes that cutting it out of its int8 region adds (measured per element on the int8 file's
    existing boundaries), by more than ``node_min_ms`` (default 1 us: the profiler counts whole
    microseconds). ``max_per_round``: at most this many nodes kept fp32 per round (``None``: no limit).
    """

    rounds: int = 3  # re-quantizations after the first quantization
    margin: float = 0.02
    node_tolerance: float = 0.0
    node_min_ms: float = 0.001
    boundaries: bool = True  # count the estimated cost of the int8/fp32 boundaries an exclusion adds
    max_per_round: int | None = None
    profile_runs: int = 200
    profile_warmup: int = 20
    calibration_method: str = "minmax"  # the onnx-int8 exporter's: minmax, entropy or percentile
    # The size budget (--max-size-kb) in bytes: every node kept fp32 makes the file larger, so a round whose
    # file breaks the budget is kept only when no round fits (None: no limit).
    max_bytes: int | None = None

    def __post_init__(self) -> None:
        if self.rounds < 0:
            raise ConfigError(f"rounds must be >= 0, got {self.rounds}", "pass rounds=0 for no fallback")
        if not 0.0 <= self.margin <= 1.0:
            raise ConfigError(f"margin {self.margin} is not a fraction", "pass a margin between 0 and 1, e.g. 0.02")
        if self.node_tolerance < -1.0:
            raise ConfigError(f"node_tolerance {self.node_tolerance} is below -1", "pass a value >= -1, e.g. 0.0")
        if self.node_min_ms < 0:
            raise ConfigError(f"node_min_ms {self.node_min_ms} is negative", "pass 0 or more, e.g. 0.001")
        if self.max_per_round is not None and self.max_per_round < 1:
            raise ConfigError(f"max_per_round must be >= 1, got {self.max_per_round}", "or None for no limit")
        if self.max_bytes is not None and self.max_bytes < 0:
            raise ConfigError(f"max_bytes {self.max_bytes} is negative", "pass the size budget in bytes, or None")
        if self.profile_runs < 1 or self.profile_warmup < 0:
            raise ConfigError("profile_runs must be >= 1 and profile_warmup >= 0",
                              "pass e.g. profile_runs=200, profile_warmup=20")


@dataclass(frozen=True)
class FallbackRound:
    """One quantization: the nodes newly excluded before it and how it measured against fp32."""

    index: int
    excluded: tuple[Exclusion, ...]
    quantized: int  # nodes still quantized in this round's file
    int8_p50_ms: float
    fp32_p50_ms: float
    paired: Ratio | None = None  # int8/fp32 over this round's repeat-by-repeat pairs
    final: Ratio | None = None  # the same in the closing interleaved run of all rounds

    @property
    def ratio(self) -> float:
        """int8/fp32 measured interleaved in this round (below 1: int8 is faster): the median of the
        repeat-by-repeat ratios, which one busy stretch over one side's run cannot swing as it swings the
        ratio of two whole-run p50s; that ratio when the runner gave no repeat medians."""
        return self.paired.median if self.paired else self.int8_p50_ms / self.fp32_p50_ms

    @property
    def final_ratio(self) -> float | None:
        return self.final.median if self.final else None

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "excluded": [e.to_dict() for e in self.excluded], "quantized": self.quantized,
                "int8_p50_ms": self.int8_p50_ms, "fp32_p50_ms": self.fp32_p50_ms, "ratio": self.ratio,
                "final_ratio": self.final_ratio, "paired": self.paired.to_dict() if self.paired else None,
                "final": self.final.to_dict() if self.final else None}


@dataclass(frozen=True)
class FallbackResult:
    """The kept int8 artifact (the fastest round's file that still has int8 nodes, in ``out_dir``) and how
    it was reached. When ``faster`` is False the fp32 twin should ship, and ``stopped`` and the rounds
    say why."""

    artifact: Artifact
    rounds: tuple[FallbackRound, ...]
    best_round: int
    faster: bool  # the kept int8 beat fp32 by the margin in the closing measurement
    stopped: str  # why the loop ended
    notes: tuple[str, ...] = ()

    @property
    def path(self) -> str:
        return self.artifact.path

    @property
    def ratio(self) -> float:
        """The kept round's int8/fp32 ratio (the closing run's when there was one)."""
        return _ratio(self.rounds[self.best_round])

    @property
    def excluded(self) -> tuple[Exclusion, ...]:
        """Every node the fallback kept in fp32 in the kept round (the exporter's defaults not included)."""
        return tuple(e for r in self.rounds[: self.best_round + 1] for e in r.excluded)

    def summary(self) -> str:
        """One line for the log: which round's file is kept, how much of it runs in int8 and whether it beat
        fp32, then why the rounds stopped. The two are apart because the loop may stop at a round with
        nothing left in int8, whose file is never the one kept."""
        best = self.rounds[self.best_round]
        kept, total = best.quantized, self.rounds[0].quantized
        measured = best.final or best.paired
        spread = f" ({measured.interval()}) in {self.decided_by}" if measured else ""
        return (f"int8 file from round {self.best_round} of {len(self.rounds)}, {kept} of {total} quantizable "
                f"node(s) in int8, int8/fp32 latency {self.ratio:.2f}{spread}: {self.outcome}; "
                f"the rounds stopped: {self.stopped}")

    @property
    def decided_by(self) -> str:
        """The measurement ``faster`` and ``ratio`` come from: with several rounds, the closing run of them all
        (a round's own run may have said otherwise)."""
        if self.rounds[self.best_round].final is not None:
            return f"the closing run of all {len(self.rounds)} rounds"
        return f"round {self.best_round}'s run"

    @property
    def outcome(self) -> str:
        """The kept file against fp32, in words."""
        if self.faster:
            return "int8 is faster than fp32"
        if self.ratio < 1.0 and self.rounds[self.best_round].quantized:
            return "int8 is faster than fp32, but by less than the margin"
        return "int8 is not faster than fp32"

    def to_dict(self) -> dict[str, Any]:
        return {"artifact": self.artifact.to_dict(), "rounds": [r.to_dict() for r in self.rounds],
                "best_round": self.best_round, "ratio": self.ratio, "faster": self.faster,
                "decided_by": self.decided_by, "stopped": self.stopped, "notes": list(self.notes)}


def int8_with_fallback(fp32_path: str | Path, calibration: np.ndarray, profile: DeviceProfile | str | Path,
                       out_dir: str | Path, config: FallbackConfig | None = None, *, name: str = "student-int8",
                       role: str = "student", shape: tuple[int, ...] | None = None,
                       stamp: Callable[[Artifact], Artifact] | None = None, force: bool = False) -> FallbackResult:
    """Quantize ``fp32_path`` to int8 QDQ (the ``onnx-int8`` exporter), falling back node by node to fp32
    where int8 is slower on ``profile`` (a name, a ``.toml`` path or ``load_profile``'s result); writes
    ``out_dir/<name>.onnx``. ``calibration`` are representative inputs (NCHW float32); ``shape`` the input shape
    to time with (default: the model's, batch from the profile).

    ``stamp`` rewrites each round's file as it will ship, before its size is held against
    ``config.max_bytes``, and returns its Artifact with the new size: e.g.
    ``lambda art: edgekd.onnx_metadata.stamp_data_metadata(art, data, seed)``, whose class names and preprocessing add
    a few hundred bytes or more that would otherwise push a file that just fits over the budget once shipped.
    The file written to ``out_dir`` is then already stamped.

    Raises ProfileError for a profile name or path that names none, ArtifactError for a missing or non-ONNX
    ``fp32_path``, OutputError when ``out_dir/<name>.onnx`` is ``fp32_path`` itself, or exists and ``force`` is not
    set (a run's shipped int8 file, which its manifest records by sha256), ExportError if quantization fails."""
    from edgekd.export import check_new_export, check_source_opset
    from edgekd.fsutil import refuse_overwriting_source
    from edgekd.onnxfile import load_model, opset_of
    from edgekd.profiles import load_profile

    config = config or FallbackConfig()
    profile = load_profile(profile)  # as validate() takes it; a name reached only the note after every round
    opset = opset_of(load_model(fp32_path))  # a clear ArtifactError before anything runs it
    check_source_opset(fp32_path, opset)
    out = Path(out_dir)
    final = out / f"{name}.onnx"
    refuse_overwriting_source(final, fp32_path, "the int8 fallback", "fp32")
    check_new_export(final, force)  # before minutes of rounds
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="edgekd-fallback-") as tmp:
        loop = _Loop(Path(fp32_path), opset, calibration, profile, config, Path(tmp), name, role, shape, stamp)
        rounds, stopped = loop.run()
        rounds = loop.close(rounds)
        usable = [i for i, r in enumerate(rounds) if r.quantized] or list(range(len(rounds)))
        fastest = min(usable, key=lambda i: _ratio(rounds[i]))
        limit = config.max_bytes
        fits = [i for i in usable if limit is None or loop.artifacts[i].size_bytes <= limit]
        best = min(fits, key=lambda i: _ratio(rounds[i])) if fits else fastest
        shutil.copyfile(loop.artifacts[best].path, final)
    faster = _ratio(rounds[best]) <= 1.0 - config.margin and rounds[best].quantized > 0
    stopped = _reconciled(stopped, rounds, config.margin)
    notes = [] if profile.is_local else [
        f"node times were profiled on this host with {profile.name}'s runtime settings; "
        "every round was measured on the device"]
    if best != fastest:
        size = loop.artifacts[fastest].size_bytes / 1024
        notes.append(f"round {fastest} ran faster (int8/fp32 latency {_ratio(rounds[fastest]):.2f}, "
                     f"{rounds[fastest].quantized} of {rounds[0].quantized} quantizable node(s) in int8), but its "
                     f"file ({size:.1f} KB, more nodes kept fp32) breaks the size budget of {limit / 1024:.1f} KB: "
                     f"round {best}'s file is kept")  # type: ignore[operator]
    result = FallbackResult(loop.artifacts[best], tuple(rounds), best, faster, stopped, tuple(notes))
    details = {**result.artifact.details, "int8_fallback": {k: v for k, v in result.to_dict().items()
                                                             if k != "artifact"}}
    return dataclasses.replace(result, artifact=dataclasses.replace(result.artifact, path=str(final),
                                                                     details=details))


def _ratio(r: FallbackRound) -> float:
    return r.final_ratio if r.final_ratio is not None else r.ratio


def _reconciled(stopped: str, rounds: list[FallbackRound], margin: float) -> str:
    """Why the rounds stopped, told against the closing run: the loop stops on a round's own run saying int8 is
    faster, and the closing run of all rounds, which decides, may say otherwise (the log then read "int8 is not
    faster than fp32; the rounds stopped: int8 is faster than fp32 in round 1")."""
    last = rounds[-1]
    stopped_faster = last.quantized and last.ratio <= 1.0 - margin
    if not stopped_faster or last.final_ratio is None or last.final_ratio <= 1.0 - margin:
        return stopped
    return (f"round {last.index}'s own run measured int8 faster than fp32 ({last.ratio:.2f}), so no further round "
            f"was tried, but the closing run of all rounds, which decides, measured {last.final_ratio:.2f}")


class _Loop:
    """The rounds, with the state they share (the pre-processed fp32 twin, exclusions so far)."""

    def __init__(self, fp32: Path, opset: int, calibration: np.ndarray, profile: DeviceProfile,
                 config: FallbackConfig, tmp: Path, name: str, role: str, shape: tuple[int, ...] | None,
                 stamp: Callable[[Artifact], Artifact] | None) -> None:
        self.fp32, self.calibration, self.profile, self.config = fp32, calibration, profile, config
        self.tmp, self.name, self.role, self.shape, self.stamp = tmp, name, role, shape, stamp
        self.opset = opset  # the fp32 file's: the int8 files keep it, and the exporter refuses another
        self.excluded: dict[str, Exclusion] = {}
        self.artifacts: list[Artifact] = []

    def run(self) -> tuple[list[FallbackRound], str]:
        from edgekd.latency.compare import ratio
        from edgekd.latency.measure import measure

        rounds: list[FallbackRound] = []
        new: tuple[Exclusion, ...] = ()
        while True:
            index = len(rounds)
            self.excluded.update({e.node: e for e in new})
            art = self._quantize(index)
            fp32_stats, int8_stats = stats = measure([self.fp32, art.path], self.profile, self.shape)
            quantized = quantized_nodes(art.path, art.details.get("excluded_nodes", {}))
            rounds.append(FallbackRound(index, new, len(quantized), int8_stats.p50_ms, fp32_stats.p50_ms,
                                        ratio([stats], a=1, b=0)))
            if not quantized:  # an fp32 graph under another name: never the int8 artifact
                # an earlier round may still have run faster: the result, not this reason, says which ships
                return rounds, f"every quantized node fell back to fp32 by round {index}"
            if rounds[-1].ratio <= 1.0 - self.config.margin:
                return rounds, f"int8 is faster than fp32 in round {index}"
            if index == self.config.rounds:
                return rounds, f"int8 still not faster after {index} fallback round(s)"
            new = self._next_exclusions(art, quantized, rounds[-1])
            if not new:
                return rounds, f"no quantized node is worth keeping fp32 after round {index}"

    def close(self, rounds: list[FallbackRound]) -> list[FallbackRound]:
        """Measure every round's file again in one interleaved run with fp32, so the pick is fair."""
        from edgekd.latency.compare import ratio
        from edgekd.latency.measure import measure

        if len(rounds) == 1:
            return rounds
        stats = measure([self.fp32, *[a.path for a in self.artifacts]], self.profile, self.shape)
        return [dataclasses.replace(r, final=ratio([stats], a=i + 1, b=0)) for i, r in enumerate(rounds)]

    def _quantize(self, index: int) -> Artifact:
        from edgekd.export import ExportRequest, get_exporter

        folder = self.tmp / f"round{index}"
        folder.mkdir()
        source = Artifact(self.fp32.stem, self.role, "fp32", str(self.fp32), "given", 0, "", 0)
        options = {"calibration": self.config.calibration_method,
                   "nodes_to_exclude": {n: e.reason for n, e in self.excluded.items()}}
        art = get_exporter("onnx-int8")(ExportRequest(self.name, self.role, folder, calibration=self.calibration,
                                                      source=source, options=options, opset=self.opset))
        if self.stamp is not None:  # sizes are compared as the files ship
            art = self.stamp(art)
        self.artifacts.append(art)
        return art

    def _next_exclusions(self, art: Artifact, quantized: dict[str, str],
                         measured: FallbackRound) -> tuple[Exclusion, ...]:
        from edgekd.latency.nodeprofile import profile_nodes

        twin = self.tmp / "fp32-pre.onnx"
        if not twin.is_file():
            _pre_process(self.fp32, twin)
        fp32_prof, int8_prof = profile_nodes([twin, art.path], self.profile, self.config.profile_runs,
                                             self.config.profile_warmup, self.shape)
        # Node times scaled to add up to the p50s just measured without the profiler (it inflates small
        # kernels, int8's more than fp32's), so the plan weighs them as the runtime does.
        fp32_prof, int8_prof = fp32_prof.scaled(measured.fp32_p50_ms), int8_prof.scaled(measured.int8_p50_ms)
        rate = boundary_ms_per_element(int8_prof) if self.config.boundaries else 0.0
        return tuple(plan_exclusions(quantized, qdq_edges(art.path, quantized), fp32_prof.costs(),
                                     int8_prof.costs(), rate, self.config))


def _pre_process(src: Path, dst: Path) -> None:
    """onnxruntime's quantization pre-processing alone: the fp32 graph the quantizer starts from, with the
    node names the int8 file keeps, so both profiles map onto the same names."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from edgekd.errors import ExportError
    from edgekd.onnxfile import one_file
    from edgekd.quiet import PRE_PROCESS, quiet

    try:
        # quiet: it logs a traceback for each optimization it gives up on
        with one_file(src) as whole, quiet(PRE_PROCESS, stderr=True):
            quant_pre_process(str(whole), str(dst), skip_symbolic_shape=True)
    except Exception as exc:  # onnxruntime raises several unrelated types here
        first = first_line(exc)
        raise ExportError(f"onnxruntime could not pre-process '{src}': {first}",
                          "check that the fp32 model runs in onnxruntime") from None

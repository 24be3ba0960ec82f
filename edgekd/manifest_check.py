"""Re-check a shipped artifact against its manifest entry (`edgekd validate MODEL --manifest manifest.json`):
hash, size, opset, operators, signature, accuracy and latency as recorded, on the profile it was measured on."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekd.errors import ConfigError, require_number
from edgekd.fsutil import sha256
from edgekd.gate import Check
from edgekd.profiles import DeviceProfile
from edgekd.textfmt import decimals, figures
from edgekd.types import Artifact
from edgekd.validate import artifact_from_file


@dataclass(frozen=True)
class RecheckConfig:
    """How strictly to re-check. ``profile`` None: the profile the manifest records (by its file, else its name)."""

    artifact: str | None = None  # manifest entry name; default: the entry with the model's file name or hash
    data: str | None = None  # default: the manifest's own data when it is the embedded 'digits'
    resolution: Any = None  # one side or "HEIGHTxWIDTH"; default: the recorded input size
    normalize: str | None = None  # default: the recorded preprocessing (dataset, none or MEAN/STD otherwise)
    channels: int | None = None  # default: the recorded channel conversion
    profile: str | None = None
    accuracy_tolerance: float = 0.005  # absolute, as a fraction
    latency_tolerance: float = 0.10  # p50 may be this much slower than recorded
    rounds: int = 3

    def __post_init__(self) -> None:
        from edgekd.preprocess import resolution_value

        object.__setattr__(self, "resolution", resolution_value(self.resolution))  # refused early
        # Types before the range checks: a string from Python ("3") failed them as a raw TypeError.
        require_number("accuracy_tolerance", self.accuracy_tolerance)
        require_number("latency_tolerance", self.latency_tolerance)
        require_number("rounds", self.rounds, whole=True)
        if not 0 <= self.accuracy_tolerance < 1:
            raise ConfigError(f"accuracy tolerance {self.accuracy_tolerance} is outside [0, 1)", "pass e.g. 0.005")
        if not 0 <= self.latency_tolerance < 1:
            raise ConfigError(f"latency tolerance {self.latency_tolerance} is outside [0, 1)", "pass e.g. 0.1")
        if self.rounds < 1:
            raise ConfigError(f"rounds must be at least 1, got {self.rounds}", "pass --rounds 3")


@dataclass(frozen=True)
class RecheckResult:
    model: str
    manifest: str
    artifact: str
    checks: tuple[Check, ...]
    skipped: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()  # what the reader should know of how it was checked (the profile rebuilt)

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "manifest": self.manifest, "artifact": self.artifact, "passed": self.passed,
                "checks": [{"name": c.name, "passed": c.passed, "message": c.message, "measured": c.measured}
                           for c in self.checks],
                "skipped": list(self.skipped), "notes": list(self.notes)}


def recheck(model: str | Path, manifest_path: str | Path, config: RecheckConfig = RecheckConfig(),
            log: Callable[[str], None] | None = None) -> RecheckResult:
    """Re-check ``model`` against its entry in ``manifest_path``: hash and size exactly, opset, operators and
    I/O signature, accuracy within a tolerance, latency re-measured on the recorded profile. ``log`` hears how
    far a long read of the data is (as ``load_data``'s)."""
    from edgekd.api_args import require_config
    from edgekd.manifest_io import load_manifest

    require_config("config", config, RecheckConfig, "rounds=1")
    manifest_path = Path(manifest_path)
    manifest = load_manifest(manifest_path)  # another schema or version -> ArtifactError
    if Path(model).suffix.lower() == ".ort":
        return _recheck_ort(Path(model), manifest_path, manifest, config, log)
    art = artifact_from_file(model)
    entry = _entry_for(manifest, manifest_path, art, config.artifact)
    profile = recorded_profile(manifest, config.profile)
    checks = _file_checks(art, entry["artifact"])
    skipped = []
    accuracy = _recheck_accuracy(Path(model), entry, manifest, profile, config, log=log)
    checks += [accuracy] if isinstance(accuracy, Check) else []
    skipped += [accuracy] if isinstance(accuracy, str) else []
    if entry.get("latency"):
        checks.append(_recheck_latency(Path(model), entry, manifest, manifest_path.parent, profile, config))
    else:
        skipped.append("latency: the manifest records no latency for this artifact")
    return RecheckResult(str(model), str(manifest_path), entry["artifact"]["name"], tuple(checks), tuple(skipped),
                         profile_notes(manifest, profile))


def _recheck_ort(model: Path, manifest_path: Path, manifest: dict[str, Any], config: RecheckConfig,
                 log: Callable[[str], None] | None) -> RecheckResult:
    """An ORT-format copy (compress --ort) against the ``ort`` record of its artifact: the file a mobile app
    ships, byte for byte, with the operator list beside it; its accuracy on the test split against its .onnx's
    recorded one (the copy computes what its .onnx does); its p50 against the one recorded for it, measured
    beside its .onnx where that is here and unchanged (their recorded ratio, as compress timed them)."""
    from edgekd.manifest_io import inside
    from edgekd.ort_format import check_ort_file

    check_ort_file(model)  # an unreadable file: one line, before anything is measured
    entry = _ort_entry_for(manifest, manifest_path, model, config.artifact)
    recorded, name = entry["ort"], entry["artifact"]["name"]
    profile = recorded_profile(manifest, config.profile)
    digest, size = sha256(model), model.stat().st_size
    checks = [
        Check("sha256", digest == recorded["sha256"], f"{model.name} is byte for byte the recorded copy"
              if digest == recorded["sha256"] else f"{model.name} differs from the recorded copy (sha256 "
              f"{digest[:12]}..., recorded {recorded['sha256'][:12]}...)", digest),
        Check("size", size == recorded["size_bytes"], f"{size:,} bytes on disk, recorded {recorded['size_bytes']:,}",
              size),
    ]
    skipped = []
    listed = model.parent / Path(recorded["operators"]).name  # written beside the copy
    if not recorded.get("operators_sha256"):
        skipped.append(f"operators: the manifest records no sha256 of {listed.name} (written before edgekd did)")
    elif not listed.is_file():
        skipped.append(f"operators: {listed.name}, the copy's operator list, is not beside it")
    else:
        same = sha256(listed) == recorded["operators_sha256"]
        checks.append(Check("operators", same, f"{listed.name} is the recorded operator list" if same else
                            f"{listed.name} differs from the recorded operator list (sha256)", same))
    folder = manifest_path.parent
    twin = inside(folder, entry["artifact"]["path"])  # None: led out of the folder, as an edited manifest's
    twin_ok = twin is not None and twin.is_file() and sha256(twin) == entry["artifact"]["sha256"]
    accuracy = _recheck_accuracy(model, entry, manifest, profile, config, meta=twin if twin_ok else None,
                                 whose=f"its {Path(entry['artifact']['path']).name}'s", log=log)
    checks += [accuracy] if isinstance(accuracy, Check) else []
    skipped += [accuracy] if isinstance(accuracy, str) else []
    if recorded.get("p50_ms") is None:
        skipped.append("latency: the manifest records no p50 for this copy (written before edgekd timed copies)")
    else:
        own = {"artifact": {**entry["artifact"], "name": f"{name} (ORT format)"},
               "latency": {"p50_ms": recorded["p50_ms"]}}
        checks.append(_recheck_latency(model, own, manifest, folder, profile, config, twin=name,
                                       twin_ratio=recorded.get("vs_onnx")))
    return RecheckResult(str(model), str(manifest_path), name, tuple(checks), tuple(skipped),
                         profile_notes(manifest, profile))


def _ort_entry_for(manifest: dict[str, Any], path: Path, model: Path, name: str | None) -> dict[str, Any]:
    """The artifact whose ORT-format copy ``model`` is: by --artifact, else by the copy's file name or hash."""
    copies = [e for e in manifest["artifacts"] if e.get("ort")]
    names = ", ".join(e["artifact"]["name"] for e in copies)
    if not copies:
        raise ConfigError(f"manifest '{path}' records no ORT-format copy, and '{model.name}' is one",
                          "re-check the .onnx it was converted from, or pass the manifest of the compress --ort run "
                          "that wrote it")
    if name is not None:
        found = [e for e in manifest["artifacts"] if e["artifact"]["name"] == name]
        if not found:
            raise ConfigError(f"manifest '{path}' has no artifact '{name}'", f"choose one of: {names}")
        if not found[0].get("ort"):
            raise ConfigError(f"artifact '{name}' of '{path}' has no ORT-format copy", f"choose one of: {names}")
        return found[0]
    found = ([e for e in copies if Path(e["ort"]["path"]).name == model.name]
             or [e for e in copies if e["ort"]["sha256"] == sha256(model)])
    if len(found) != 1:
        raise ConfigError(f"cannot tell which ORT-format copy of '{path}' '{model.name}' is",
                          f"pass --artifact NAME (one of: {names})")
    return found[0]


def recheck_table(result: RecheckResult) -> str:
    lines = ["| check | result | detail |", "|---|---|---|"]
    lines += [f"| {c.name} | {'pass' if c.passed else 'FAIL'} | {c.message} |" for c in result.checks]
    lines += [f"| {s.split(':', 1)[0]} | skipped | {s.split(':', 1)[1].strip()} |" for s in result.skipped]
    return "\n".join(lines)


def _entry_for(manifest: dict[str, Any], path: Path, art: Artifact, name: str | None) -> dict[str, Any]:
    entries = manifest["artifacts"]
    names = ", ".join(e["artifact"]["name"] for e in entries)
    if name is not None:
        found = [e for e in entries if e["artifact"]["name"] == name]
        if not found:
            raise ConfigError(f"manifest '{path}' has no artifact '{name}'", f"choose one of: {names}")
        return found[0]
    file_name = Path(art.path).name
    found = ([e for e in entries if Path(e["artifact"]["path"]).name == file_name]
             or [e for e in entries if e["artifact"]["sha256"] == art.sha256])
    if len(found) != 1:
        raise ConfigError(f"cannot tell which artifact of '{path}' '{file_name}' is",
                          f"pass --artifact NAME (one of: {names})")
    return found[0]


def profile_notes(manifest: dict[str, Any], profile: DeviceProfile) -> tuple[str, ...]:
    """A note when the latency is re-measured on the settings the manifest records, not on a profile file: the
    file at the recorded path was edited since (or is not here), which went unsaid while gate said it."""
    from edgekd.profiles import RECORDED, rebuilt_why

    if profile.source != RECORDED:
        return ()
    return (f"profile '{profile.name}'" + rebuilt_why(manifest["profile"]),)


def recorded_profile(manifest: dict[str, Any], override: str | None = None) -> DeviceProfile:
    """The profile the manifest was measured on: ``override``, else the recorded file, else the recorded name;
    refused when its measuring settings differ from the recorded ones (digest)."""
    from edgekd.errors import ProfileError
    from edgekd.profiles import load_profile, load_recorded_profile

    recorded = manifest["profile"]
    try:
        profile = load_profile(override) if override else load_recorded_profile(recorded)
    except ProfileError as exc:
        raise ConfigError(f"the manifest's profile '{recorded['name']}' cannot be loaded ({exc.problem})",
                          "pass --profile with the profile the manifest was measured on") from None
    if recorded.get("digest") and profile.digest() != recorded["digest"]:
        raise ConfigError(f"profile '{profile.name}' ({profile.source}) measures differently from the one the "
                          f"manifest records (settings digest {profile.digest()}, recorded {recorded['digest']})",
                          "pass --profile with the recorded settings (see the manifest's 'profile' section), or "
                          "use `edgekd gate` to check a model against thresholds on another profile")
    return profile


def _file_checks(art: Artifact, recorded: dict[str, Any]) -> list[Check]:
    name = Path(art.path).name
    checks = [
        Check("sha256", art.sha256 == recorded["sha256"], f"{name} is byte for byte the recorded file"
              if art.sha256 == recorded["sha256"] else f"{name} differs from the recorded file (sha256 "
              f"{art.sha256[:12]}..., recorded {recorded['sha256'][:12]}...)", art.sha256),
        Check("size", art.size_bytes == recorded["size_bytes"], f"{art.size_bytes:,} bytes on disk, recorded "
              f"{recorded['size_bytes']:,}", art.size_bytes),
        Check("opset", art.opset == recorded["opset"], f"opset {art.opset}, recorded {recorded['opset']}", art.opset),
    ]
    details = recorded.get("details") or {}
    if "external_sha256" in details:
        now = art.details.get("external_sha256") or {}
        changed = sorted(f for f in set(now) | set(details["external_sha256"])
                         if now.get(f) != details["external_sha256"].get(f))
        checks.append(Check("external data", not changed, f"{len(now)} external weight file(s) as recorded"
                            if not changed else f"external weight files differ from the record: {', '.join(changed)}",
                            changed))
    if "op_types" in details:
        ops, want = set(art.details["op_types"]), set(details["op_types"])
        diff = [f"+{o}" for o in sorted(ops - want)] + [f"-{o}" for o in sorted(want - ops)]
        checks.append(Check("operators", not diff, f"{len(ops)} operator types as recorded" if not diff else
                            f"operator types differ from the record: {', '.join(diff)}", sorted(ops)))
    if "inputs" in details and "outputs" in details:
        same = art.details["inputs"] == details["inputs"] and art.details["outputs"] == details["outputs"]
        checks.append(Check("signature", same, "inputs and outputs as recorded" if same else
                            f"inputs/outputs {_sig(art.details)} differ from the recorded {_sig(details)}"))
    return checks


def _sig(details: dict[str, Any]) -> str:
    def one(v: dict[str, Any]) -> str:
        return f"{v['name']}:{v['dtype']}{v['shape']}"

    return f"({', '.join(map(one, details['inputs']))}) -> ({', '.join(map(one, details['outputs']))})"


def _recheck_accuracy(model: Path, entry: dict[str, Any], manifest: dict[str, Any], profile: DeviceProfile,
                      config: RecheckConfig, meta: Path | None | bool = True, whose: str = "",
                      log: Callable[[str], None] | None = None) -> Check | str:
    """An accuracy Check, or the reason it was skipped. ``meta``: the ONNX file whose metadata (class names,
    split) matches the data to the model, True for ``model`` itself, None for none (an ORT-format copy without
    its .onnx: the session's class names still number the labels)."""
    from edgekd.data import (
        load_data,
        recorded_channels,
        recorded_data,
        recorded_preprocess,
        with_notes,
    )
    from edgekd.data_match import with_class_order_note, with_scale_note, with_split_note
    from edgekd.latency.runtime import predictions_on_test_split, top1
    from edgekd.onnx_metadata import embedded_class_names, embedded_split_seed

    recorded = entry.get("accuracy")
    own = recorded_data(manifest)
    source = config.data or own.source
    if recorded is None:
        return "accuracy: the manifest records no accuracy for this artifact"
    if source is None:
        return f"accuracy: the manifest's data '{own.named}' {own.missing}; pass --data to check it"
    shape = (manifest.get("data") or {}).get("input_shape") or []
    resolution = config.resolution or (own.resolution if source == own.source else None) or (
        shape[-2:] if shape and source == "digits" else None)
    pre = recorded_preprocess(manifest)  # a --normalize given still keeps the recorded channel conversion
    onnx_file = model if meta is True else meta
    # The split seed the file records (the one that dealt its run's data) before the recipe's --seed: a run given
    # a Dataset split it with load_data's seed, and re-splitting with --seed scores it on training images.
    recorded_seed = embedded_split_seed(onnx_file) if onnx_file is not None else None
    seed = own.seed if recorded_seed is None else recorded_seed
    data = load_data(source, resolution=resolution, seed=seed, normalize=config.normalize or pre,
                     channels=config.channels or recorded_channels(pre), log=log)
    if onnx_file is not None:
        data = with_class_order_note(data, embedded_class_names(onnx_file))
    data = with_scale_note(data, pre)
    if onnx_file is not None:
        data = with_split_note(data, onnx_file, seed)
    logits, labels, _ = predictions_on_test_split(model, profile, data)  # edgekd's own files take NCHW
    acc = top1(logits, labels)
    tol = config.accuracy_tolerance
    return Check("accuracy", abs(acc - recorded) <= tol, with_notes(
        f"{acc * 100:.2f}% on {data.name} test split, recorded {recorded * 100:.2f}%{' for ' + whose if whose else ''}"
        f" (tolerance {tol * 100:.2g} points)", data), acc)


def _recheck_latency(model: Path, entry: dict[str, Any], manifest: dict[str, Any], folder: Path,
                     profile: DeviceProfile, config: RecheckConfig, twin: str | None = None,
                     twin_ratio: float | None = None) -> Check:
    """p50 against the recorded p50. When another (unchanged) artifact of the manifest is present, the one
    closest in recorded latency is measured interleaved and the ratio to it is compared with the recorded
    ratio, so that drift between runs cancels."""
    import statistics

    from edgekd.latency.compare import measure_until_clear
    from edgekd.latency.measure import measure

    refs = _reference_entries(entry, manifest, folder)
    if twin is None and (paired := _student_twin(entry, manifest)) is not None:
        twin, twin_ratio = paired
    # an ORT-format copy beside its own .onnx, or a student beside its twin of the other precision: their ratio
    # compress measured repeat by repeat (``twin_ratio``), where the two recorded p50s come from separate runs
    refs = ([r for r in refs if r["artifact"]["name"] == twin] or refs)[:1]
    recorded = float(entry["latency"]["p50_ms"])
    tol = config.latency_tolerance
    # Either file of the pair may leave its size open (an ONNX teacher): both run at the data's, as in compress.
    shape = next((s for e in (entry, *refs) if (s := _recorded_shape(e, manifest, profile)) is not None), None)
    if refs:
        paths = [model, folder / refs[0]["artifact"]["path"]]
        recorded_ratio = (twin_ratio if twin_ratio and refs[0]["artifact"]["name"] == twin
                          else recorded / refs[0]["latency"]["p50_ms"])
        found, rounds, _ = measure_until_clear(lambda: measure(paths, profile, shape), config.rounds, 1 + tol,
                                               scale=recorded_ratio)
        ratio = found.median
        how = (f"relative to {refs[0]['artifact']['name']}, measured interleaved ({len(rounds)} round(s), "
               f"median of {found.pairs} paired repeats, {{interval}}; drift between runs cancels)")
    else:
        rounds = [measure([model], profile, shape) for _ in range(config.rounds)]
        ratio = statistics.median(r[0].p50_ms for r in rounds) / recorded
        found = None
        how = (f"median of {config.rounds} round(s), no other artifact of the manifest present to measure beside it "
               "(drift between runs counts here)")
    p50 = statistics.median(r[0].p50_ms for r in rounds)
    # as many digits as it takes for the ratio, and its interval, to read on the side of the line they are
    shown = figures(ratio, 1 + tol, 2, ratio <= 1 + tol)[0]
    how = how.format(interval=found.interval(decimals(shown))) if found is not None else how
    return Check("latency", ratio <= 1 + tol, f"{shown}x the recorded p50 {how}; p50 now {p50:.3f} ms, "
                 f"recorded {recorded:.3f} ms on {profile.name} (tolerance +{tol:.0%})", ratio)


def _student_twin(entry: dict[str, Any], manifest: dict[str, Any]) -> tuple[str, float] | None:
    """(the name of the student of the other precision, ``entry``'s p50 over its) from the int8 speedup compress
    measured repeat by repeat (``int8_speedup``). The ratio of the two recorded p50s mixes runs (each artifact's
    p50 is its own median run's): an unchanged int8 student failed its recheck at 1.12x a recorded 0.90 whose
    paired figure was 0.99."""
    median = (manifest.get("int8_speedup") or {}).get("median")
    art = entry["artifact"]
    if not median or art.get("role") != "student" or art.get("precision") not in ("fp32", "int8"):
        return None
    other = "int8" if art["precision"] == "fp32" else "fp32"
    names = [e["artifact"]["name"] for e in manifest["artifacts"]
             if e["artifact"].get("role") == "student" and e["artifact"].get("precision") == other]
    if len(names) != 1:
        return None
    return names[0], float(median) if other == "int8" else 1 / float(median)


def _recorded_shape(entry: dict[str, Any], manifest: dict[str, Any], profile: DeviceProfile) -> tuple[int, ...] | None:
    """The shape compress measured a model of open input size at (its data's), from what the manifest records;
    None for a model of fixed size, which needs none."""
    from edgekd.input_shape import data_input_shape

    sample = (manifest.get("data") or {}).get("input_shape")
    details = entry["artifact"].get("details") or {}
    if not sample:
        return None
    return data_input_shape(details, tuple(sample), int(profile.measure["batch_size"]))


def _reference_entries(entry: dict[str, Any], manifest: dict[str, Any], folder: Path) -> list[dict[str, Any]]:
    """The manifest's other artifacts whose files are present, unchanged and inside the manifest's folder (by
    the path recorded, a symlink to elsewhere included), closest in recorded p50 first."""
    from edgekd.manifest_io import inside

    refs = []
    for other in manifest["artifacts"]:
        art = other["artifact"]
        path = inside(folder, art["path"])  # by its recorded name: a link into git-annex's store is in the folder
        if (art["name"] == entry["artifact"]["name"] or not other.get("latency") or path is None
                or not path.is_file() or sha256(path) != art["sha256"]):
            continue
        refs.append(other)
    own = float(entry["latency"]["p50_ms"])
    return sorted(refs, key=lambda e: abs(math.log(e["latency"]["p50_ms"] / own)))


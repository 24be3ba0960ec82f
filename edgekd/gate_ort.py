"""The gate's checks of a manifest's ORT-format copy (compress --ort): the copy and its operator list are the
files compress checked, the copy fits the app's reduced onnxruntime build, and it is held to the size and
latency limits its .onnx is, as compress held it (the copy is what a mobile app ships)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgekd.errors import ConfigError, first_line
from edgekd.textfmt import sizes

RESTORE = "restore the file compress wrote, or run compress again for a new manifest"


def ort_copy(folder: Path, entry: dict[str, Any] | None) -> Path | None:
    """The ORT-format copy the manifest ``entry`` records, when it is here."""
    recorded = (entry or {}).get("ort")
    if not recorded:
        return None
    copy = recorded_file(folder, recorded["path"], entry)
    return copy if copy.is_file() else None


def recorded_file(folder: Path, recorded: str, entry: dict[str, Any] | None) -> Path:
    """The file an artifact's ``ort`` record names (the copy, its operator list) in the manifest's ``folder``;
    refused when the path leads out of it, as an artifact's own path is (only an edited manifest has one)."""
    from edgekd.errors import ArtifactError
    from edgekd.manifest_io import inside

    found = inside(folder, recorded)
    if found is None:
        name = (entry or {}).get("artifact", {}).get("name", "?")
        raise ArtifactError(f"the manifest in '{folder}' points the ORT-format copy of '{name}' outside its folder "
                            f"({recorded})", "use the manifest edgekd wrote, unedited")
    return found


def ort_integrity(folder: Path, entry: dict[str, Any], notes: list[str]) -> list[Any]:
    """The ORT-format copy a manifest records, when it is here, and its operator list: the file a mobile app
    ships must be the one compress checked against the .onnx, and the list a reduced build is compiled with the
    one compress wrote for it."""
    from edgekd.fsutil import sha256
    from edgekd.gate import Check

    recorded = entry.get("ort")
    if not recorded:
        return []
    copy = ort_copy(folder, entry)
    if copy is None:
        notes.append(f"not checked: {recorded['path']}, the manifest's ORT-format copy, is not here")
        return []
    same = sha256(copy) == recorded["sha256"]
    checks = [Check("ort integrity", same, f"{copy.name} matches its manifest entry" if same else
                    f"{copy.name} changed since the manifest was written (sha256 differs): {RESTORE}")]
    listed = recorded_file(folder, recorded["operators"], entry)
    if not recorded.get("operators_sha256"):
        notes.append(f"not verified: {recorded['operators']}, the copy's operator list, has no sha256 in this "
                     "manifest (written before edgekd recorded one)")
    elif listed.is_file():
        same = sha256(listed) == recorded["operators_sha256"]
        checks.append(Check("operators integrity", same, f"{listed.name} matches its manifest entry" if same else
                            f"{listed.name} changed since the manifest was written (sha256 differs): {RESTORE}"))
    else:  # said as a copy not here is: a pipeline that uploads the .ort alone lost the list a reduced build needs
        notes.append(f"not checked: {recorded['operators']}, the copy's operator list, is not here")
    return checks


def reduced_build_check(folder: Path, entry: dict[str, Any] | None, config: Any) -> list[Any]:
    """The operators the artifact's ORT-format copy needs (its required_operators.config, written by
    compress --ort) are all in the app's reduced onnxruntime build (--ops-config): a model needing one more
    kernel than the app was compiled with fails to load in the app, not in CI. Without the copy or its operator
    list, or with that list edited since, nothing the app ships was checked, and the check fails."""
    if config.ops_config is None:
        return []
    from edgekd.fsutil import sha256
    from edgekd.gate import Check
    from edgekd.ort_format import missing_operators

    if entry is None:
        raise ConfigError("--ops-config checks the operators of a manifest's ORT-format copy, and the target is a "
                          "model file", "gate the manifest.json of a compress --ort run")
    recorded = entry.get("ort")
    if not recorded:
        raise ConfigError(f"--ops-config checks the ORT-format copy of '{entry['artifact']['name']}', and its "
                          "manifest records none", "compress with --ort, or drop --ops-config")
    build = Path(config.ops_config).name
    if ort_copy(folder, entry) is None:
        return [Check("reduced build", False, f"{recorded['path']}, the manifest's ORT-format copy, is not here, "
                      f"so nothing the app ships was checked against {build}: keep the folder compress --ort wrote "
                      "whole, or drop --ops-config")]
    needed = recorded_file(folder, recorded["operators"], entry)
    if not needed.is_file():  # failed as a missing copy is, not refused: the other checks' results still reach CI
        return [Check("reduced build", False, f"{recorded['operators']}, the operator list of {recorded['path']}, is "
                      f"not here, so what the copy needs was not checked against {build}: keep the folder compress "
                      "--ort wrote whole, or drop --ops-config")]
    if recorded.get("operators_sha256") not in (None, sha256(needed)):
        return [Check("reduced build", False, f"{needed.name} changed since the manifest was written, so what "
                      f"{recorded['path']} needs is not known: {RESTORE}")]
    missing = missing_operators(needed, Path(config.ops_config))
    return [Check("reduced build", not missing,
                  f"every operator {recorded['path']} needs is in {build}" if not missing else
                  f"{recorded['path']} needs operators {build} lacks: {'; '.join(missing)}", missing)]


def ort_size_check(copy: Path | None, config: Any) -> list[Any]:
    """The copy's bytes on disk within --max-size, as compress held it to its size budget."""
    if copy is None or config.max_size_bytes is None:
        return []
    from edgekd.gate import Check

    size_bytes = copy.stat().st_size
    ok = size_bytes <= config.max_size_bytes
    size, limit = sizes(size_bytes, config.max_size_bytes, ok)
    return [Check("ort size", ok, f"{copy.name}: {size} on disk, limit {limit} (the ORT-format copy an app "
                  "ships, held to the limit its .onnx is)", size_bytes)]


def ort_size_growth_check(copy: Path | None, base: tuple[Path, dict[str, Any] | None], growth: float,
                          notes: list[str]) -> list[Any]:
    """The copy's growth over the baseline's own copy (here, else the size its manifest records), as the .onnx's
    growth is checked: the .ort is what an app ships. Nothing when either side has no copy, and a note when the
    target has one the baseline lacks."""
    model, entry = base
    recorded = (entry or {}).get("ort")
    if copy is None:
        return []
    if not recorded:
        notes.append(f"not checked: the growth of {copy.name}, the ORT-format copy, as the baseline records none "
                     "(the .onnx's growth is checked)")
        return []
    from edgekd.gate import Check, growth_figures

    theirs = ort_copy(model.parent, entry)
    if theirs is not None:
        _check_baseline_copy(theirs, recorded)
    base_size = theirs.stat().st_size if theirs is not None else int(recorded["size_bytes"])
    size = copy.stat().st_size
    ok, ratio, shown = growth_figures(size, base_size, growth)
    source = "" if theirs is not None else " (as its manifest records)"
    return [Check("ort size growth", ok, f"{copy.name}: {size / 1024:.1f} KB on disk, {shown}x the baseline's "
                  f"ORT-format copy's {base_size / 1024:.1f} KB{source} (at most +{growth * 100:g}%)", ratio)]


def _check_baseline_copy(copy: Path, recorded: dict[str, Any]) -> None:
    """The baseline's ORT-format copy must be the one its manifest records, as its .onnx must: another file's size
    would be the growth compared with."""
    from edgekd.errors import ArtifactError
    from edgekd.fsutil import sha256

    if sha256(copy) != recorded.get("sha256"):
        raise ArtifactError(f"the baseline's ORT-format copy {copy} changed since the baseline's manifest was written "
                            "(sha256 differs), so it is not the copy the baseline records",
                            "restore the file compress wrote for the baseline, or remove it to compare with the "
                            "size its manifest records")


def only_onnx(copy: Path | None, entry: dict[str, Any] | None) -> str:
    """Said in a size or latency row when the manifest records an ORT-format copy that is not here to check."""
    recorded = (entry or {}).get("ort")
    if not recorded or copy is not None:
        return ""
    return f"; the limit covered the .onnx only: its ORT-format copy {recorded['path']} is not here"


def copy_to_time(copy: Path | None, entry: dict[str, Any] | None, profile: Any) -> tuple[Path | None, str]:
    """The copy to time beside its .onnx against --max-latency, or None and why the limit covers the .onnx
    only (said in the latency row): a copy that is not here, or that this onnxruntime cannot open (a local
    profile runs it here; a board's or phone's runtime is the runner's to try, as compress's was)."""
    if copy is None:
        return None, only_onnx(copy, entry)
    if profile.is_local:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        try:
            ort.InferenceSession(str(copy), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own types for a format it cannot read
            return None, (f"; the limit covered the .onnx only: its ORT-format copy {copy.name} does not load in "
                          f"onnxruntime {ort.__version__} here ({first_line(exc, 120)}), so it was not timed")
    return copy, ""

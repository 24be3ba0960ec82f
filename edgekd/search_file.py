"""A search.json that `edgekd search` wrote, as `compress --search` and `distill --search` reuse it: read
it, and check that it was made for this run's data, profile and budget."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from edgekd.errors import ConfigError, api_log, first_line
from edgekd.manifest_io import is_number

FOREIGN = "pass the JSON file `edgekd search --out` wrote"  # the fix for a file that is not a search result


# The settings of the `edgekd distill` run whose --out holds a search.json: what --resume continues with.
RUN_KEY = "distill_run"
# The settings the search ran with, which a run reusing the file takes (and records) as its own.
SETTINGS_KEY = "settings"
SETTINGS = ("space", "proxy", "candidates", "latency_anchors", "precision", "opset")


def search_record(result: Any, profile: Any, budget: Any, data: Any, teacher: Any = None,
                  run: dict[str, Any] | None = None, settings: dict[str, Any] | None = None) -> dict[str, Any]:
    """What every search.json holds, whichever command wrote it: the ranking, and the profile, budget, data
    and teacher it was measured for, so that reusing it for others is refused (or, where only the proxy's
    scores depend on them, said).

    A result read from a search.json (``result.record``) keeps that file's record: its latencies were
    measured there, on that host and for that budget, and each later reuse checks against those. Copied
    with this run's, a second reuse said the budget of the first as the one searched for, and no longer
    warned of another machine or teacher. A ``budget`` other than the recorded one is added as
    ``reused_with``: what this run validated the student against. A distill run records its own search
    settings and budget as ``run`` (under RUN_KEY), for its --resume to continue with. A fresh search records
    the ``settings`` it ran with (``search_settings``), for a run reusing the file to record them as its own."""
    if result.record is not None:
        record = {**result.record, **result.to_dict()}
        record.pop("reused_with", None)  # an earlier reuse's, not this run's
        record.pop(RUN_KEY, None)
        if budget.to_dict() != record.get("budget"):
            record["reused_with"] = {"budget": budget.to_dict()}
    else:
        record = {**result.to_dict(), "profile": profile.name, **profile_file_record(profile), **measured_with(profile),
                  "budget": budget.to_dict(), "data": data.describe()}
        if teacher is not None:
            record["teacher"] = teacher_record(teacher)
        if settings is not None:
            record[SETTINGS_KEY] = dict(settings)
    return {**record, RUN_KEY: run} if run is not None else record


def _raw(path: str | Path) -> dict[str, Any]:
    """The JSON object at ``path``; {} for a file that cannot be read, which ``load_search`` refuses with why."""
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return raw if isinstance(raw, dict) else {}


def search_settings(config: Any) -> dict[str, Any]:
    """The search settings of ``config`` (a CompressConfig), as a search.json records them."""
    return {k: config.setting(k) for k in SETTINGS}


def recorded_settings(path: str | Path) -> dict[str, Any]:
    """The search settings the file at ``path`` was searched with, as CompressConfig keys: its record, else
    (a file written before it was recorded) what its result says: the precision and proxy, the candidates it
    evaluated, and the spaces of those it ranked. {} for a file that cannot be read (``load_search`` refuses it)."""
    raw = _raw(path)
    kept, run = raw.get(SETTINGS_KEY), raw.get(RUN_KEY)
    if not isinstance(kept, dict) and isinstance(run, dict) and not run.get("search_file"):
        kept = run  # a distill run that searched records what it searched with
    if isinstance(kept, dict):
        # an opset edited into something else is no opset: the run's own is kept
        return {k: kept[k] for k in SETTINGS if k in kept and (k != "opset" or is_opset(kept[k]))}
    found: dict[str, Any] = {k: raw[k] for k in ("precision", "proxy") if isinstance(raw.get(k), str)}
    if isinstance(raw.get("evaluated"), int) and raw["evaluated"] >= 1:
        found["candidates"] = raw["evaluated"]
    ranked = [c.get("spec", {}).get("space") for c in (raw.get("candidates") or []) if isinstance(c, dict)]
    spaces = list(dict.fromkeys(s for s in ranked if isinstance(s, str)))
    if spaces:
        found["space"] = ",".join(spaces)
    return found


def is_opset(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def with_search_settings(config: Any, log: Any) -> Any:
    """``config`` with the search settings its ``search_file`` was searched with: the precision the search
    checked the budget for is the one that ships and that pruning measures, and the recipe a manifest or
    distill.json records must not contradict the search file beside it; so is the opset its candidates' files
    were sized at, for --max-size-kb. A precision or opset other than the default that differs from the file's
    is refused (the CLI refuses search flags with a search file already)."""
    from edgekd.export import DYNAMO_MIN_OPSET

    found = recorded_settings(config.search_file)
    if "precision" in found and config.precision not in ("int8", found["precision"]):
        raise ConfigError(f"precision {config.precision} is not the precision '{config.search_file}' was searched "
                          f"for ({found['precision']})", "leave the precision out (the search file's ships), or "
                          f"search again with --precision {config.precision}")
    if config.qat_epochs and found.get("precision") == "fp32":  # said for the file: --precision was not given
        raise ConfigError(f"--qat-epochs tunes the int8 file (quantization-aware training), and '{config.search_file}' "
                          "was searched for fp32, which ships", "drop --qat-epochs, or search again with --precision "
                          "int8 to ship int8")
    opset = found.get("opset", config.export_opset)
    if config.opset is not None and config.opset != opset:  # given (even as 18), and not the file's
        raise ConfigError(f"--opset {config.opset} is not the opset '{config.search_file}' sized its students at "
                          f"({opset}), and a file's size depends on it", "leave --opset out (the search file's "
                          f"ships), or search again with --opset {config.opset}")
    if config.qat_epochs and opset < DYNAMO_MIN_OPSET:
        raise ConfigError(f"'{config.search_file}' sized its students at opset {opset}, and --qat-epochs exports "
                          f"at opset {DYNAMO_MIN_OPSET} or later", f"search again with --opset {DYNAMO_MIN_OPSET} "
                          "(or without --opset), or drop --qat-epochs")
    changed = {k: v for k, v in found.items() if config.setting(k) != v}
    if changed:
        said = ", ".join(f"--{k.replace('_', '-')} {v}" for k, v in changed.items())
        log(f"search: {said}, as '{config.search_file}' was searched with")
    return dataclasses.replace(config, **changed)


_BUDGET_KEYS = {"latency_ms": "budget_ms", "max_size_kb": "max_size_kb", "min_accuracy": "min_accuracy",
                "max_accuracy_drop": "max_accuracy_drop"}


def recorded_run(path: str | Path) -> dict[str, Any]:
    """The settings the distill run that wrote the search.json at ``path`` started with, as CompressConfig
    keys: its record (RUN_KEY), else, for a file written before runs recorded it, the budget it was reused
    with or searched for. {} for a file that cannot be read, which ``load_search`` refuses with its reason."""
    raw = _raw(path)
    run = raw.get(RUN_KEY)
    if isinstance(run, dict):
        return dict(run)
    reused = raw.get("reused_with")
    budget = reused.get("budget") if isinstance(reused, dict) else raw.get("budget")
    return _budget_keys(budget, every=True)


def _budget_keys(budget: Any, every: bool = False) -> dict[str, Any]:
    """A recorded budget as CompressConfig keys: those that were set, or with ``every`` all of them (None: unset)."""
    budget = budget if isinstance(budget, dict) else {}
    set_ = {key: float(budget[name]) for name, key in _BUDGET_KEYS.items()
            if is_number(budget.get(name)) and (budget[name] > 0 or name == "max_accuracy_drop" and budget[name] == 0)}
    return {key: set_.get(key) for key in _BUDGET_KEYS.values()} if every else set_


def recorded_budget(path: str | Path) -> dict[str, float]:
    """The budget the search in ``path`` was made for, as CompressConfig keys (those that were set); {} for a
    file that cannot be read, which ``load_search`` refuses with its reason."""
    try:
        budget = json.loads(Path(path).read_text(encoding="utf-8")).get("budget")
    except (OSError, ValueError, AttributeError):
        return {}
    return _budget_keys(budget)


def measured_with(profile: Any) -> dict[str, str]:
    """What the latencies of a search depend on besides the profile's name: its measurement settings (a copy
    edited to 4 threads keeps the name) and, for a local profile, this machine's CPU."""
    from edgekd.latency.table import host_cpu

    return {"profile_digest": profile.digest(), **({"host": host_cpu()} if profile.is_local else {})}


def profile_file_record(profile: Any) -> dict[str, str]:
    """The file of a profile passed as a path (``--profile boards/fast-2t.toml``), resolved: its name alone does
    not load it, so the fix for a run reusing the search on another profile could name no --profile to pass."""
    from edgekd.profiles import profile_record

    found = profile_record(profile)
    return {} if found == profile.name else {"profile_file": str(Path(found).resolve())}


def _profile_fix(raw: dict[str, Any], profile: Any, fix: str) -> str:
    """``fix``, led by the --profile that measures as the search did, where this run's is another: the file the
    search recorded (or its profile's name), which reuses the search rather than redoing it."""
    import shlex

    from edgekd.profiles import profile_record

    given = raw.get("profile_file") or raw.get("profile")
    mine = {profile_record(profile), str(Path(profile.source).resolve())}
    if not isinstance(given, str) or given in mine:  # this very profile, with its settings edited since
        return fix
    return f"pass --profile {shlex.quote(given)}, the profile it measured on, or {fix}"


def check_search_profile(path: str | Path, profile: Any) -> None:
    """The profile checks of ``load_search``, alone, for a run to make before its data and teacher load (the
    default teacher trains for minutes): a file that cannot be read is left for ``load_search`` to refuse."""
    raw = _raw(path)
    if raw:
        _check_profile(Path(path), raw, profile, "run `edgekd search` again for this data, profile and budget, or "
                       "drop --search", None)


def _check_profile(path: Path, raw: dict[str, Any], profile: Any, fix: str, log: Any) -> None:
    if raw.get("profile") not in (None, profile.name):
        raise ConfigError(f"'{path}' measured its students on profile '{raw['profile']}', not '{profile.name}'",
                          _profile_fix(raw, profile, fix))
    _check_measured_with(path, raw, profile, fix, log)


def teacher_record(module: Any) -> dict[str, Any]:
    """The teacher's architecture as a search.json records it: a hash of its parameters' and buffers' names
    and shapes (not their values), and its parameter count. A student of a teacher-derived space (``pruned``)
    is that architecture with channels removed, so its latency holds for this architecture only."""
    import hashlib

    named = getattr(module, "named_parameters", None)
    if named is None:  # a callable that is not an nn.Module has nothing to compare
        return {}
    tensors = [*named(), *module.named_buffers()]
    shapes = "\n".join(f"{name}:{tuple(t.shape)}" for name, t in tensors)
    return {"architecture": hashlib.sha256(shapes.encode()).hexdigest()[:16],
            "params": int(sum(p.numel() for p in module.parameters()))}


def load_search(path: str | Path, data: Any, profile: Any, budget_ms: float | None, teacher: Any = None,
                log: Any = None, max_size_kb: float | None = None, fix: str | None = None, ort: bool = False) -> Any:
    """The SearchResult in ``path``, read once. A missing or foreign file, or one made for other data or
    another profile, or whose student misses this budget (its measured latency, its written file's size or
    else the estimate), or whose student was pruned from another
    teacher than ``teacher``, is a ConfigError: its ranking and latencies were measured for what it records.
    A ranking whose proxy scored the candidates against other images or another teacher is only said to
    ``log``: the students and their latencies still hold. ``fix`` replaces the advice of those errors
    (a resumed run's own search.json was given by no --search to drop). With ``ort`` (a run with --ort) and a size
    limit, a file that sized its students by their .onnx alone is said: the ORT-format copy, larger, is held to the
    limit only once trained."""
    path = Path(path)
    try:
        result = read_search(path)
    except FileNotFoundError:
        raise ConfigError(f"search file '{path}' does not exist", "run `edgekd search --out FILE` first") from None
    raw = result.record
    _check_record(path, result)
    fix = fix or "run `edgekd search` again for this data, profile and budget, or drop --search"
    recorded, here = raw.get("data") or {}, data.describe()
    for key in ("input_shape", "num_classes"):
        if key in recorded and recorded[key] != here[key]:
            raise ConfigError(f"'{path}' was searched for data with {key.replace('_', ' ')} {recorded[key]}, and "
                              f"this data has {here[key]}", fix)
    _check_profile(path, raw, profile, fix, log)
    chosen_ms = result.chosen.latency_ms
    if budget_ms is not None and chosen_ms is not None and chosen_ms > budget_ms:
        raise ConfigError(f"the student '{path}' chose measured {chosen_ms:.3f} ms, over --budget-ms {budget_ms:g}",
                          fix)
    if max_size_kb is not None and result.chosen.shipped_bytes > int(max_size_kb * 1024):
        size = "" if result.chosen.file_bytes is not None else "about "  # else the estimate: no file was written
        raise ConfigError(f"the student chosen in '{path}' is {size}{result.chosen.shipped_bytes / 1024:.1f} KB "
                          f"({result.precision}), over --max-size-kb {max_size_kb:g}", fix)
    if ort and max_size_kb is not None and not result.sized_with_ort:
        api_log(log)(f"warning: '{path}' sized its students by their .onnx file alone, and with --ort the ORT-format "
                     "copy, up to 1.5x larger, is held to --max-size-kb too, once trained: run `edgekd search --ort` "
                     "and pass the file it writes")
    for warning in _other_sources(path, raw, result, recorded, here, teacher):
        api_log(log)(f"warning: {warning}")
    return result


def _check_measured_with(path: Path, raw: dict[str, Any], profile: Any, fix: str, log: Any) -> None:
    """Other measurement settings under the same profile name are refused: the chosen student's latency was
    measured with them. Another CPU is said: a search made on a laptop and reused on a CI runner holds its
    students, whose latency validate measures again here. Files written before these were recorded pass."""
    now = measured_with(profile)
    if raw.get("profile_digest") not in (None, now["profile_digest"]):
        raise ConfigError(f"'{path}' measured its students with other settings of profile '{profile.name}' "
                          f"(digest {raw['profile_digest']}, this one's is {now['profile_digest']}: threads, runtime "
                          "or measurement settings differ)", _profile_fix(raw, profile, fix))
    if raw.get("host") and now.get("host") and raw["host"] != now["host"]:
        api_log(log)(f"warning: '{path}' measured its students' latency on another machine "
                                   f"({raw['host']}; this one is {now['host']}): validate measures them here")


def read_search(path: str | Path) -> Any:
    """The SearchResult in the search.json at ``path``, with the record it was read from (``record``), every
    value a stage, table or plot reads from it checked as the search writes it: an edited or foreign file is
    refused in one line (ConfigError), not as a traceback from the layer, log line or plot that reads the
    edited value. A missing file is FileNotFoundError, for the caller to say what to run instead."""
    from edgekd.types import SearchResult

    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise
    except OSError as exc:  # a folder, or a file this user may not read
        raise ConfigError(f"'{path}' cannot be read ({first_line(exc)})", FOREIGN) from None
    except ValueError as exc:
        raise ConfigError(f"'{path}' is not valid JSON ({first_line(exc)})", FOREIGN) from None
    try:
        result = SearchResult.from_dict(raw)
    except (ValueError, KeyError, TypeError, AttributeError, OverflowError) as exc:
        what = f"{exc} is missing" if isinstance(exc, KeyError) else first_line(exc)
        raise ConfigError(f"'{path}' is not a search result ({what})", FOREIGN) from None
    _check_values(path, result, raw)
    return dataclasses.replace(result, record=raw)


def _check_values(path: Path, result: Any, raw: dict[str, Any]) -> None:
    """The values ``SearchResult.from_dict`` passes through as they are, checked (its numbers it converts)."""
    def bad(what: str) -> ConfigError:
        return ConfigError(f"'{path}' is not a search result ({what})", FOREIGN)

    if result.precision not in ("fp32", "int8"):
        raise bad(f"its precision is {result.precision!r}, not fp32 or int8")
    for cand in (result.chosen, *result.candidates):
        if not isinstance(cand.spec.space, str):
            raise bad(f"a candidate's space is {cand.spec.space!r}, not a name")
        for name in ("latency_ms", "predicted_ms"):
            value = getattr(cand, name)
            if value is not None and (not is_number(value) or value <= 0):
                raise bad(f"candidate {cand.spec.key()} has {name} {value!r}, not a time in ms")
    if result.chosen.latency_ms is None:
        raise bad("its chosen student has no measured latency")
    if not all(isinstance(key, str) for key in result.pareto) or isinstance(raw.get("pareto"), str):
        raise bad("its 'pareto' is not a list of candidate keys")
    for key, kind in (("data", dict), ("teacher", dict), ("profile", str), ("budget", dict)):
        if raw.get(key) is not None and not isinstance(raw[key], kind):
            raise bad(f"its '{key}' is not a JSON {'object' if kind is dict else 'string'}")
    for name, value in (raw.get("budget") or {}).items():
        if value is not None and not is_number(value):
            raise bad(f"its budget's {name} is {value!r}, not a number")


def _check_record(path: Path, result: Any) -> None:
    """The chosen student, checked to be one this edgekd builds: an edited spec reached training as a
    KeyError or TypeError traceback from a layer."""
    from edgekd.search.spaces import SPACES, not_in_space

    def bad(what: str) -> ConfigError:
        return ConfigError(f"'{path}' is not a search result ({what})", FOREIGN)

    spec = result.chosen.spec
    if spec.space == "pruned":
        return  # its members come from the teacher: checked against it in _other_sources
    if spec.space not in SPACES:
        raise bad(f"its chosen student is of space '{spec.space}', which this edgekd does not have")
    reason = not_in_space(SPACES.get(spec.space), spec.config)
    if reason:
        raise bad(f"its chosen student {reason} (space '{spec.space}')")


def _other_sources(path: Path, raw: dict[str, Any], result: Any, recorded: dict[str, Any], here: dict[str, Any],
                   teacher: Any) -> list[str]:
    """What differs between the run that made ``raw`` and this one without changing its students' latency
    (warnings), and the one difference that does: a pruned student of another teacher (an error)."""
    from edgekd.search.spaces import SPACES

    warnings = []
    was = (raw.get("teacher") or {}).get("architecture")
    now = teacher_record(teacher).get("architecture") if teacher is not None else None
    if was and now and was != now:
        space = result.chosen.spec.space
        if space in SPACES and hasattr(SPACES.get(space), "bind"):
            params = raw["teacher"].get("params")
            size = f", {params:,} params" if isinstance(params, int) else ""
            raise ConfigError(f"'{path}' chose a '{space}' student of another teacher (architecture {was}{size}; "
                              f"this one is {now}): its channels and latency were measured for that network",
                              "run `edgekd search` again for this teacher, data, profile and budget, or drop "
                              "--search")
        if result.proxy != "params":
            warnings.append(f"'{path}' ranked its candidates with '{result.proxy}' against another teacher "
                            f"(architecture {was}, this one is {now}); its students and latencies hold, its scores "
                            f"came from that teacher: run `edgekd search` again to rank against this one")
    names = ("name", "class_names")
    if result.proxy != "params" and any(k in recorded and recorded[k] != here[k] for k in names):
        warnings.append(f"'{path}' ranked its candidates with '{result.proxy}' on data '{recorded.get('name')}', and "
                        f"this run's is '{here['name']}'; its students and latencies hold, its scores came from those "
                        f"images: run `edgekd search` again to rank on this data")
    return warnings

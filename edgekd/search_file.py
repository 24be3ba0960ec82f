"""A search.json that `edgekd search` wrote, as `compress --search` and `distill --search` reuse it: read
it, and check that it was made for this run's data, profile and budget."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edgekd.errors import ConfigError


def search_record(result: Any, profile: Any, budget: Any, data: Any) -> dict[str, Any]:
    """What every search.json holds, whichever command wrote it: the ranking, and the profile, budget and
    data it was measured for, so that reusing it for others is refused."""
    return {**result.to_dict(), "profile": profile.name, "budget": budget.to_dict(), "data": data.describe()}


def load_search(path: str | Path, data: Any, profile: Any, budget_ms: float | None) -> Any:
    """The SearchResult in ``path``, read once. A missing or foreign file, or one made for other data or
    another profile, or whose student misses this budget, is a ConfigError: its ranking and latencies were
    measured for what it records."""
    from edgekd.types import SearchResult

    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        result = SearchResult.from_dict(raw)
    except FileNotFoundError:
        raise ConfigError(f"search file '{path}' does not exist", "run `edgekd search --out FILE` first") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"'{path}' is not a search result ({exc})",
                          "pass the JSON file `edgekd search --out` wrote") from None
    fix = "run `edgekd search` again for this data, profile and budget, or drop --search"
    recorded, here = raw.get("data") or {}, data.describe()
    for key in ("input_shape", "num_classes"):
        if key in recorded and recorded[key] != here[key]:
            raise ConfigError(f"'{path}' was searched for data with {key.replace('_', ' ')} {recorded[key]}, and "
                              f"this data has {here[key]}", fix)
    if raw.get("profile") not in (None, profile.name):
        raise ConfigError(f"'{path}' measured its students on profile '{raw['profile']}', not '{profile.name}'", fix)
    chosen_ms = result.chosen.latency_ms
    if budget_ms is not None and chosen_ms is not None and chosen_ms > budget_ms:
        raise ConfigError(f"the student '{path}' chose measured {chosen_ms:.3f} ms, over --budget-ms {budget_ms:g}",
                          fix)
    return result

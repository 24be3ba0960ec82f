"""The Python API mirrors the CLI: one call for the whole chain, or one call per stage."""

from edgekd import CompressConfig, compress

result = compress(CompressConfig(out="api-out", budget_ms=0.5, max_size_kb=128, force=True), log=print)
print(result.report_md)
print("primary artifact:", result.manifest["primary"], "passed:", result.passed)

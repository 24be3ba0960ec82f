"""The whole chain in one Python call, on the embedded default teacher and data (the README's step 9 lists a
function per stage; pass teacher= and weights= for your own model, as examples/byo_model/run.sh does)."""

from edgekd import CompressConfig, compress

result = compress(CompressConfig(out="api-out", budget_ms=0.5, max_size_kb=128, force=True), log=print)
print(result.report_md)
print("primary artifact:", result.manifest["primary"], "passed:", result.passed)

"""The gate's CI outputs hold any message: a class name with a pipe, a newline or a control character cannot
break the markdown table, the JUnit XML or a GitHub workflow command."""

import xml.etree.ElementTree as ET

from edgekd.gate import Check, GateResult
from edgekd.gate_report import annotations, junit_xml, summary_markdown

HOSTILE = "lowest class zero|pipe\nthree\r\nx at 0.0%, esc \x1b[31m ff \x0c nul \x00: 5,1"


def _result() -> GateResult:
    return GateResult("run|x/manifest.json", (Check("size", True, "85.6 KB on disk"),
                                             Check("class accuracy", False, HOSTILE)),
                      ("profile:\nfast \x1b", "a <note> & more"))


def test_junit_xml_parses_whatever_characters_a_message_holds():
    root = ET.fromstring(junit_xml(_result()).encode("utf-8"))
    failure = root.find("testcase/failure")
    assert failure is not None and r"esc \x1b[31m ff \x0c nul \x00" in failure.get("message")
    assert "zero|pipe\nthree" in failure.get("message")  # a newline is XML's own: kept
    # one <system-out>, as the common JUnit schema allows, holding every note
    assert [e.text for e in root.iter("system-out")] == ["profile:\nfast \\x1b\na <note> & more"]


def test_a_message_stays_in_its_markdown_table_row():
    text = summary_markdown(_result())
    rows = [line for line in text.splitlines() if line.startswith("| class accuracy")]
    assert rows == [r"| class accuracy | **FAIL** | lowest class zero\|pipe three x at 0.0%, esc \x1b[31m ff \x0c "
                    r"nul \x00: 5,1 |"]
    assert "\x1b" not in text and "\x0c" not in text and "`run|x/manifest.json`" in text
    assert "- profile: fast \\x1b" in text.splitlines()  # a note stays one list item


def test_workflow_commands_are_encoded_as_the_runner_decodes_them():
    result = GateResult("m.onnx", (Check("odd: name, here", False, "100% over\r\nlimit: 5,1"),))
    assert annotations(result) == ["::error title=edgekd gate odd%3A name%2C here::100%25 over%0D%0Alimit: 5,1"]
    assert annotations(_result())[0].count("\n") == 0


def test_a_check_that_could_not_run_is_an_error_not_a_failure():
    result = GateResult("m.json", (Check("size", True, "1.0 KB on disk"), Check("opset", False, "opset 18"),
                                   Check("latency", False, "profile pi needs its device", errored=True)), ("a", "b"))
    suite = ET.fromstring(junit_xml(result).encode("utf-8"))
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("3", "1", "1")
    assert suite.find("testcase[@name='latency']/failure") is None
    assert suite.find("testcase[@name='latency']/error").get("message") == "profile pi needs its device"
    assert suite.find("testcase[@name='opset']/failure").get("message") == "opset 18"
    text = summary_markdown(result)
    assert text.startswith("### edgekd gate: FAIL, and ERROR: 1 check could not run `m.json`")  # opset failed
    assert "| opset | **FAIL** | opset 18 |" in text and "| latency | **ERROR** | profile pi needs its device |" in text
    assert [c["errored"] for c in result.to_dict()["checks"]] == [False, False, True] and not result.passed


def test_the_headline_is_error_only_when_nothing_failed():
    errored = Check("latency", False, "profile pi needs its device", errored=True)
    only = GateResult("m.json", (Check("size", True, "1.0 KB on disk"), errored, errored))
    assert summary_markdown(only).startswith("### edgekd gate: ERROR `m.json`")
    both = GateResult("m.json", (Check("size", False, "9 KB on disk"), errored, errored))
    assert summary_markdown(both).startswith("### edgekd gate: FAIL, and ERROR: 2 checks could not run `m.json`")


def test_a_name_that_is_not_utf8_is_escaped_in_every_text_output():
    odd = b"caf\xe9".decode("utf-8", "surrogateescape")  # a file or class name that is not UTF-8
    result = GateResult(f"{odd}.onnx", (Check("class accuracy", False, f"lowest class {odd} at 0.0%"),), (odd,))
    text = summary_markdown(result)
    assert text.startswith(r"### edgekd gate: FAIL `caf\udce9.onnx`") and r"lowest class caf\udce9" in text
    text.encode("utf-8")  # the summary file and $GITHUB_STEP_SUMMARY are written as UTF-8
    assert annotations(result) == [r"::error title=edgekd gate class accuracy::lowest class caf\udce9 at 0.0%25"]
    junit_xml(result).encode("utf-8")


def test_the_artifact_of_a_manifest_gated_is_named_in_every_report():
    """Two artifacts of one manifest, gated in a CI matrix, gave reports alike but for their figures."""
    result = GateResult("m/manifest.json", (Check("size", True, "1.0 KB on disk"),), (), "student-fp32")
    assert summary_markdown(result).startswith("### edgekd gate: PASS `m/manifest.json` (artifact `student-fp32`)")
    assert ET.fromstring(junit_xml(result)).find("testcase").get("classname") == "edgekd.gate.student-fp32"
    assert result.to_dict()["artifact"] == "student-fp32"
    model = GateResult("m.onnx", (Check("size", True, "1.0 KB on disk"),))  # a model file names itself
    assert summary_markdown(model).startswith("### edgekd gate: PASS `m.onnx`\n")
    assert ET.fromstring(junit_xml(model)).find("testcase").get("classname") == "edgekd.gate"
    assert model.to_dict()["artifact"] is None

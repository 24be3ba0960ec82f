"""Library chatter stays inside edgekd's calls: a transformer-like teacher (LayerNorm, a parameter outside
any layer) is quantized and pruned without onnxruntime's or torch-pruning's advice reaching the user, and
the loggers are left as they were."""

import logging
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from edgekd.quiet import ROOT, quiet


class Tokens(nn.Module):
    """A patch embedding, a position embedding (a bare parameter) and a LayerNorm'd linear block."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Conv2d(1, 16, 4, stride=4)
        self.pos = nn.Parameter(torch.zeros(1, 16, 16))
        self.norm = nn.LayerNorm(16)
        self.mlp = nn.Linear(16, 16)
        self.head = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.embed(x).flatten(2).transpose(1, 2) + self.pos
        return self.head(self.mlp(self.norm(t)).mean(1))


def test_quiet_silences_loggers_warnings_and_stdout_and_puts_the_levels_back(capsys, caplog):
    root, named = logging.getLogger(), logging.getLogger("torch.onnx")
    before = root.level, named.level
    with caplog.at_level(logging.WARNING), warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with quiet(ROOT, "torch.onnx"):
            logging.warning("advice to the root logger")
            named.warning("advice from the exporter")
            warnings.warn("a library warning", UserWarning, stacklevel=1)
            print("progress")
        assert (root.level, named.level) == before
        logging.warning("the user's own warning")
    assert [r.getMessage() for r in caplog.records] == ["the user's own warning"]
    assert not seen and capsys.readouterr().out == ""


def test_quantizing_a_layernorm_model_prints_no_quantizer_advice(tmp_path, capfd, caplog):
    from edgekd.export import ExportRequest, get_exporter

    sample = np.random.default_rng(0).random((16, 1, 16, 16), dtype=np.float32)
    fp32 = get_exporter("onnx-fp32")(ExportRequest("m", "student", tmp_path, Tokens().eval(), sample[:1]))
    with caplog.at_level(logging.WARNING):
        get_exporter("onnx-int8")(ExportRequest("m-int8", "student", tmp_path, calibration=sample, source=fp32))
    said = capfd.readouterr()
    assert not [r for r in caplog.records if "out-of-range" in r.getMessage()]  # one per LayerNorm weight before
    assert "out-of-range" not in said.err + said.out


def test_pruning_a_model_with_a_bare_parameter_gives_no_torch_pruning_warning():
    from edgekd.search.pruned import prune

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        pruned = prune(Tokens(), (1, 16, 16), {0: 0.5}, (("embed",),))
    assert not [w for w in seen if "Unwrapped parameters" in str(w.message)]
    assert pruned.embed.out_channels == 8 and pruned.pos.shape[-1] == 8  # torch-pruning did prune it


def test_quiet_with_stderr_silences_error_logs_of_handlers_that_hold_the_real_stderr(capfd):
    import sys

    from edgekd.quiet import TORCH_EXPORT

    logger = logging.getLogger("torch._guards")
    handler = logging.StreamHandler(sys.stderr)  # as torch's own: bound before quiet() redirects sys.stderr
    logger.addHandler(handler)
    try:
        with quiet(*TORCH_EXPORT, stderr=True):
            logger.error("Error while creating guard: a page of traceback")
    finally:
        logger.removeHandler(handler)
    assert "creating guard" not in capfd.readouterr().err


def test_a_library_s_implicit_basicconfig_leaves_no_handler_on_the_root_logger():
    """onnxruntime's quantizer calls logging.info() on the root logger: with no handler there, logging runs
    basicConfig() itself, and the handler it left made a Python user's own basicConfig() do nothing."""
    import logging

    from edgekd.quiet import ROOT, quiet

    kept = logging.root.handlers[:]  # pytest's own capture handlers
    logging.root.handlers = []
    try:
        with quiet(ROOT):
            logging.info("Quantization parameters for tensor ...")
            logging.error("still said while edgekd runs")
        assert logging.root.handlers == []
    finally:
        logging.root.handlers = kept


def test_overlapping_exports_in_two_threads_give_descriptor_1_back():
    """Each export saved "the" descriptor 1 on entering: the second saved /dev/null, and restored it last,
    leaving the process without a stdout for good."""
    import os
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent("""
        import os, threading, time
        from edgekd.quiet import native_stdout

        def export(pause):
            with native_stdout():
                os.write(1, b"hidden\\n")
                time.sleep(pause)

        first = threading.Thread(target=export, args=(0.3,))
        first.start()
        time.sleep(0.1)
        second = threading.Thread(target=export, args=(0.5,))
        second.start()
        first.join()
        second.join()
        os.write(1, b"visible\\n")
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert done.returncode == 0, done.stderr
    assert done.stdout == "visible\n"


class _Dropped:
    """An object whose weak reference calls back when it is dropped, as torch.export's do all through a trace."""


def _swallowed(interruption):
    """Raises the interruption where CPython can only swallow it: in a weakref callback."""
    import weakref

    def callback(_ref):
        raise interruption

    dropped = _Dropped()
    ref = weakref.ref(dropped, callback)
    del dropped
    return ref


def test_an_interruption_swallowed_inside_a_quiet_block_is_raised_as_it_ends():
    """A Ctrl-C landing in a weakref callback during torch.export was "unraisable": CPython's message went to the
    stderr quiet() silences, and the export, then the run, went on as if nothing had been pressed."""
    import sys

    class Terminated(KeyboardInterrupt):  # the CLI's SIGTERM: its exit code depends on the type arriving intact
        pass

    before = sys.unraisablehook
    went_on = []
    with pytest.raises(Terminated):
        with quiet(stderr=True):
            with quiet():  # the inner block raises it: the outer one sees it as any exception of its body
                _swallowed(Terminated())
                went_on.append(True)  # CPython carries on after a weakref callback; the block ends first
    assert went_on == [True] and sys.unraisablehook is before
    with quiet(stderr=True):  # kept only once: a later block is not interrupted again
        pass


def test_other_unraisable_errors_still_reach_the_hook_that_was_there(monkeypatch):
    import sys

    heard = []
    monkeypatch.setattr(sys, "unraisablehook", lambda unraisable: heard.append(unraisable.exc_value))
    with quiet():
        _swallowed(ValueError("a finalizer's own bug"))
    assert [str(e) for e in heard] == ["a finalizer's own bug"]

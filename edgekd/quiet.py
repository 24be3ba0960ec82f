"""Library chatter silenced where edgekd calls the library, and only there.

torch's exporters, onnxruntime's quantizer, neural-compressor and torch-pruning log progress and advice
(onnxruntime's quantizer to the root logger: one "Axis 1 is out-of-range" line per LayerNorm weight of a
transformer) that means nothing to a user of edgekd, who gets edgekd's own messages and its errors. The
loggers' levels are put back afterwards, so a Python API user's own logging is left as it was.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import threading
import warnings
from collections.abc import Iterator

# torch.fx: its shape solver warns while torch.export traces ("Unable to find user code corresponding to ...").
# torch._guards: logs a page of traceback at ERROR for a model whose batch size is fixed, before the error edgekd
# turns into one line.
TORCH_EXPORT = ("torch.onnx", "torch._dynamo", "torch.export", "torch._export", "torch.fx", "torch._guards")
ROOT = ""  # the root logger, where onnxruntime's quantizer writes
PRE_PROCESS = "onnxruntime.quantization.shape_inference"  # the quantizer's pre-processing


@contextlib.contextmanager
def quiet(*loggers: str, stderr: bool = False) -> Iterator[None]:
    """For the block: the named loggers only at ERROR and above, no Python warnings, no stdout, and with
    ``stderr`` nothing written to sys.stderr either (torch.export prints the partial graph of a model it
    fails on there, dozens of lines, before raising the error that edgekd turns into one line), nor logged by
    the named loggers, whose handlers hold the real stderr."""
    chosen = [logging.getLogger(name or None) for name in loggers]
    levels = [logger.level for logger in chosen]
    # A library's logging.info() on a root logger without handlers runs logging.basicConfig() itself
    # (onnxruntime's quantizer does): the handler it leaves made a Python user's own basicConfig() a no-op.
    had = list(logging.root.handlers)
    for logger in chosen:
        logger.setLevel(logging.CRITICAL + 1 if stderr else logging.ERROR)
    try:
        with _interruptions_kept(), warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
                (contextlib.redirect_stderr(io.StringIO()) if stderr else contextlib.nullcontext()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(chosen, levels):
            logger.setLevel(level)
        for handler in [h for h in logging.root.handlers if h not in had]:
            logging.root.removeHandler(handler)


# A Ctrl-C (or the CLI's SIGTERM, raised as a KeyboardInterrupt) that lands in a weakref callback or a __del__ is
# "unraisable": CPython prints "Exception ignored in ..." and carries on. torch.export drops weak references all
# through a trace, so an interruption during an export was lost, its message hidden by quiet(stderr=True), and the
# run went on to write its results. While a quiet() block runs, such an interruption is kept for the thread it
# happened in and raised again as the block ends. One hook for all blocks, as _NATIVE below: overlapping blocks
# in two threads each putting back "the" hook they found would leave it installed for good.
_KEPT: dict[int, BaseException] = {}  # thread id -> the interruption swallowed there
_HOOK = {"depth": 0, "before": None}
_HOOK_LOCK = threading.Lock()


def _keep_interruption(unraisable: sys.UnraisableHookArgs) -> None:
    if isinstance(unraisable.exc_value, KeyboardInterrupt):
        _KEPT.setdefault(threading.get_ident(), unraisable.exc_value)
    else:  # anything else is said as it was (and hidden as before where stderr is silenced)
        (_HOOK["before"] or sys.__unraisablehook__)(unraisable)


@contextlib.contextmanager
def _interruptions_kept() -> Iterator[None]:
    with _HOOK_LOCK:
        if _HOOK["depth"] == 0:
            _HOOK["before"] = sys.unraisablehook
            sys.unraisablehook = _keep_interruption
        _HOOK["depth"] += 1
    try:
        yield
    finally:
        with _HOOK_LOCK:
            _HOOK["depth"] -= 1
            kept = _KEPT.pop(threading.get_ident(), None)
            if _HOOK["depth"] == 0:
                if sys.unraisablehook is _keep_interruption:  # one set meanwhile by someone else stays theirs
                    sys.unraisablehook = _HOOK["before"]
                _HOOK["before"] = None
                _KEPT.clear()  # one from a thread outside any block: no block of its own is left to raise it
        if kept is not None:
            raise kept  # the block's own error, if any, was raised after the user asked to stop: the stop wins


# File descriptor 1 is the process's, not a thread's: the first export to enter sets it aside and the last to
# leave puts it back (two overlapping exports each saving "the" descriptor left it on /dev/null for good).
_NATIVE = {"depth": 0, "saved": None}
_NATIVE_LOCK = threading.Lock()


@contextlib.contextmanager
def native_stdout() -> Iterator[None]:
    """For the block: nothing written to file descriptor 1 reaches the user. torch's TorchScript exporter (opset
    17 and older) prints the whole Torch IR graph, about a hundred lines, from C++ to std::cout when it fails on
    a model, whatever ``verbose`` says (torch.onnx turns its log on and never off), which sys.stdout cannot
    catch. Only the export call goes inside; what other threads write to descriptor 1 meanwhile is lost too."""
    with _NATIVE_LOCK:
        if _NATIVE["depth"] == 0:
            try:
                sys.stdout.flush()
                saved = os.dup(1)
            except (OSError, ValueError):  # no descriptor 1 (a GUI process): nothing to silence
                saved = None
            if saved is not None:
                _flush_c_stdio()  # what was printed before the block still reaches the user
                with open(os.devnull, "wb") as sink:
                    os.dup2(sink.fileno(), 1)
            _NATIVE["saved"] = saved
        _NATIVE["depth"] += 1
    try:
        yield
    finally:
        with _NATIVE_LOCK:
            _NATIVE["depth"] -= 1
            saved = _NATIVE["saved"]
            if _NATIVE["depth"] == 0 and saved is not None:
                _flush_c_stdio()  # C's buffer would otherwise empty torch's graph onto the restored descriptor
                os.dup2(saved, 1)
                os.close(saved)
                _NATIVE["saved"] = None


def _flush_c_stdio() -> None:
    import ctypes

    try:
        ctypes.CDLL(None).fflush(None)
    except (OSError, AttributeError, TypeError):  # no C library to load by name (Windows): std::cout is unbuffered
        pass

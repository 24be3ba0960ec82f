"""A teacher whose forward returns a mapping with its logits under ``logits`` (Hugging Face's ModelOutput,
a dict of heads) taken by those logits: distillation, the search's proxies and the ONNX export need the
tensor alone. Its layers keep their names under ``model.`` (``--hint-teacher model.layer4``)."""

from __future__ import annotations

from typing import Any

import torch

KEY = "logits"


class LogitsOf(torch.nn.Module):
    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)[KEY]


def gives_logits_mapping(out: Any) -> bool:
    """``out`` is a mapping (a ModelOutput is one) holding a tensor under ``logits``."""
    from collections.abc import Mapping

    return isinstance(out, Mapping) and isinstance(out.get(KEY), torch.Tensor)

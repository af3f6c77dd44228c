"""Sparsity reports of masks or weights, global and per layer."""

from __future__ import annotations

from collections import OrderedDict
from typing import Dict, Mapping

import torch

from .magnitude import layer_of


def zeros_and_total(masks: Mapping[str, torch.Tensor]) -> "OrderedDict[str, tuple]":
    """name -> (number removed, number of entries) of boolean keep-masks."""
    return OrderedDict((n, (m.numel() - int(torch.count_nonzero(m)), m.numel())) for n, m in masks.items())


def sparsity_report(masks: Mapping[str, torch.Tensor]) -> Dict[str, float]:
    """``{"global": s, "layers.0": s0, ...}`` of boolean keep-masks (sparsity = fraction removed)."""
    counts = zeros_and_total(masks)
    if not counts:
        return {"global": 0.0}
    per_layer: "OrderedDict[str, list]" = OrderedDict()
    for n, (z, t) in counts.items():
        acc = per_layer.setdefault(layer_of(n), [0, 0])
        acc[0] += z
        acc[1] += t
    zs = sum(z for z, _ in counts.values())
    tot = sum(t for _, t in counts.values())
    rep = {"global": zs / tot}
    rep.update({k: z / t for k, (z, t) in per_layer.items()})
    return rep


def weight_sparsity_report(weights: Mapping[str, torch.Tensor]) -> Dict[str, float]:
    """Actual sparsity of weights: fraction of entries that are exactly zero."""
    return sparsity_report({n: w.detach() != 0 for n, w in weights.items()})

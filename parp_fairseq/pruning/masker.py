"""Binary masks attached to the parameters of any ``nn.Module`` (no fairseq needed).

Each masked parameter ``<module>.<p>`` gets a persistent boolean buffer ``<module>.<p>_mask``
(``True`` = kept), so masks travel with ``state_dict()``, checkpoints and ``.to(device)``.

Masks take effect by writing zeros INTO the weights (``apply_``), not by a forward hook:
fairseq's ``MultiheadAttention`` hands ``q/k/v/out_proj.weight`` straight to
``F.multi_head_attention_forward`` and never runs those modules' ``forward``, so
``torch.nn.utils.prune`` hooks silently stop working there after the first update. Zeros in the
weight tensor are seen by every code path.

Two modes:

* ``"fixed"`` (OMP, MPI, IMP, random): gradients of removed entries are zeroed in place right
  after they are accumulated (so clipping, Adam moments and weight decay never see them) and
  ``apply_`` after every optimizer step keeps them exactly zero.

Hot-path ops multiply by a cached 0/1 copy of each mask in the parameter's dtype (an in-place
``mul_`` is several times faster than ``masked_fill_`` with a boolean mask).
* ``"adjust"`` (PARP): removed entries are zeroed when a mask is set but keep their gradients,
  so they can grow back until the next re-prune.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from typing import Callable, Dict, List, Mapping, NamedTuple, Sequence

import torch
from torch import nn

from .maskfile import canonical_name, check_compatible
from .stats import sparsity_report

MODES = ("fixed", "adjust")


class Target(NamedTuple):
    name: str  # canonical name, e.g. "encoder.layers.0.fc1.weight"
    key: str  # state_dict key of the parameter relative to the root module
    module: nn.Module
    param: str  # "weight" or "bias"

    @property
    def mask_key(self) -> str:
        return self.key + "_mask"


def find_targets(root: nn.Module, module_pattern: str, params: Sequence[str] = ("weight",),
                 name_fn: Callable[[str], str] = canonical_name) -> List[Target]:
    """Parameters ``params`` of every submodule whose canonical name fully matches the pattern."""
    rx = re.compile(module_pattern)
    out: List[Target] = []
    for mname, mod in root.named_modules():
        if not mname or not rx.fullmatch(name_fn(mname)):
            continue
        for p in params:
            if isinstance(getattr(mod, p, None), nn.Parameter):
                out.append(Target(f"{name_fn(mname)}.{p}", f"{mname}.{p}", mod, p))
    return out


class ParamMasker:
    """Owns the mask buffers of the targets of a root module."""

    def __init__(self, targets: List[Target], mode: str = "fixed"):
        if not targets:
            raise ValueError("the prune pattern matched no parameter of the model; check "
                             "`pruning.pattern` against the model's module names")
        if mode not in MODES:
            raise ValueError(f"mask mode must be one of {MODES}, got {mode!r}")
        self.targets = targets
        self.mode = mode
        self._report = None
        self._fmasks: Dict[str, torch.Tensor] = {}
        self._hooks = []
        for t in targets:
            p = getattr(t.module, t.param)
            buf = f"{t.param}_mask"
            if buf not in t.module._buffers:
                t.module.register_buffer(buf, torch.ones_like(p, dtype=torch.bool), persistent=True)
            self._hooks.append(p.register_post_accumulate_grad_hook(self._grad_hook(t)))

    def _fmask(self, t: Target, like: torch.Tensor) -> torch.Tensor:
        """0/1 copy of the mask in ``like``'s dtype/device (rebuilt after mask changes or moves)."""
        f = self._fmasks.get(t.name)
        if f is None or f.dtype != like.dtype or f.device != like.device:
            f = getattr(t.module, f"{t.param}_mask").to(device=like.device, dtype=like.dtype)
            self._fmasks[t.name] = f
        return f

    def _grad_hook(self, t: Target):
        def hook(p):
            if self.mode == "fixed" and p.grad is not None:
                p.grad.mul_(self._fmask(t, p.grad))
        return hook

    # -- views ------------------------------------------------------------------------------
    def names(self) -> List[str]:
        return [t.name for t in self.targets]

    def params(self) -> "OrderedDict[str, nn.Parameter]":
        return OrderedDict((t.name, getattr(t.module, t.param)) for t in self.targets)

    def masks(self) -> "OrderedDict[str, torch.Tensor]":
        return OrderedDict((t.name, getattr(t.module, f"{t.param}_mask")) for t in self.targets)

    def shapes(self) -> Dict[str, list]:
        return {n: list(p.shape) for n, p in self.params().items()}

    def report(self) -> Dict[str, float]:
        """Sparsity of the masks, global and per layer (cached until the masks change)."""
        if self._report is None:
            self._report = sparsity_report(self.masks())
        return self._report

    # -- updates ----------------------------------------------------------------------------
    def set_masks(self, masks: Mapping[str, torch.Tensor], source: str = "mask") -> None:
        """Copy ``masks`` (canonical names) into the buffers and zero the removed weights."""
        check_compatible(masks, self.shapes(), what=source)
        with torch.no_grad():
            for t in self.targets:
                getattr(t.module, f"{t.param}_mask").copy_(masks[t.name])
        self.invalidate()
        self.apply_()

    @torch.no_grad()
    def apply_(self) -> None:
        """Write zeros into the removed entries of every target weight."""
        for t in self.targets:
            p = getattr(t.module, t.param)
            p.mul_(self._fmask(t, p))

    def public_state(self, sd, prefix: str = ""):
        return sd

    def internal_state(self, sd):
        return sd

    def public_keys(self) -> List[str]:
        """state_dict keys this masker adds to the stock model's."""
        return [t.mask_key for t in self.targets]

    def invalidate(self) -> None:
        """Masks changed (set_masks, load_state_dict): drop cached reports and float masks."""
        self._report = None
        self._fmasks.clear()


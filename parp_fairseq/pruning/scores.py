"""S3-Router: binary masks learned through score tensors over frozen weights (no fairseq needed).

Every target weight ``w`` gets a trainable score tensor ``s`` of its shape; the forward uses

    w_eff = w * m,    m = top-k of |s| (per tensor, or ranked globally)

and the gradient reaching ``s`` is the straight-through estimate ``dL/dw_eff * w * sign(s)``
(Ramanujan et al.'s GetSubnet applied to ``|s|``, as in the S3-Router code).
``m`` is recomputed with a k-th value selection (never a full sort) by :meth:`ScoreMasker.refresh`,
which the training loop calls after every optimizer step; as a safety net for plain PyTorch loops
it is also recomputed lazily when a score tensor's version counter moved (``torch.optim`` bumps
it; fairseq's optimizers write ``p.data`` and do not).

``w_eff`` is a ``torch.nn.utils.parametrize`` property of the module, so code that reads
``module.weight`` directly (fairseq ``MultiheadAttention`` -> ``F.multi_head_attention_forward``)
sees the masked weight; forward pre-hooks would not run there.

Public state_dict names (what :meth:`ScoreMasker.public_state` produces) are those of the stock
model plus ``<param>_mask`` (bool) and ``<param>_scores``: ``X.weight`` is the frozen weight.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Dict, List, Mapping

import torch
from torch import nn
from torch.nn.utils import parametrize

from .magnitude import masks_from_scores, magnitude_masks
from .masker import Target
from .maskfile import check_compatible
from .stats import sparsity_report

SCORE_INITS = ("kaiming", "magnitude", "magnitude_scale", "ori")


class _MaskedWeightSTE(torch.autograd.Function):
    """``w * m`` forward; backward: ``dL/dw = g * m``, ``dL/ds = g * w * sign(s)`` (straight-through
    through the top-k and ``d|s|/ds = sign(s)``). One fused op instead of autograd over
    ``w * (m + |s| - sg(|s|))``, which allocates five full-size temporaries."""

    @staticmethod
    def forward(ctx, w, scores, fmask):
        ctx.save_for_backward(w, scores, fmask)
        return w * fmask

    @staticmethod
    def backward(ctx, g):
        w, scores, fmask = ctx.saved_tensors
        gw = g * fmask if ctx.needs_input_grad[0] else None
        gs = (g * w).mul_(scores.sign()).to(scores.dtype) if ctx.needs_input_grad[1] else None
        return gw, gs, None


class ScoreMask(nn.Module):
    """Parametrization ``w -> w * STE(mask(|scores|))`` with a cached binary mask."""

    def __init__(self, weight: torch.Tensor, owner: "ScoreMasker"):
        super().__init__()
        self.scores = nn.Parameter(torch.zeros_like(weight, dtype=torch.float32))
        self.register_buffer("mask", torch.ones_like(weight, dtype=torch.bool), persistent=True)
        self._owner = [owner]  # a list: not registered as a submodule
        self._fmask = None

    def float_mask(self, like: torch.Tensor) -> torch.Tensor:
        f = self._fmask
        if f is None or f.dtype != like.dtype or f.device != like.device:
            f = self._fmask = self.mask.to(device=like.device, dtype=like.dtype)
        return f

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        self._owner[0].refresh_if_stale()
        return _MaskedWeightSTE.apply(w, self.scores, self.float_mask(w))


def init_scores(weights: Mapping[str, torch.Tensor], how: str, sparsity: float, scale: float = 1.0,
                seed: int = 0) -> Dict[str, torch.Tensor]:
    """Initial scores (float32) for each weight.

    * ``kaiming``: kaiming-uniform random scores (the S3-Router/edge-popup default),
    * ``magnitude``: the per-tensor magnitude mask of ``w`` at ``sparsity`` as 0/1 scores (removed
      entries sit at |s| = 0 where d|s|/ds = 0: they can never come back),
    * ``magnitude_scale``: ``w / scale`` (S3-Router-P: scores from finetuned weights),
    * ``ori``: kaiming-uniform values permuted so that ``|s|`` ranks equal ``|w|`` ranks: the
      first mask is the per-tensor magnitude mask, yet scores keep a random-init scale.
    """
    if how not in SCORE_INITS:
        raise ValueError(f"score init must be one of {SCORE_INITS}, got {how!r}")
    if how == "magnitude_scale" and scale <= 0:
        raise ValueError(f"score scale must be > 0, got {scale}")
    gen = torch.Generator().manual_seed(int(seed))
    out: Dict[str, torch.Tensor] = {}
    if how == "magnitude":
        masks = magnitude_masks(weights, sparsity, "tensor")
        return {n: masks[n].float() for n in weights}
    for n, w in weights.items():
        w = w.detach().float().cpu()
        if how == "magnitude_scale":
            out[n] = w / scale
            continue
        fan_in = w.shape[1] if w.dim() > 1 else w.shape[0]
        bound = 1.0 / math.sqrt(fan_in)  # kaiming_uniform_(a=sqrt(5)), as nn.Linear
        r = (torch.rand(w.shape, generator=gen) * 2 - 1) * bound
        if how == "ori":
            flat = torch.empty(r.numel())
            flat[torch.argsort(w.abs().reshape(-1), stable=True)] = torch.sort(r.abs().reshape(-1)).values
            sign = torch.where(torch.rand(w.shape, generator=gen) < 0.5, -1.0, 1.0)
            r = flat.view(w.shape) * sign
        out[n] = r
    return out


class ScoreMasker:
    """Attaches :class:`ScoreMask` parametrizations to the targets and keeps their masks current."""

    mode = "score"

    def __init__(self, targets: List[Target], sparsity: float, ranking: str = "tensor"):
        if not targets:
            raise ValueError("the prune pattern matched no parameter of the model; check `pruning.pattern`")
        self.targets = targets
        self.sparsity = sparsity
        self.ranking = ranking
        self._versions: List[int] = []
        self._report = None
        for t in targets:
            w = getattr(t.module, t.param)
            parametrize.register_parametrization(t.module, t.param, ScoreMask(w.detach(), self), unsafe=True)
        self._score_list = [self._pm(t).scores for t in targets]  # for the per-forward staleness check

    def _pm(self, t: Target) -> ScoreMask:
        return t.module.parametrizations[t.param][0]

    # -- views (same interface as ParamMasker) --------------------------------------------------
    def names(self) -> List[str]:
        return [t.name for t in self.targets]

    def params(self) -> "OrderedDict[str, nn.Parameter]":
        """The frozen (unmasked) weights."""
        return OrderedDict((t.name, t.module.parametrizations[t.param].original) for t in self.targets)

    def scores(self) -> "OrderedDict[str, nn.Parameter]":
        return OrderedDict((t.name, self._pm(t).scores) for t in self.targets)

    def masks(self) -> "OrderedDict[str, torch.Tensor]":
        self.refresh_if_stale()
        return OrderedDict((t.name, self._pm(t).mask) for t in self.targets)

    def shapes(self) -> Dict[str, list]:
        return {n: list(p.shape) for n, p in self.params().items()}

    def report(self) -> Dict[str, float]:
        masks = self.masks()  # refreshes first
        if self._report is None:
            self._report = sparsity_report(masks)
        return self._report

    def invalidate(self) -> None:
        self._versions = []
        self._report = None
        for t in self.targets:
            self._pm(t)._fmask = None

    # -- masks ------------------------------------------------------------------------------------
    def _score_versions(self) -> List[int]:
        return [s._version for s in self._score_list]

    def refresh_if_stale(self) -> None:
        if self._score_versions() != self._versions:
            self.refresh()

    def _masks_from_scores(self) -> Dict[str, torch.Tensor]:
        return masks_from_scores({n: s.abs() for n, s in self.scores().items()}, self.sparsity, self.ranking)

    @torch.no_grad()
    def refresh(self) -> None:
        """Recompute every mask as the top ``1 - sparsity`` of ``|scores|``."""
        masks = self._masks_from_scores()
        for t in self.targets:
            pm = self._pm(t)
            pm.mask.copy_(masks[t.name])
            pm._fmask = None
        self._versions = self._score_versions()
        self._report = None

    def score_shapes(self) -> Dict[str, list]:
        return {n: list(p.shape) for n, p in self.scores().items()}

    def score_basis(self) -> "OrderedDict[str, torch.Tensor]":
        """What :func:`init_scores` ranks: the weights (one score per weight)."""
        return self.params()

    @torch.no_grad()
    def set_scores(self, scores: Mapping[str, torch.Tensor]) -> None:
        check_compatible(scores, self.score_shapes(), what="scores")
        for n, s in self.scores().items():
            s.copy_(scores[n])
        self.refresh()

    # -- state_dict naming -------------------------------------------------------------------------
    def _key_map(self, prefix: str = "") -> Dict[str, str]:
        """internal state_dict key -> public key."""
        out = {}
        for t in self.targets:
            mod = prefix + t.key[: -len(t.param) - 1]
            base = f"{mod}.parametrizations.{t.param}"
            out[f"{base}.original"] = prefix + t.key
            if self._has_scores(t):
                out[f"{base}.0.scores"] = prefix + t.key + "_scores"
            out[f"{base}.0.mask"] = prefix + t.key + "_mask"
        return out

    def _has_scores(self, t: Target) -> bool:
        return True

    def public_state(self, sd: "OrderedDict", prefix: str = "") -> "OrderedDict":
        self.refresh_if_stale()
        km = self._key_map(prefix)
        return OrderedDict((km.get(k, k), v) for k, v in sd.items())

    def internal_state(self, sd: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        inv = {v: k for k, v in self._key_map().items()}
        return {inv.get(k, k): v for k, v in sd.items()}

    def public_keys(self) -> List[str]:
        """state_dict keys this masker adds to the stock model's."""
        return [k for k in self._key_map().values() if k.endswith(("_mask", "_scores"))]



class _GroupMaskedWeightSTE(torch.autograd.Function):
    """``w * m`` forward with ``m`` expanded from one score per group; backward:
    ``dL/dw = g * m`` and ``dL/ds_j = sign(s_j) * sum over group j of g * w`` (the straight-through
    estimate summed over the group's entries, as the S3-Router structured score layers)."""

    @staticmethod
    def forward(ctx, w, scores, fmask, dim: int, block: int):
        ctx.save_for_backward(w, scores, fmask)
        ctx.dim, ctx.block = dim, block
        return w * fmask

    @staticmethod
    def backward(ctx, g):
        w, scores, fmask = ctx.saved_tensors
        gw = g * fmask if ctx.needs_input_grad[0] else None
        gs = None
        if ctx.needs_input_grad[1]:
            e = g * w
            if e.dim() == 2:
                e = e.sum(1 - ctx.dim)
            gs = e.reshape(scores.numel(), ctx.block).sum(1).to(scores.dtype).mul_(scores.sign())
        return gw, gs, None, None, None


class GroupScoreMask(ScoreMask):
    """Parametrization of one member tensor of a group set: its mask is its set's group mask
    expanded along ``dim``; the set's scores live on the set's first weight (the host).

    Only the member at the group's OUTPUT (``fc2`` columns, ``out_proj`` columns; ``gate=True``)
    multiplies by the mask in the live forward: the group then contributes exactly nothing, and
    its score still gets the straight-through gradient of a gate on the group's output. Zeroing
    both sides would put the gate on every path twice, where the loss is flat (``d(g^2)/dg = 0``
    at ``g = 0``): removed neurons and heads would never come back. The masks of every member
    cover the whole group, so checkpoints, exports and slices are zero on both sides.
    """

    def __init__(self, weight: torch.Tensor, owner: "GroupScoreMasker", member, n: int, host_scores=None):
        nn.Module.__init__(self)
        if host_scores is None:
            self.scores = nn.Parameter(torch.zeros(n, dtype=torch.float32))
            self._shared = None
        else:
            self._shared = [host_scores]  # a list: not registered twice
        self.register_buffer("mask", torch.ones_like(weight, dtype=torch.bool), persistent=True)
        self._owner = [owner]
        self._fmask = None
        self.dim, self.block = member.dim, member.block
        self.gate = member.dim == 1  # the group's output side

    def group_scores(self) -> nn.Parameter:
        return self.scores if self._shared is None else self._shared[0]

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        self._owner[0].refresh_if_stale()
        if not self.gate:
            return w
        return _GroupMaskedWeightSTE.apply(w, self.group_scores(), self.float_mask(w), self.dim, self.block)


class GroupScoreMasker(ScoreMasker):
    """S3-Router over whole FFN neurons / attention heads: one trainable score per group.

    Public state: every member tensor keeps its element ``<param>_mask``; the set's scores are
    ``<host>_scores`` of shape ``(n_groups,)`` (``fc1.weight_scores``: one per neuron,
    ``self_attn.q_proj.weight_scores``: one per head)."""

    def __init__(self, targets: List[Target], sparsity: float, ranking: str, cut):
        if not targets:
            raise ValueError("the prune pattern matched no parameter of the model; check `pruning.pattern`")
        self.targets = targets
        self.sparsity = sparsity
        self.ranking = ranking
        self.cut = cut
        self._versions: List[int] = []
        self._report = None
        by_name = {t.name: t for t in targets}
        self.sets = cut.sets({t.name: list(getattr(t.module, t.param).shape) for t in targets})
        self._hosts: "OrderedDict[str, Target]" = OrderedDict()
        for gs in self.sets:
            host_scores = None
            for m in gs.members:
                t = by_name[m.name]
                pm = GroupScoreMask(getattr(t.module, t.param).detach(), self, m, gs.n, host_scores)
                parametrize.register_parametrization(t.module, t.param, pm, unsafe=True)
                if host_scores is None:
                    host_scores = pm.scores
                    self._hosts[gs.key] = t
        self._score_list = [self._pm(t).scores for t in self._hosts.values()]

    def scores(self) -> "OrderedDict[str, nn.Parameter]":
        """host weight name -> ``(n_groups,)`` scores of its set."""
        return OrderedDict((t.name, self._pm(t).scores) for t in self._hosts.values())

    def score_basis(self) -> "OrderedDict[str, torch.Tensor]":
        """host name -> ``(n_groups,)`` magnitudes of the groups (what ``ori`` / ``magnitude`` rank)."""
        from .structured import group_magnitudes

        mags = group_magnitudes(self.params(), self.sets, self.cut.norm)
        return OrderedDict((self._hosts[k].name, v) for k, v in mags.items())

    def _masks_from_scores(self) -> Dict[str, torch.Tensor]:
        """Top ``1 - sparsity`` of the groups by ``|score|``, expanded to every member tensor."""
        from .structured import expand, group_masks_from_scores

        by_set = {gs.key: self._pm(self._hosts[gs.key]).scores.abs() for gs in self.sets}
        gm = group_masks_from_scores(by_set, self.sets, self.sparsity, self.ranking,
                                     remove_whole_layers=self.cut.remove_whole_layers)
        return expand(gm, self.sets, self.shapes())

    def _has_scores(self, t: Target) -> bool:
        return any(t is h for h in self._hosts.values())

"""Structured masks: whole FFN neurons and attention heads, as pure functions on tensors.

A *group* is what a smaller dense model can drop:

* FFN neuron ``i`` of a layer: row ``i`` of ``fc1.weight`` with ``fc1.bias[i]``, and column ``i``
  of ``fc2.weight`` (``fc2.bias`` belongs to no neuron and is never masked);
* attention head ``h``: rows ``h*d:(h+1)*d`` (``d`` = head dim) of ``q/k/v_proj.weight`` with
  those entries of their biases, and the same columns of ``out_proj.weight``.

The groups of one kind in one layer form a :class:`GroupSet` (``"layers.3/neuron"``: ``F``
groups; ``"layers.3/head"``: ``H`` groups). Element masks (``torch.bool``, ``True`` = kept, the
shape of each tensor) are what the models and mask files hold; :func:`expand` turns group masks
into them and :func:`collapse` back, refusing masks that cut through a group.

Ranking. A group's magnitude is the mean ``|w|`` (``norm="l1"``) or the root-mean-square of
``w`` (``norm="l2"``) over its WEIGHT entries (biases are masked with their group but not
ranked). The mean, not the sum, makes a neuron (``2 D`` weights) and a head (``4 D d`` weights)
comparable in one ``neuron+head`` ranking. ``ranking``: ``global`` (every group of the model),
``layer`` (neurons and heads of one layer together) or ``tensor`` (each group set alone).

Sparsity stays the fraction of masked ENTRIES removed. Within a ranking group whose groups all
have one size, exactly ``round(sparsity * n_groups)`` groups go; with mixed sizes
(``neuron+head`` under ``global`` / ``layer`` ranking) groups go in rank order, a group that would
overshoot the target ``round(sparsity * n_entries)`` by more than stopping short leaves the turn
to smaller ones, and the result is within half of the largest group of the target. A floor keeps at least one group of every
set (one head and one neuron per layer) unless ``remove_whole_layers=True``; a sparsity that
cannot be reached above the floor is a :class:`ValueError` naming the flag.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import torch

from .magnitude import Masks, check_sparsity

GRANULARITIES = ("weight", "neuron", "head", "neuron+head")
GROUP_NORMS = ("l1", "l2")
STRUCTURED_RANKINGS = ("global", "layer", "tensor")

# canonical tensor name -> (layer prefix, kind, role)
_TENSOR_RE = re.compile(
    r"^(?P<layer>.*layers\.\d+)\.(?:(?P<ffn>fc1\.weight|fc1\.bias|fc2\.weight)"
    r"|self_attn\.(?P<attn>(?:q|k|v)_proj\.weight|(?:q|k|v)_proj\.bias|out_proj\.weight))$")


def check_granularity(granularity: str) -> str:
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity must be one of {GRANULARITIES}, got {granularity!r}")
    return granularity


def is_structured(granularity: Optional[str]) -> bool:
    return granularity not in (None, "weight")


def kinds_of(granularity: str) -> Tuple[str, ...]:
    """``"neuron+head" -> ("neuron", "head")``; ``"weight" -> ()``."""
    check_granularity(granularity)
    return () if granularity == "weight" else tuple(granularity.split("+"))


def group_kind(name: str) -> Optional[str]:
    """``"neuron"`` / ``"head"`` for a tensor that belongs to a structured group, else None."""
    m = _TENSOR_RE.match(name)
    if m is None:
        return None
    return "neuron" if m.group("ffn") else "head"


@dataclass(frozen=True)
class Member:
    """One tensor of a group set: its groups are slices of ``block`` entries along ``dim``."""

    name: str
    dim: int  # 0: rows (fc1, q/k/v and their biases), 1: columns (fc2, out_proj)
    block: int  # entries per group along dim: 1 for neurons, the head dim for heads
    is_bias: bool


@dataclass(frozen=True)
class GroupSet:
    """The ``n`` neurons (or heads) of one layer and the tensors they cut through."""

    key: str  # "encoder.layers.3/neuron"
    layer: str  # "encoder.layers.3"
    kind: str  # "neuron" | "head"
    n: int  # number of groups
    members: Tuple[Member, ...]

    @property
    def host(self) -> str:
        """The first weight of the set (fc1.weight / q_proj.weight): where S3-Router keeps its scores."""
        return self.members[0].name

    other_dims: Tuple[Tuple[str, int], ...] = ()  # weight name -> its size across the groups

    @property
    def group_size(self) -> int:
        """Masked entries per group (weights and biases)."""
        other = dict(self.other_dims)
        return sum(m.block * (1 if m.is_bias else other[m.name]) for m in self.members)


def group_sets(shapes: Mapping[str, Sequence[int]], granularity: str, num_heads: int) -> List[GroupSet]:
    """The group sets of a model's masked tensors (canonical name -> shape).

    Every tensor must belong to a group of the granularity and every group set must be complete
    (``fc1.weight`` and ``fc2.weight``; ``q/k/v/out_proj.weight``); biases are optional.
    Raises ValueError naming what is missing or extra.
    """
    kinds = kinds_of(granularity)
    if not kinds:
        raise ValueError("granularity=weight has no groups")
    per: "OrderedDict[Tuple[str, str], Dict[str, Tuple[str, list]]]" = OrderedDict()
    extra = []
    for name, shape in shapes.items():
        m = _TENSOR_RE.match(name)
        kind = None if m is None else ("neuron" if m.group("ffn") else "head")
        if kind not in kinds:
            extra.append(name)
            continue
        role = m.group("ffn") or m.group("attn")
        per.setdefault((m.group("layer"), kind), {})[role] = (name, list(shape))
    if extra:
        raise ValueError(f"granularity={granularity} prunes whole "
                         f"{' and '.join(k + 's' for k in kinds)}; these tensors belong to no such group: "
                         f"{extra[:3]}{' ...' if len(extra) > 3 else ''} (narrow pruning.pattern, or use "
                         f"granularity=weight)")
    out: List[GroupSet] = []
    for (layer, kind), roles in per.items():
        if kind == "neuron":
            need, order = ("fc1.weight", "fc2.weight"), ("fc1.weight", "fc1.bias", "fc2.weight")
        else:
            need = ("q_proj.weight", "k_proj.weight", "v_proj.weight", "out_proj.weight")
            order = ("q_proj.weight", "q_proj.bias", "k_proj.weight", "k_proj.bias", "v_proj.weight",
                     "v_proj.bias", "out_proj.weight")
        missing = [r for r in need if r not in roles]
        if missing:
            raise ValueError(f"{layer}: {kind} groups need {list(need)} in the pruning targets; missing "
                             f"{missing} (pruning.pattern must match all of them)")
        if kind == "neuron":
            n = roles["fc1.weight"][1][0]
        else:
            inner = roles["q_proj.weight"][1][0]
            if num_heads <= 0 or inner % num_heads:
                raise ValueError(f"{layer}: attention dim {inner} does not split into {num_heads} heads")
            n = num_heads
        members, other = [], []
        for r in order:
            if r not in roles:
                continue
            name, shape = roles[r]
            is_bias = r.endswith("bias")
            dim = 1 if r in ("fc2.weight", "out_proj.weight") else 0
            total = n if kind == "neuron" else roles["q_proj.weight"][1][0]
            if shape[dim] != total:
                raise ValueError(f"{name}: shape {shape} does not match {total} {kind} entries along dim {dim}")
            members.append(Member(name, dim, total // n, is_bias))
            if not is_bias:
                other.append((name, shape[1 - dim]))
        out.append(GroupSet(f"{layer}/{kind}", layer, kind, n, tuple(members), tuple(other)))
    return out


# -- group magnitudes and masks ----------------------------------------------------------------
def _group_view(t: torch.Tensor, m: Member, n: int) -> torch.Tensor:
    """``t`` as ``(n, entries per group)``."""
    t = t.detach()
    if m.dim == 1:
        t = t.transpose(0, 1)
    return t.reshape(n, -1)


def group_magnitudes(weights: Mapping[str, torch.Tensor], sets: Sequence[GroupSet],
                     norm: str = "l1") -> "OrderedDict[str, torch.Tensor]":
    """set key -> ``(n,)`` float32 magnitude of every group (mean |w| or RMS of its weights)."""
    if norm not in GROUP_NORMS:
        raise ValueError(f"group norm must be one of {GROUP_NORMS}, got {norm!r}")
    out: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    for s in sets:
        acc, count = None, 0
        for m in s.members:
            if m.is_bias:
                continue
            g = _group_view(weights[m.name], m, s.n).float()
            part = g.abs().sum(1) if norm == "l1" else g.pow(2).sum(1)
            acc = part if acc is None else acc + part
            count += g.shape[1]
        mean = acc / count
        out[s.key] = mean if norm == "l1" else mean.sqrt()
    return out


def _ranking_groups(sets: Sequence[GroupSet], ranking: str) -> "OrderedDict[str, List[GroupSet]]":
    if ranking not in STRUCTURED_RANKINGS:
        raise ValueError(f"structured pruning ranks groups {STRUCTURED_RANKINGS}; got ranking={ranking!r}")
    out: "OrderedDict[str, List[GroupSet]]" = OrderedDict()
    for s in sets:
        key = "all" if ranking == "global" else s.layer if ranking == "layer" else s.key
        out.setdefault(key, []).append(s)
    return out


def group_masks_from_scores(
    scores: Mapping[str, torch.Tensor],
    sets: Sequence[GroupSet],
    sparsity: float,
    ranking: str = "global",
    keep: Optional[Mapping[str, torch.Tensor]] = None,
    remove_whole_layers: bool = False,
) -> "OrderedDict[str, torch.Tensor]":
    """Group keep-masks (set key -> ``(n,)`` bool) removing the lowest-scoring groups.

    Args:
        scores: set key -> ``(n,)`` importance of each group (higher = kept first).
        sparsity: fraction of the masked entries removed, in ``[0, 1)``.
        keep: current group masks; removed groups stay removed (IMP rounds).
        remove_whole_layers: allow a set to lose every group (else one per set is kept).
    Ties are broken by position (earlier groups go first), the same on every rank.
    """
    check_sparsity(sparsity)
    out: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    for gname, members in _ranking_groups(sets, ranking).items():
        sc = torch.cat([scores[s.key].detach().reshape(-1).float().cpu() for s in members])
        if sc.numel() != sum(s.n for s in members):
            raise ValueError(f"{gname}: {sc.numel()} scores for {sum(s.n for s in members)} groups")
        sizes = torch.cat([torch.full((s.n,), s.group_size, dtype=torch.long) for s in members])
        owner = torch.cat([torch.full((s.n,), i, dtype=torch.long) for i, s in enumerate(members)])
        removed = torch.zeros(sc.numel(), dtype=torch.bool)
        if keep is not None:
            removed = ~torch.cat([keep[s.key].reshape(-1).cpu().to(torch.bool) for s in members])
        uniform = bool((sizes == sizes[0]).all())
        total = int(sizes.sum())
        target = round(sparsity * sc.numel()) if uniform else round(sparsity * total)
        done = int(removed.sum()) if uniform else int(sizes[removed].sum())
        if done > target:
            raise ValueError(f"{gname}: sparsity {sparsity} removes fewer entries than the current "
                             f"mask already does; masks can only grow sparser here")
        left = [s.n - int(removed[owner == i].sum()) for i, s in enumerate(members)]
        order = torch.sort(torch.where(removed, torch.full_like(sc, float("-inf")), sc), stable=True).indices
        floored = False
        for j in order.tolist():
            if done >= target:
                break
            step = 1 if uniform else int(sizes[j])
            if removed[j] or done + step - target > target - done:
                continue  # already gone, or a big group that overshoots more than stopping short
            i = int(owner[j])
            if left[i] == 1 and not remove_whole_layers:
                floored = True  # the floor: the last neuron / head of a layer stays
                continue
            removed[j] = True
            left[i] -= 1
            done += step
        short = done < target if uniform else 2 * (target - done) > int(sizes.max())
        if floored and short:
            kinds = "/".join(sorted({s.kind for s in members}))
            raise ValueError(
                f"sparsity {sparsity} cannot be reached in {gname} while one {kinds} of every layer is "
                f"kept: lower the sparsity, or set pruning.remove_whole_layers=true "
                f"(--remove-whole-layers) to let whole layers go")
        offset = 0
        for s in members:
            out[s.key] = ~removed[offset: offset + s.n]
            offset += s.n
    return out


def expand(group_masks: Mapping[str, torch.Tensor], sets: Sequence[GroupSet],
           shapes: Mapping[str, Sequence[int]]) -> Masks:
    """Element masks (canonical name -> bool tensor of the tensor's shape) from group masks."""
    out: Masks = OrderedDict()
    for s in sets:
        g = group_masks[s.key].to(torch.bool)
        for m in s.members:
            rows = g.repeat_interleave(m.block)
            shape = list(shapes[m.name])
            if m.is_bias:
                out[m.name] = rows.clone()
            elif m.dim == 0:
                out[m.name] = rows[:, None].expand(shape).clone()
            else:
                out[m.name] = rows[None, :].expand(shape).clone()
    return out


def collapse(masks: Mapping[str, torch.Tensor], sets: Sequence[GroupSet]) -> "OrderedDict[str, torch.Tensor]":
    """Group masks from element masks; ValueError when a mask keeps part of a group."""
    out: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    for s in sets:
        g = None
        for m in s.members:
            v = _group_view(masks[m.name].to(torch.bool).cpu(), m, s.n)
            full, empty = v.all(1), ~v.any(1)
            if not bool((full | empty).all()):
                bad = int(torch.nonzero(~(full | empty))[0])
                raise ValueError(f"{m.name}: {s.kind} {bad} of {s.layer} is partly kept: the mask is not "
                                 f"structured ({s.kind} groups must be fully kept or fully removed)")
            if g is None:
                g = full
            elif not torch.equal(g, full):
                bad = int(torch.nonzero(g != full)[0])
                raise ValueError(f"{s.layer}: {s.kind} {bad} is kept in {s.members[0].name} but not in "
                                 f"{m.name}: the mask is not structured")
        out[s.key] = g
    return out


def structured_masks(weights: Mapping[str, torch.Tensor], sparsity: float, granularity: str,
                     num_heads: int, ranking: str = "global", norm: str = "l1",
                     keep: Optional[Mapping[str, torch.Tensor]] = None,
                     remove_whole_layers: bool = False) -> Masks:
    """Structured magnitude pruning (OMP / MPI / IMP / PARP re-prune) of the target tensors.

    Args:
        weights: canonical name -> tensor of every masked tensor (weights and the biases of groups).
        keep: current ELEMENT masks (IMP rounds): removed groups stay removed.
    Returns:
        canonical name -> element keep-mask; every group fully kept or fully removed.
    """
    shapes = {n: list(w.shape) for n, w in weights.items()}
    sets = group_sets(shapes, granularity, num_heads)
    gkeep = collapse(keep, sets) if keep is not None else None
    gm = group_masks_from_scores(group_magnitudes(weights, sets, norm), sets, sparsity, ranking,
                                 gkeep, remove_whole_layers)
    return expand(gm, sets, shapes)


def structured_random_masks(shapes: Mapping[str, Sequence[int]], sparsity: float, granularity: str,
                            num_heads: int, ranking: str = "global", seed: int = 0,
                            remove_whole_layers: bool = False) -> Masks:
    """Random groups removed, reproducible from ``seed``, with the counts of :func:`structured_masks`."""
    sets = group_sets(shapes, granularity, num_heads)
    gen = torch.Generator().manual_seed(int(seed))
    scores = OrderedDict((s.key, torch.rand(s.n, generator=gen)) for s in sets)
    gm = group_masks_from_scores(scores, sets, sparsity, ranking, None, remove_whole_layers)
    return expand(gm, sets, shapes)


# -- slicing -------------------------------------------------------------------------------------
def kept_indices(group_masks: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """set key -> sorted indices of the kept groups."""
    return {k: torch.nonzero(g.to(torch.bool)).flatten() for k, g in group_masks.items()}


def slice_tensors(tensors: Mapping[str, torch.Tensor], sets: Sequence[GroupSet],
                  group_masks: Mapping[str, torch.Tensor], prefix: str = "") -> Dict[str, torch.Tensor]:
    """The tensors of a smaller dense model: every removed group's rows / columns dropped.

    Args:
        tensors: state-dict key -> tensor; group members are found under ``prefix + name``.
    Returns:
        a new dict with the same keys; group members are smaller, the rest untouched.
    """
    out = dict(tensors)
    idx = kept_indices(group_masks)
    for s in sets:
        keep = idx[s.key]
        for m in s.members:
            key = prefix + m.name
            t = tensors[key]
            rows = (keep[:, None] * m.block + torch.arange(m.block)[None, :]).reshape(-1)
            out[key] = t.index_select(m.dim, rows).clone()
    return out


# -- one entry point for both granularities ------------------------------------------------------
@dataclass(frozen=True)
class Granularity:
    """How masks are cut: ``weight`` (unstructured) or groups, with what groups need to know.

    The one dispatcher used by the model, the mask command and IMP, so that every method prunes
    at the same granularity the same way.
    """

    granularity: str = "weight"
    num_heads: int = 0
    norm: str = "l1"
    remove_whole_layers: bool = False

    def __post_init__(self):
        check_granularity(self.granularity)
        if self.norm not in GROUP_NORMS:
            raise ValueError(f"group norm must be one of {GROUP_NORMS}, got {self.norm!r}")

    @property
    def structured(self) -> bool:
        return is_structured(self.granularity)

    def check_ranking(self, ranking: str) -> None:
        if self.structured and ranking not in STRUCTURED_RANKINGS:
            raise ValueError(f"granularity={self.granularity} ranks whole groups {STRUCTURED_RANKINGS}; "
                             f"ranking={ranking!r} is for unstructured (weight) masks")

    def selects(self, name: str) -> bool:
        """Whether a candidate target tensor is masked at this granularity."""
        return not self.structured or group_kind(name) in kinds_of(self.granularity)

    def sets(self, shapes: Mapping[str, Sequence[int]]) -> List[GroupSet]:
        return group_sets(shapes, self.granularity, self.num_heads)

    def magnitude(self, weights: Mapping[str, torch.Tensor], sparsity: float, ranking: str,
                  keep: Optional[Mapping[str, torch.Tensor]] = None) -> Masks:
        from .magnitude import magnitude_masks

        if not self.structured:
            return magnitude_masks(weights, sparsity, ranking, keep=keep)
        self.check_ranking(ranking)
        return structured_masks(weights, sparsity, self.granularity, self.num_heads, ranking, self.norm,
                                keep, self.remove_whole_layers)

    def random(self, shapes: Mapping[str, Sequence[int]], sparsity: float, ranking: str, seed: int) -> Masks:
        from .magnitude import random_masks

        if not self.structured:
            return random_masks(shapes, sparsity, ranking, seed=seed)
        self.check_ranking(ranking)
        return structured_random_masks(shapes, sparsity, self.granularity, self.num_heads, ranking, seed,
                                       self.remove_whole_layers)

    def check_masks(self, masks: Mapping[str, torch.Tensor]) -> None:
        """ValueError unless every group of ``masks`` is fully kept or fully removed."""
        if self.structured:
            collapse(masks, self.sets({n: list(m.shape) for n, m in masks.items()}))

    def record(self) -> dict:
        """What a mask file / checkpoint stores about the cut."""
        return {"granularity": self.granularity, "num_heads": self.num_heads, "group_norm": self.norm,
                "remove_whole_layers": self.remove_whole_layers}

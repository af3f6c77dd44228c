"""Masks from weights: magnitude and random pruning as pure functions on tensors.

A *mask* here is a ``torch.bool`` tensor of the weight's shape, ``True`` = kept.
``sparsity`` is always the fraction REMOVED, in ``[0, 1)``.

Exact counts: every function removes exactly ``round(sparsity * n)`` entries of each ranking
group (``n`` = number of entries in the group), the same rounding as
``torch.nn.utils.prune``. Ties at the threshold are broken by position (earlier entries are
removed first), so results are deterministic on every rank of a distributed job.

Semi-structured ``N:M`` ranking (``"2:4"``): every run of ``M`` consecutive weights along the
input dimension (the last one, as sparse tensor cores read them) keeps its ``N`` largest, so the
sparsity is exactly ``1 - N/M`` in every row of every tensor and the pruned model can run with
``torch.sparse.to_sparse_semi_structured`` on GPUs that support it.
"""

from __future__ import annotations

import math
import re
from collections import OrderedDict
from typing import Dict, Iterable, List, Mapping, Optional

import torch

Masks = Dict[str, torch.Tensor]

RANKINGS = ("global", "layer", "tensor", "2:4")
_LAYER_RE = re.compile(r"layers\.(\d+)\.")
_NM_RE = re.compile(r"^(\d+):(\d+)$")


def parse_nm(ranking: str):
    """``"2:4" -> (2, 4)`` (keep N of every M); None for the unstructured rankings."""
    m = _NM_RE.match(str(ranking))
    if not m:
        return None
    n, m_ = int(m.group(1)), int(m.group(2))
    if not 0 < n < m_:
        raise ValueError(f"N:M ranking {ranking!r} must keep 0 < N < M weights of every M")
    return n, m_


def check_nm_sparsity(sparsity: float, ranking: str) -> None:
    """An ``N:M`` ranking fixes the sparsity at ``1 - N/M``; anything else is a config mistake."""
    nm = parse_nm(ranking)
    if nm is not None and abs(float(sparsity) - (1 - nm[0] / nm[1])) > 1e-9:
        raise ValueError(f"ranking {ranking} keeps {nm[0]} of every {nm[1]} weights, so sparsity must be "
                         f"{1 - nm[0] / nm[1]:g}; got sparsity={sparsity}")


def nm_masks(scores: Mapping[str, torch.Tensor], n: int, m: int,
             keep: Optional[Mapping[str, torch.Tensor]] = None, absolute: bool = False) -> Masks:
    """Keep the ``n`` highest scores of every ``m`` consecutive entries along the last dimension.

    Args:
        scores: name -> ``(out_features, in_features)``-like tensor; ``in_features % m == 0``.
        keep: current masks (IMP): entries already removed rank lowest.
    Returns:
        name -> bool keep-mask, exactly ``n`` True in every group of ``m``.
    """
    out: Masks = {}
    for name, sc in scores.items():
        if sc.dim() < 2 or sc.shape[-1] % m:
            raise ValueError(f"{name}: shape {tuple(sc.shape)} cannot be pruned {n}:{m}; the last "
                             f"dimension must be a multiple of {m}")
        s = sc.detach().float().reshape(-1, m)
        if absolute:
            s = s.abs()
        if keep is not None:
            s = torch.where(keep[name].reshape(-1, m).to(s.device, torch.bool), s, torch.full_like(s, float("-inf")))
        idx = torch.topk(s, n, dim=1, sorted=False).indices
        mask = torch.zeros_like(s, dtype=torch.bool).scatter_(1, idx, True)
        out[name] = mask.view(sc.shape)
    return out


def check_sparsity(sparsity: float, name: str = "sparsity") -> float:
    """Validate a sparsity (fraction removed) and return it as float."""
    try:
        s = float(sparsity)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number in [0, 1), got {sparsity!r}") from None
    if not 0.0 <= s < 1.0:
        raise ValueError(
            f"{name}={s} is out of range: it is the fraction of weights REMOVED and must be in "
            f"[0, 1) (e.g. 0.5 keeps half of the weights)"
        )
    return s


def num_to_prune(sparsity: float, numel: int) -> int:
    """Entries removed from a group of ``numel`` at ``sparsity`` (``torch.nn.utils.prune`` rounding)."""
    return int(round(check_sparsity(sparsity) * numel))


def layer_of(name: str) -> str:
    """Ranking group of a parameter name for ``ranking="layer"``: ``"layers.3"`` or the name itself."""
    m = _LAYER_RE.search(name)
    return f"layers.{m.group(1)}" if m else name


def group_names(names: Iterable[str], ranking: str) -> "OrderedDict[str, List[str]]":
    """Partition parameter names into ranking groups (insertion order preserved)."""
    if ranking not in RANKINGS and parse_nm(ranking) is None:
        raise ValueError(f"ranking must be one of {RANKINGS} (or N:M), got {ranking!r}")
    if parse_nm(ranking) is not None:
        ranking = "tensor"
    groups: "OrderedDict[str, List[str]]" = OrderedDict()
    for n in names:
        key = "all" if ranking == "global" else layer_of(n) if ranking == "layer" else n
        groups.setdefault(key, []).append(n)
    return groups


def kth_smallest(flat: torch.Tensor, k: int, max_sample: int = 1 << 20) -> torch.Tensor:
    """The ``k``-th smallest value (1-based) of a 1-D tensor, exactly, without sorting it.

    The k-th value of a fixed-seed random sample brackets the answer (+-4 standard errors of the
    sample quantile); only the ~1% of entries inside the bracket go through ``kthvalue``. Falls
    back to a full ``kthvalue`` when the bracket misses (rare) or the tensor is small.
    """
    n = flat.numel()
    sample = min(max_sample, n // 8)
    if sample < 4096:
        return torch.kthvalue(flat, k).values
    q = k / n
    delta = max(0.002, 4.0 * math.sqrt(max(q * (1 - q), 1e-6) / sample))
    gen = torch.Generator(device="cpu").manual_seed(0)
    probe = flat[torch.randint(0, n, (sample,), generator=gen).to(flat.device)]
    lo = probe.kthvalue(max(1, int((q - delta) * sample))).values
    hi = probe.kthvalue(min(sample, int((q + delta) * sample) + 1)).values
    below = int(torch.count_nonzero(flat < lo))
    inside = flat[(flat >= lo) & (flat <= hi)]
    if below < k <= below + inside.numel():
        return torch.kthvalue(inside, k - below).values
    return torch.kthvalue(flat, k).values


def _smallest_k_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean keep-mask over a 1-D ``scores`` that removes exactly the ``k`` smallest.

    Uses a k-th value selection (no full sort); ties at the threshold are removed in index order.
    """
    n = scores.numel()
    if k <= 0:
        return torch.ones(n, dtype=torch.bool, device=scores.device)
    if k >= n:
        return torch.zeros(n, dtype=torch.bool, device=scores.device)
    thr = kth_smallest(scores, k)
    keep = scores > thr
    need = k - (n - int(torch.count_nonzero(keep)))  # entries equal to thr that must stay (negative: remove more)
    if need < 0:  # more ties at thr than removals left: keep the last -need of them
        tie_idx = torch.nonzero(scores == thr, as_tuple=False).flatten()
        keep[tie_idx[need:]] = True
    return keep


def kth_smallest_rows(x: torch.Tensor, k: int, sample: int = 1 << 14) -> torch.Tensor:
    """``torch.kthvalue(x, k, dim=1).values`` of a ``(rows, n)`` tensor, exactly, without a
    per-row selection over all ``n`` entries (CUDA's kthvalue along a dim runs one block per row:
    13 ms for 48 x 590K on an H100).

    A fixed-seed sample of every row brackets the k-th value (+-4 standard errors); the entries
    inside the brackets (~2%) are gathered in one pass and sorted per row. Rows whose bracket
    misses (rare) fall back to ``kthvalue``.
    """
    rows, n = x.shape
    if n <= 4 * sample:
        return torch.kthvalue(x, k, dim=1).values
    gen = torch.Generator(device="cpu").manual_seed(0)
    idx = torch.randint(0, n, (sample,), generator=gen).to(x.device)
    probe = x[:, idx].sort(dim=1).values
    q = k / n
    delta = max(0.002, 4.0 * math.sqrt(max(q * (1 - q), 1e-6) / sample))
    lo = probe[:, max(0, int((q - delta) * sample) - 1)].unsqueeze(1)
    hi = probe[:, min(sample - 1, int((q + delta) * sample) + 1)].unsqueeze(1)
    below = (x < lo).sum(1)
    inside = (x >= lo) & (x <= hi)
    count = inside.sum(1)
    vals = x[inside]  # row-major: grouped by row
    row = torch.repeat_interleave(torch.arange(rows, device=x.device), count)
    order = torch.sort(vals, stable=True).indices
    order = order[torch.sort(row[order], stable=True).indices]  # by row, then by value
    ok = (below < k) & (k <= below + count)
    pos = (torch.cumsum(count, 0) - count + (k - 1 - below)).clamp(0, max(vals.numel() - 1, 0))
    out = vals[order][pos] if vals.numel() else torch.empty(rows, dtype=x.dtype, device=x.device)
    for i in torch.nonzero(~ok).flatten().tolist():
        out[i] = torch.kthvalue(x[i], k).values
    return out


def _tensorwise_masks_batched(scores: Mapping[str, torch.Tensor], sparsity: float, absolute: bool) -> Masks:
    """Per-tensor ranking with one batched ``kthvalue`` per distinct shape (GPU: a handful of
    kernels and one host sync per shape instead of several per tensor). Same masks as the
    per-tensor path, ties included."""
    by_shape: "OrderedDict[tuple, List[str]]" = OrderedDict()
    for n, t in scores.items():
        by_shape.setdefault((tuple(t.shape), t.device), []).append(n)
    out: Masks = {}
    for (shape, _), names in by_shape.items():
        x = torch.stack([scores[n].detach().reshape(-1).float() for n in names])
        if absolute:
            x.abs_()
        numel = x.shape[1]
        k = num_to_prune(sparsity, numel)
        if k <= 0 or k >= numel:
            keep = torch.full_like(x, k <= 0, dtype=torch.bool)
        else:
            thr = kth_smallest_rows(x, k).unsqueeze(1)
            keep = x > thr
            removed = numel - keep.sum(1)
            bad = torch.nonzero(removed != k).flatten().tolist()  # ties at the threshold: exact path
            for i in bad:
                keep[i] = _smallest_k_mask(x[i], k)
        for i, n in enumerate(names):
            out[n] = keep[i].view(shape).clone()
    return out


def masks_from_scores(
    scores: Mapping[str, torch.Tensor],
    sparsity: float,
    ranking: str = "global",
    keep: Optional[Mapping[str, torch.Tensor]] = None,
    absolute: bool = False,
) -> Masks:
    """Keep-masks that remove the lowest-scoring ``sparsity`` fraction of each ranking group.

    Args:
        scores: name -> importance tensor (any shape; e.g. ``|w|``).
        sparsity: fraction of entries removed in each group, in ``[0, 1)``.
        ranking: ``"global"`` (all tensors ranked together, as
            ``prune.global_unstructured``), ``"layer"`` (per transformer layer), ``"tensor"``,
            or ``"N:M"`` semi-structured (``"2:4"``; ``sparsity`` must be ``1 - N/M``).
        keep: optional current masks; entries already removed stay removed (IMP). ``sparsity``
            still counts over ALL entries, so it must be at least the current sparsity.
        absolute: rank ``|score|`` instead of ``score`` (no extra copy of the tensors).

    Returns:
        name -> ``torch.bool`` keep-mask of the same shape as its score tensor.
    """
    check_sparsity(sparsity)
    if not scores:
        raise ValueError("no tensors to prune: the target pattern matched no parameter")
    nm = parse_nm(ranking)
    if nm is not None:
        check_nm_sparsity(sparsity, ranking)
        return nm_masks(scores, nm[0], nm[1], keep=keep, absolute=absolute)
    if ranking == "tensor" and keep is None and all(t.is_cuda for t in scores.values()):
        return _tensorwise_masks_batched(scores, sparsity, absolute)
    out: Masks = {}
    for gname, names in group_names(scores.keys(), ranking).items():
        flat = torch.cat([scores[n].detach().reshape(-1).float() for n in names])
        if absolute:
            flat.abs_()
        if keep is not None:
            kflat = torch.cat([keep[n].reshape(-1).to(flat.device, torch.bool) for n in names])
            already = kflat.numel() - int(torch.count_nonzero(kflat))
            k = num_to_prune(sparsity, flat.numel())
            if k < already:
                raise ValueError(
                    f"group {gname!r}: target sparsity {sparsity} removes {k} entries but the "
                    f"current mask already removes {already}; masks can only grow sparser here"
                )
            # removed entries rank below everything else
            flat = torch.where(kflat, flat, torch.full_like(flat, float("-inf")))
        gmask = _smallest_k_mask(flat, num_to_prune(sparsity, flat.numel()))
        offset = 0
        for n in names:
            numel = scores[n].numel()
            out[n] = gmask[offset: offset + numel].view(scores[n].shape).clone()
            offset += numel
    return out


def magnitude_masks(
    weights: Mapping[str, torch.Tensor],
    sparsity: float,
    ranking: str = "global",
    keep: Optional[Mapping[str, torch.Tensor]] = None,
) -> Masks:
    """Magnitude pruning (OMP / MPI / IMP / PARP re-prune): remove the smallest ``|w|``."""
    return masks_from_scores(weights, sparsity, ranking, keep, absolute=True)


def random_masks(
    shapes: Mapping[str, torch.Size],
    sparsity: float,
    ranking: str = "global",
    seed: int = 0,
) -> Masks:
    """Uniformly random masks with exact sparsity per ranking group, reproducible from ``seed``."""
    gen = torch.Generator().manual_seed(int(seed))
    scores = {n: torch.rand(tuple(s), generator=gen) for n, s in shapes.items()}
    return masks_from_scores(scores, sparsity, ranking)


"""Mask analysis as pure functions: similarity of pruning masks across languages / methods.

Masks are ``{name: bool tensor}`` (``True`` = kept), as in mask files. Definitions (PARP paper, §5):

* ``iou(a, b)``     = |kept_a ∩ kept_b| / |kept_a ∪ kept_b|
* ``overlap(a, b)`` = |kept_a ∩ kept_b| / total parameters
* per-layer cosine similarity of the masks as 0/1 vectors
* random baseline: two independent uniformly random masks that keep fractions ``k_a`` and ``k_b``
  have E[IoU] = k_a k_b / (k_a + k_b - k_a k_b) and E[overlap] = k_a k_b.
"""

import math
from collections import OrderedDict
from typing import Dict, List, Mapping, Sequence, Tuple

import torch

from .magnitude import layer_of

Masks = Mapping[str, torch.Tensor]


def _check_same(a: Masks, b: Masks) -> None:
    if set(a) != set(b):
        diff = sorted(set(a) ^ set(b))[:5]
        raise ValueError(f"masks cover different parameters (e.g. {diff}); compare masks of one architecture")
    for n in a:
        if a[n].shape != b[n].shape:
            raise ValueError(f"{n}: mask shapes differ {tuple(a[n].shape)} vs {tuple(b[n].shape)}")


def _counts(a: Masks, b: Masks, names: Sequence[str]) -> Tuple[int, int, int, int, int]:
    inter = union = ka = kb = total = 0
    for n in names:
        x, y = a[n].bool(), b[n].bool()
        inter += int(torch.count_nonzero(x & y))
        union += int(torch.count_nonzero(x | y))
        ka += int(torch.count_nonzero(x))
        kb += int(torch.count_nonzero(y))
        total += x.numel()
    return inter, union, ka, kb, total


def iou(a: Masks, b: Masks) -> float:
    """Intersection over union of the KEPT weights of two masks (1.0 = identical)."""
    _check_same(a, b)
    inter, union, *_ = _counts(a, b, list(a))
    return inter / union if union else 1.0


def overlap(a: Masks, b: Masks) -> float:
    """Weights kept by both masks, as a fraction of all masked parameters."""
    _check_same(a, b)
    inter, _, _, _, total = _counts(a, b, list(a))
    return inter / total


def flip_fraction(a: Masks, b: Masks) -> float:
    """Fraction of all masked entries whose state differs between two masks (kept in one, removed
    in the other): what a PARP re-prune changed, or an S3-Router mask since its init."""
    _check_same(a, b)
    inter, union, _, _, total = _counts(a, b, list(a))
    return (union - inter) / total if total else 0.0


def random_iou(keep_a: float, keep_b: float) -> float:
    """Expected IoU of two independent random masks keeping fractions ``keep_a`` / ``keep_b``."""
    denom = keep_a + keep_b - keep_a * keep_b
    return keep_a * keep_b / denom if denom else 1.0


def keep_fraction(m: Masks) -> float:
    kept = sum(int(torch.count_nonzero(t)) for t in m.values())
    return kept / sum(t.numel() for t in m.values())


def pairwise(masks: Mapping[str, Masks], fn) -> List[List[float]]:
    """``fn`` over every pair of ``masks`` (a symmetric matrix, in the mapping's order)."""
    names = list(masks)
    out = [[0.0] * len(names) for _ in names]
    for i, a in enumerate(names):
        for j, b in enumerate(names):
            if j < i:
                out[i][j] = out[j][i]
            else:
                out[i][j] = fn(masks[a], masks[b])
    return out


def layer_sparsity(m: Masks) -> "OrderedDict[str, float]":
    """Sparsity (fraction removed) per transformer layer (``layers.N``) and overall."""
    removed: "OrderedDict[str, List[int]]" = OrderedDict()
    for n, t in m.items():
        r = removed.setdefault(layer_of(n), [0, 0])
        r[0] += t.numel() - int(torch.count_nonzero(t))
        r[1] += t.numel()
    out = OrderedDict((k, v[0] / v[1]) for k, v in removed.items())
    out["all"] = sum(v[0] for v in removed.values()) / sum(v[1] for v in removed.values())
    return out


def _by_layer(a: Masks, b: Masks, fn) -> "OrderedDict[str, float]":
    """``fn(intersection, union, kept_a, kept_b)`` of two masks, per transformer layer."""
    _check_same(a, b)
    groups: "OrderedDict[str, List[str]]" = OrderedDict()
    for n in a:
        groups.setdefault(layer_of(n), []).append(n)
    out = OrderedDict()
    for g, names in groups.items():
        inter, union, ka, kb, _ = _counts(a, b, names)
        out[g] = fn(inter, union, ka, kb)
    return out


def cosine(a: Masks, b: Masks) -> float:
    """Cosine similarity of two masks as 0/1 vectors over all their entries."""
    _check_same(a, b)
    inter, _, ka, kb, _ = _counts(a, b, list(a))
    return inter / math.sqrt(ka * kb) if ka and kb else 0.0


def layer_cosine(a: Masks, b: Masks) -> "OrderedDict[str, float]":
    """Cosine similarity of two masks as 0/1 vectors, per transformer layer."""
    return _by_layer(a, b, lambda i, u, ka, kb: i / math.sqrt(ka * kb) if ka and kb else 0.0)


def layer_iou(a: Masks, b: Masks) -> "OrderedDict[str, float]":
    """IoU of the kept weights of two masks, per transformer layer."""
    return _by_layer(a, b, lambda i, u, ka, kb: i / u if u else 1.0)


def random_like(m: Masks, seed: int) -> Dict[str, torch.Tensor]:
    """A random mask with the same number of kept weights per tensor as ``m`` (a baseline)."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for n, t in m.items():
        k = int(torch.count_nonzero(t))
        perm = torch.randperm(t.numel(), generator=gen)
        flat = torch.zeros(t.numel(), dtype=torch.bool)
        flat[perm[:k]] = True
        out[n] = flat.view(t.shape)
    return out


def jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a | b else 1.0


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    """Pearson correlation coefficient (nan when either side is constant)."""
    if len(x) != len(y) or len(x) < 2:
        raise ValueError(f"pearson needs two equal-length sequences of >= 2 values, got {len(x)} and {len(y)}")
    mx, my = sum(x) / len(x), sum(y) / len(y)
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y))
    sx = math.sqrt(sum((a - mx) ** 2 for a in x))
    sy = math.sqrt(sum((b - my) ** 2 for b in y))
    return sxy / (sx * sy) if sx and sy else float("nan")


def upper_pairs(matrix: List[List[float]]) -> List[float]:
    """The values above the diagonal (each unordered pair once)."""
    return [matrix[i][j] for i in range(len(matrix)) for j in range(i + 1, len(matrix))]


def mantel_p(x: List[List[float]], ys: Sequence[List[List[float]]], max_perms: int = 5040, seed: int = 0) -> float:
    """One-sided Mantel test of a similarity matrix ``x`` against one or more matrices ``ys`` over the
    same items (e.g. phone similarity vs the mask IoU of each seed): the statistic is the mean over ``ys``
    of the Pearson r of their upper triangles; the items of ``x`` are permuted (rows and columns together,
    as pairs are not independent) - every permutation when there are at most ``max_perms``, else
    ``max_perms`` random ones - and p = the fraction of permutations whose statistic is >= the observed
    one (the identity included, so p >= 1 / permutations)."""
    import itertools
    import random

    n = len(x)
    if n < 3:
        raise ValueError(f"a Mantel test needs >= 3 items, got {n}")
    for y in ys:
        if len(y) != n:
            raise ValueError(f"matrices over different items: {n} vs {len(y)}")
    flat = [upper_pairs(y) for y in ys]

    def stat(perm) -> float:
        xp = upper_pairs([[x[perm[i]][perm[j]] for j in range(n)] for i in range(n)])
        return sum(pearson(xp, f) for f in flat) / len(flat)

    observed = stat(list(range(n)))
    if math.factorial(n) <= max_perms:
        perms = list(itertools.permutations(range(n)))
    else:
        rng = random.Random(seed)
        perms = [tuple(range(n))] + [tuple(rng.sample(range(n), n)) for _ in range(max_perms - 1)]
    hits = sum(1 for pm in perms if stat(pm) >= observed - 1e-12)
    return hits / len(perms)


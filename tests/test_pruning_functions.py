"""The pruning algorithms as pure functions (no fairseq model involved)."""

import pytest
import torch
from torch import nn
from torch.nn.utils import prune

from parp_fairseq.pruning import (
    imp_schedule, is_reprune_update, magnitude_masks, num_to_prune, ramp_sparsity, random_masks,
    sparsity_report,
)


def _tensors(seed=0):
    g = torch.Generator().manual_seed(seed)
    shapes = {"encoder.layers.0.self_attn.q_proj.weight": (16, 16),
              "encoder.layers.0.fc1.weight": (32, 16),
              "encoder.layers.1.self_attn.q_proj.weight": (16, 16),
              "encoder.layers.1.fc2.weight": (16, 32)}
    # different scales per tensor so that global and per-tensor ranking differ
    return {n: torch.randn(s, generator=g) * (i + 1) for i, (n, s) in enumerate(shapes.items())}


@pytest.mark.parametrize("sparsity", [0.0, 0.1, 0.37, 0.5, 0.9, 0.99])
def test_global_mask_equals_torch_global_unstructured(sparsity):
    w = _tensors()
    mods = {n: nn.Linear(t.shape[1], t.shape[0], bias=False) for n, t in w.items()}
    for n, m in mods.items():
        m.weight.data.copy_(w[n])
    prune.global_unstructured([(m, "weight") for m in mods.values()],
                              pruning_method=prune.L1Unstructured, amount=sparsity)
    ours = magnitude_masks(w, sparsity, "global")
    for n, m in mods.items():
        assert torch.equal(ours[n], m.weight_mask.bool()), n  # continuous weights: no ties
    total = sum(t.numel() for t in w.values())
    assert sum(int((~m).sum()) for m in ours.values()) == round(sparsity * total)


def test_global_ranking_prunes_small_scale_tensors_most():
    w = _tensors()
    rep = sparsity_report(magnitude_masks(w, 0.5, "global"))
    # tensor i has scale i+1, so layer 0 (scales 1, 2) loses more than layer 1 (3, 4)
    assert rep["layers.0"] > 0.5 > rep["layers.1"]
    assert rep["global"] == pytest.approx(0.5)


@pytest.mark.parametrize("ranking", ["layer", "tensor"])
def test_layer_and_tensor_ranking_exact_per_group(ranking):
    w = _tensors()
    masks = magnitude_masks(w, 0.3, ranking)
    if ranking == "tensor":
        for n, m in masks.items():
            assert int((~m).sum()) == num_to_prune(0.3, m.numel()), n
            # the kept entries are the largest of their tensor
            assert w[n].abs()[m].min() >= w[n].abs()[~m].max()
    else:
        rep = sparsity_report(masks)
        for layer in ("layers.0", "layers.1"):
            names = [n for n in w if f"{layer}." in n]
            removed = sum(int((~masks[n]).sum()) for n in names)
            assert removed == num_to_prune(0.3, sum(w[n].numel() for n in names))
            assert rep[layer] == pytest.approx(0.3, abs=1e-3)


def test_ties_broken_exactly():
    w = {"a.weight": torch.zeros(10, 10), "b.weight": torch.ones(10, 10)}
    m = magnitude_masks(w, 0.25, "global")
    assert int((~m["a.weight"]).sum()) == 50 and bool(m["b.weight"].all())
    assert sum(int((~x).sum()) for x in m.values()) == 50


def test_keep_mask_nests_for_imp():
    w = _tensors()
    m1 = magnitude_masks(w, 0.2, "global")
    # perturb the weights (as finetuning would), then prune further with keep=m1
    w2 = {n: t + 0.5 * torch.randn_like(t) for n, t in w.items()}
    m2 = magnitude_masks(w2, 0.36, "global", keep=m1)
    for n in w:
        assert not bool((m2[n] & ~m1[n]).any()), "a removed weight came back"
    total = sum(t.numel() for t in w.values())
    assert sum(int((~m).sum()) for m in m2.values()) == round(0.36 * total)
    with pytest.raises(ValueError, match="only grow sparser"):
        magnitude_masks(w2, 0.1, "global", keep=m1)


def test_random_masks_reproducible_and_exact():
    shapes = {n: t.shape for n, t in _tensors().items()}
    a = random_masks(shapes, 0.6, "tensor", seed=3)
    b = random_masks(shapes, 0.6, "tensor", seed=3)
    c = random_masks(shapes, 0.6, "tensor", seed=4)
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert any(not torch.equal(a[n], c[n]) for n in a)
    for n, m in a.items():
        assert int((~m).sum()) == num_to_prune(0.6, m.numel())


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5, float("nan"), "x"])
def test_sparsity_out_of_range_is_one_clear_error(bad):
    with pytest.raises(ValueError, match=r"fraction of weights REMOVED|must be a number"):
        magnitude_masks(_tensors(), bad)


def test_empty_target_set_error():
    with pytest.raises(ValueError, match="matched no parameter"):
        magnitude_masks({}, 0.5)


def test_ramp_and_reprune_schedule():
    assert ramp_sparsity(0, 0.8) == 0.8  # no ramp
    assert ramp_sparsity(0, 0.8, 0.0, 100) == 0.0
    assert ramp_sparsity(100, 0.8, 0.0, 100) == pytest.approx(0.8)
    assert ramp_sparsity(500, 0.8, 0.0, 100) == pytest.approx(0.8)
    mid = [ramp_sparsity(u, 0.8, 0.0, 100) for u in range(0, 101, 10)]
    assert mid == sorted(mid)  # monotone
    assert [u for u in range(1, 21) if is_reprune_update(u, 5)] == [5, 10, 15, 20]
    with pytest.raises(ValueError, match="positive"):
        is_reprune_update(3, 0)


def test_imp_schedule_official_counts_points_of_the_original():
    assert imp_schedule(0.5, 0.1, "original") == [0.1, 0.2, 0.3, 0.4, 0.5]
    assert imp_schedule(0.45, 0.1, "original") == [0.1, 0.2, 0.3, 0.4, 0.45]
    assert len(imp_schedule(0.9, 0.1, "original")) == 9
    # the official code's per-round fraction of what remains: 1 / (10 - (r - 1))
    s = [0.0] + imp_schedule(0.9, 0.1, "original")
    for r in range(1, 10):
        assert (s[r] - s[r - 1]) / (1 - s[r - 1]) == pytest.approx(1 / (10 - (r - 1)))
    with pytest.raises(ValueError, match="unknown"):
        imp_schedule(0.5, 0.1, "nope")


def test_imp_schedule():
    s = imp_schedule(0.5, 0.2)
    assert s == pytest.approx([0.2, 0.36, 0.488, 0.5])
    assert imp_schedule(0.0, 0.1) == []
    assert len(imp_schedule(0.9, 0.1)) == 22
    with pytest.raises(ValueError, match="rate"):
        imp_schedule(0.5, 0.0)

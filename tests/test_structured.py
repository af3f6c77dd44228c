"""Structured (neuron / head) pruning: pure group functions, every method at that granularity,
through fairseq's MHA, training steps, and state round trips."""

import pytest
import torch

from helpers import build_parp, build_stock, logits, train_step
from parp_fairseq.pruning.structured import (Granularity, collapse, group_magnitudes, group_sets,
                                             structured_masks, structured_random_masks)

D, F, H, L = 16, 24, 4, 3


def _weights(seed=0, biases=True):
    g = torch.Generator().manual_seed(seed)
    w = {}
    for i in range(L):
        p = f"encoder.layers.{i}."
        for x in "qkv":
            w[p + f"self_attn.{x}_proj.weight"] = torch.randn(D, D, generator=g)
            if biases:
                w[p + f"self_attn.{x}_proj.bias"] = torch.randn(D, generator=g)
        w[p + "self_attn.out_proj.weight"] = torch.randn(D, D, generator=g)
        w[p + "fc1.weight"] = torch.randn(F, D, generator=g)
        if biases:
            w[p + "fc1.bias"] = torch.randn(F, generator=g)
        w[p + "fc2.weight"] = torch.randn(D, F, generator=g)
    return w


def _only(w, kind):
    cut = Granularity(kind, H)
    return {n: t for n, t in w.items() if cut.selects(n)}


def _kept_groups(masks, granularity):
    sets = group_sets({n: m.shape for n, m in masks.items()}, granularity, H)
    return {k: int(v.sum()) for k, v in collapse(masks, sets).items()}


@pytest.mark.parametrize("granularity", ["neuron", "head", "neuron+head"])
@pytest.mark.parametrize("ranking", ["global", "layer", "tensor"])
def test_groups_fully_kept_or_removed_with_exact_counts(granularity, ranking):
    w = _only(_weights(), granularity)
    masks = structured_masks(w, 0.5, granularity, H, ranking)
    kept = _kept_groups(masks, granularity)  # raises if a group is cut through
    removed = sum(int((~m).sum()) for m in masks.values())
    total = sum(m.numel() for m in masks.values())
    if granularity != "neuron+head":  # one group size: exactly round(s * n) groups go
        n = F if granularity == "neuron" else H
        assert sum(kept.values()) == L * n - round(0.5 * L * n)
        assert removed / total == pytest.approx(0.5, abs=1e-9)
    else:  # neurons and heads of different sizes: as close as whole groups allow
        assert abs(removed - 0.5 * total) <= 4 * D * D // H / 2
    assert all(v >= 1 for v in kept.values())  # the floor


def test_magnitude_ranks_the_mean_of_the_group_weights():
    w = _only(_weights(), "neuron")
    w["encoder.layers.0.fc1.weight"][3] = 0.0  # neuron 3 of layer 0: tiny rows and columns
    w["encoder.layers.0.fc2.weight"][:, 3] = 1e-3
    w["encoder.layers.0.fc1.bias"][3] = 100.0  # biases are masked with the group but not ranked
    mags = group_magnitudes(w, group_sets({n: t.shape for n, t in w.items()}, "neuron", H), "l1")
    assert mags["encoder.layers.0/neuron"][3] == pytest.approx(1e-3 * D / (2 * D))
    m = structured_masks(w, 1 / (L * F), "neuron", H, "global")
    assert not bool(m["encoder.layers.0.fc1.weight"][3].any()) and not bool(m["encoder.layers.0.fc1.bias"][3])
    assert int((~m["encoder.layers.0.fc1.bias"]).sum()) == 1
    l2 = group_magnitudes(w, group_sets({n: t.shape for n, t in w.items()}, "neuron", H), "l2")
    assert l2["encoder.layers.0/neuron"][3] == pytest.approx((1e-6 * D / (2 * D)) ** 0.5)


def test_floor_keeps_one_group_per_layer_unless_whole_layers_may_go():
    w = _only(_weights(), "head")
    w["encoder.layers.1.self_attn.q_proj.weight"].mul_(1e-3)  # layer 1's heads rank lowest ...
    for x in "kv":
        w[f"encoder.layers.1.self_attn.{x}_proj.weight"].mul_(1e-3)
    w["encoder.layers.1.self_attn.out_proj.weight"].mul_(1e-3)
    m = structured_masks(w, 4 / 12, "head", H, "global")
    assert _kept_groups(m, "head")["encoder.layers.1/head"] == 1  # ... but one stays
    gone = structured_masks(w, 4 / 12, "head", H, "global", remove_whole_layers=True)
    assert _kept_groups(gone, "head")["encoder.layers.1/head"] == 0
    with pytest.raises(ValueError, match="remove_whole_layers"):
        structured_masks(w, 0.99, "head", H, "layer")  # round(0.99 * 4) = 4 heads of every layer


def test_keep_masks_nest_like_imp_rounds():
    w = _only(_weights(), "neuron+head")
    m1 = structured_masks(w, 0.3, "neuron+head", H, "global")
    w2 = _only(_weights(seed=1), "neuron+head")  # other weights: a new ranking
    m2 = structured_masks(w2, 0.5, "neuron+head", H, "global", keep=m1)
    for n in m1:
        assert not bool((m2[n] & ~m1[n]).any()), f"{n}: a removed group came back"
    with pytest.raises(ValueError, match="sparser"):
        structured_masks(w2, 0.1, "neuron+head", H, "global", keep=m1)


def test_random_and_bad_structures():
    shapes = {n: t.shape for n, t in _only(_weights(), "neuron").items()}
    a = structured_random_masks(shapes, 0.5, "neuron", H, "layer", seed=3)
    assert all(v == F // 2 for v in _kept_groups(a, "neuron").values())
    assert all(torch.equal(a[n], structured_random_masks(shapes, 0.5, "neuron", H, "layer", seed=3)[n]) for n in a)
    unstructured = {n: torch.rand(s) > 0.5 for n, s in shapes.items()}
    with pytest.raises(ValueError, match="partly kept"):
        collapse(unstructured, group_sets(shapes, "neuron", H))
    with pytest.raises(ValueError, match="belong to no such group"):
        group_sets({n: t.shape for n, t in _weights().items()}, "neuron", H)
    no_fc2 = {n: s for n, s in shapes.items() if "fc2" not in n}
    with pytest.raises(ValueError, match="missing"):
        group_sets(no_fc2, "neuron", H)
    with pytest.raises(ValueError, match="ranks whole groups"):
        Granularity("head", H).magnitude(_only(_weights(), "head"), 0.5, "2:4")


# -- the model ---------------------------------------------------------------------------------
def _zeroed_stock(task, pretrained, m):
    """A stock model holding the masked model's weights with every mask applied by hand."""
    stock = build_stock(task, pretrained)
    sd = {k: v for k, v in m.state_dict().items() if not k.endswith(("_mask", "_scores"))}
    for n, msk in m.masker.masks().items():
        key = "w2v_encoder.w2v_model." + n
        sd[key] = m.masker.params()[n].detach() * msk
    stock.load_state_dict(sd)
    return stock


def _check_structured(m):
    m.cut.check_masks(m.masker.masks())
    if m.masker.mode == "score":  # S3-Router: frozen weights, gated at each group's output
        return
    for n, p in m.masker.params().items():
        assert bool((p.detach()[~m.masker.masks()[n]] == 0).all()), n


@pytest.mark.parametrize("method", ["mpi", "random", "parp", "s3router"])
@pytest.mark.parametrize("granularity", ["neuron", "head", "neuron+head"])
def test_every_method_prunes_whole_groups_through_training(task, pretrained, sample, method, granularity):
    kw = dict(method=method, sparsity=0.5, granularity=granularity, ranking="layer")
    if method == "parp":
        kw["reprune_interval"] = 2
    m = build_parp(task, pretrained, **kw)
    assert all(m.cut.selects(n) for n in m.masker.names())
    assert any(n.endswith(".bias") for n in m.masker.names())  # groups take their biases along
    _check_structured(m)
    # one group size per ranking: exact; neurons (129 entries) and heads (4,144) ranked together per
    # layer: within half a head of the layer's 33,088 entries
    assert m.sparsity_stats()["global"] == pytest.approx(0.5, abs=0.063 if granularity == "neuron+head" else 1e-9)
    # the masks act on the forward pass, fairseq's MHA included
    assert torch.equal(logits(m, sample), logits(_zeroed_stock(task, pretrained, m), sample))
    masks0 = {n: x.clone() for n, x in m.masker.masks().items()}
    opt = torch.optim.Adam([p for p in m.parameters() if p.requires_grad], lr=5e-2)
    for u in range(4):
        train_step(m, task, sample, opt, u)
        if method != "parp" or (u + 1) % 2 == 0:
            _check_structured(m)
    m.prepare_for_evaluation()
    _check_structured(m)
    if method in ("mpi", "random"):
        assert all(torch.equal(masks0[n], x) for n, x in m.masker.masks().items())
    assert torch.equal(logits(m, sample), logits(_zeroed_stock(task, pretrained, m), sample))


def test_structured_state_roundtrip_and_mismatch(task, pretrained, sample, tmp_path):
    for method in ("parp", "s3router"):
        m = build_parp(task, pretrained, method=method, sparsity=0.4, granularity="neuron+head")
        opt = torch.optim.Adam([p for p in m.parameters() if p.requires_grad], lr=1e-2)
        train_step(m, task, sample, opt, 0)
        sd = m.state_dict()
        torch.save(sd, tmp_path / "s.pt")
        m.prepare_for_evaluation()
        ref = logits(m, sample)
        m2 = build_parp(task, pretrained, from_checkpoint=True, method=method, sparsity=0.4,
                        granularity="neuron+head")
        m2.load_state_dict(torch.load(tmp_path / "s.pt", weights_only=True))
        assert torch.equal(logits(m2, sample), ref), method
        if method == "s3router":  # one score per group, stored on the group's first weight
            scores = {k: v.shape for k, v in sd.items() if k.endswith("_scores")}
            assert scores == {f"w2v_encoder.w2v_model.encoder.layers.{i}.{n}.weight_scores": torch.Size([s])
                              for i in range(2) for n, s in (("fc1", 128), ("self_attn.q_proj", 4))}
    with pytest.raises(Exception, match="do not match"):
        build_parp(task, pretrained, from_checkpoint=True, method="parp", sparsity=0.4,
                   granularity="neuron").load_state_dict(torch.load(tmp_path / "s.pt", weights_only=True))


def test_s3router_group_scores_get_straight_through_gradients(task, pretrained, sample):
    m = build_parp(task, pretrained, method="s3router", sparsity=0.5, granularity="neuron+head",
                   ranking="tensor", score_init="ori")
    from fairseq.criterions.ctc import CtcCriterion, CtcCriterionConfig
    m.train()
    loss, _, _ = CtcCriterion(CtcCriterionConfig(zero_infinity=True, sentence_avg=True), task)(m, sample)
    loss.backward()
    for n, s in m.masker.scores().items():  # removed neurons / heads too: they can come back
        assert s.grad is not None and s.grad.shape == s.shape and bool((s.grad != 0).all()), n
    # ori: the first mask is the per-set magnitude ranking of the groups
    expected = Granularity("neuron+head", 4).magnitude(m.masker.params(), 0.5, "tensor")
    assert all(torch.equal(expected[n], x) for n, x in m.masker.masks().items())


def test_structured_config_errors(task, pretrained):
    from parp_fairseq.errors import InputError

    with pytest.raises(InputError, match="ranks whole groups"):
        build_parp(task, pretrained, method="mpi", sparsity=0.5, granularity="neuron", ranking="2:4")
    with pytest.raises(InputError, match="matches no tensor of a head group"):
        build_parp(task, pretrained, method="s3router", sparsity=0.5, granularity="head",
                   pattern=r"encoder\.layers\.\d+\.fc[12]")
    with pytest.raises(InputError, match="missing"):  # a pattern that splits the groups
        build_parp(task, pretrained, method="mpi", sparsity=0.5, granularity="neuron",
                   pattern=r"encoder\.layers\.\d+\.fc1")
    with pytest.raises(InputError, match="remove_whole_layers"):
        build_parp(task, pretrained, method="mpi", sparsity=0.9, granularity="head", ranking="layer")

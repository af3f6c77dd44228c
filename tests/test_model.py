"""parp_wav2vec_ctc in-process: stock equivalence, masks through MHA, PARP, state round trips."""

import pytest
import torch
from torch.nn.utils import prune

from helpers import build_parp, build_stock, logits, train_step
from parp_fairseq.pruning import magnitude_masks, sparsity_report
from parp_fairseq.safe_load import torch_load


def _stock_copy(task, pretrained, parp):
    stock = build_stock(task, pretrained)
    sd = {k: v for k, v in parp.state_dict().items() if not k.endswith("_mask")}
    stock.load_state_dict(sd, strict=True)
    return stock


def test_method_none_is_the_stock_model(task, pretrained, sample):
    ours = build_parp(task, pretrained)
    assert ours.masker is None
    stock = build_stock(task, pretrained)
    assert set(ours.state_dict()) == set(stock.state_dict())
    stock.load_state_dict(ours.state_dict())
    assert torch.equal(logits(ours, sample), logits(stock, sample))


def test_targets_are_attention_and_ffn_only(task, pretrained):
    m = build_parp(task, pretrained, method="mpi", sparsity=0.5)
    names = m.masker.names()
    assert len(names) == 2 * 6  # 2 layers x q,k,v,out,fc1,fc2
    assert all(n.startswith("encoder.layers.") and n.endswith(".weight") for n in names)
    mb = build_parp(task, pretrained, method="mpi", sparsity=0.5, prune_bias=True)
    assert len(mb.masker.names()) == 2 * 12
    custom = build_parp(task, pretrained, method="mpi", sparsity=0.5, pattern=r"encoder\.layers\.\d+\.fc[12]")
    assert len(custom.masker.names()) == 4


def test_mpi_mask_is_global_magnitude_of_pretrained_and_exact(task, pretrained):
    m = build_parp(task, pretrained, method="mpi", sparsity=0.6)
    pre = torch_load(pretrained)["model"]
    expected = magnitude_masks({n: pre[n] for n in m.masker.names()}, 0.6, "global")
    for n, mask in m.masker.masks().items():
        assert torch.equal(mask, expected[n]), n
    removed = sum(int((~x).sum()) for x in m.masker.masks().values())
    total = sum(x.numel() for x in m.masker.masks().values())
    assert removed == round(0.6 * total)
    for n, p in m.masker.params().items():  # and the weights are zero there
        assert bool((p[~m.masker.masks()[n]] == 0).all())


def test_masks_take_effect_through_mha_fast_path(task, pretrained, sample):
    """The logits of the masked model equal a stock model whose weights were zeroed by hand, and
    the zeroed attention connections carry no signal: they do matter in the dense model."""
    m = build_parp(task, pretrained, method="mpi", sparsity=0.5)
    stock = build_stock(task, pretrained)
    stock.load_state_dict({k: v for k, v in m.state_dict().items() if not k.endswith("_mask")})
    ref = stock.w2v_encoder.w2v_model.encoder.layers[0].self_attn.q_proj.weight
    mask = m.w2v_encoder.w2v_model.encoder.layers[0].self_attn.q_proj.weight_mask
    # weights zeroed by hand from the pretrained values
    pre = torch_load(pretrained)["model"]
    with torch.no_grad():
        for n, msk in m.masker.masks().items():
            key = "w2v_encoder.w2v_model." + n
            dict(stock.named_parameters())[key].copy_(pre[n] * msk)
    assert torch.equal(logits(m, sample), logits(stock, sample))
    # the removed q_proj entries matter when non-zero ...
    with torch.no_grad():
        ref[~mask] = 1.0
    assert not torch.allclose(logits(m, sample), logits(stock, sample))


def test_torch_prune_hooks_do_not_reach_mha_fast_path(task, pretrained, sample):
    """Why the masks live in the weights: torch.nn.utils.prune's forward pre-hook never runs for
    fairseq MHA's q/k/v/out projections, so updates of weight_orig are ignored."""
    m = build_parp(task, pretrained)
    q = m.w2v_encoder.w2v_model.encoder.layers[0].self_attn.q_proj
    prune.l1_unstructured(q, "weight", amount=0.5)
    before = logits(m, sample)
    with torch.no_grad():
        q.weight_orig.mul_(3.0)  # an "update" of the surviving weights
    assert torch.equal(before, logits(m, sample))  # ... that the model never sees


@pytest.mark.parametrize("method", ["mpi", "random"])
def test_fixed_masks_survive_adam_with_weight_decay(task, pretrained, sample, method):
    m = build_parp(task, pretrained, method=method, sparsity=0.7)
    masks = {n: x.clone() for n, x in m.masker.masks().items()}
    before = {n: p.detach().clone() for n, p in m.masker.params().items()}
    opt = torch.optim.Adam(m.parameters(), lr=1e-2, weight_decay=0.1)
    for u in range(3):
        train_step(m, task, sample, opt, u)
    for n, p in m.masker.params().items():
        assert torch.equal(m.masker.masks()[n], masks[n])
        assert bool((p[~masks[n]] == 0).all()), f"{n}: pruned weight revived"
        assert not torch.equal(p[masks[n]], before[n][masks[n]]), f"{n}: kept weights did not train"
        # the gradient hook keeps Adam's moments of removed entries at zero
        assert bool((opt.state[p]["exp_avg"][~masks[n]] == 0).all())
    rep = m.sparsity_stats()
    assert rep["global"] == pytest.approx(0.7, abs=1e-4)
    stock = _stock_copy(task, pretrained, m)
    assert torch.equal(logits(m, sample), logits(stock, sample))


def test_parp_regrows_between_reprunes_and_reprunes_exactly(task, pretrained, sample):
    m = build_parp(task, pretrained, method="parp", sparsity=0.5, reprune_interval=3)
    init = {n: x.clone() for n, x in m.masker.masks().items()}
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    train_step(m, task, sample, opt, 0)  # update 1: pruned weights are trainable -> regrow
    zeros = sum(int((p == 0).sum()) for p in m.masker.params().values())
    total = sum(p.numel() for p in m.masker.params().values())
    assert zeros < 0.5 * total * 0.5, "PARP must leave pruned weights trainable"
    # state_dict of an off-target PARP model is at the target, the live model is untouched
    live = {n: p.detach().clone() for n, p in m.masker.params().items()}
    sd = m.state_dict()
    for t in m.masker.targets:
        assert int((~sd[t.mask_key]).sum()) + int(sd[t.mask_key].sum()) == sd[t.key].numel()
        assert bool((sd[t.key][~sd[t.mask_key]] == 0).all())
    assert sparsity_report({t.name: sd[t.mask_key] for t in m.masker.targets})["global"] == 0.5
    assert all(torch.equal(live[n], p) for n, p in m.masker.params().items())
    train_step(m, task, sample, opt, 1)
    train_step(m, task, sample, opt, 2)  # update 3: re-prune
    zeros = sum(int((p == 0).sum()) for p in m.masker.params().values())
    assert zeros == round(0.5 * total)
    assert m.sparsity_stats()["global"] == 0.5
    assert any(not torch.equal(init[n], x) for n, x in m.masker.masks().items()), "mask never adjusted"
    # evaluation hook re-prunes an off-target model
    train_step(m, task, sample, opt, 3)
    task.begin_valid_epoch(1, m)
    assert sum(int((p == 0).sum()) for p in m.masker.params().values()) == round(0.5 * total)


def test_parp_progressive_ramp(task, pretrained, sample):
    m = build_parp(task, pretrained, method="parp", sparsity=0.8, reprune_interval=1,
                   ramp_updates=4, ramp_start_sparsity=0.2)
    assert m.sparsity_stats()["global"] == pytest.approx(0.2, abs=1e-4)
    opt = torch.optim.SGD(m.parameters(), lr=1e-3)
    seen = []
    for u in range(5):
        train_step(m, task, sample, opt, u)
        seen.append(m.sparsity_stats()["global"])
    assert seen == sorted(seen) and seen[-1] == pytest.approx(0.8, abs=1e-4)


def test_roundtrip_train_save_reload_same_logits(task, pretrained, sample, tmp_path):
    """s3prl-style: forward -> backward -> step -> save -> reload -> identical outputs."""
    m = build_parp(task, pretrained, method="parp", sparsity=0.4, reprune_interval=2)
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    for u in range(3):  # ends off-target (update 3)
        train_step(m, task, sample, opt, u)
    torch.save(m.state_dict(), tmp_path / "m.pt")
    m.prepare_for_evaluation()
    ref = logits(m, sample)
    m2 = build_parp(task, pretrained, from_checkpoint=True, method="parp", sparsity=0.4)
    m2.load_state_dict(torch.load(tmp_path / "m.pt"))
    assert torch.equal(logits(m2, sample), ref)
    assert all(torch.equal(a, b) for a, b in zip(m.masker.masks().values(), m2.masker.masks().values()))


def test_dense_checkpoint_into_masked_model_keeps_masks(task, pretrained, sample):
    m = build_parp(task, pretrained, method="mpi", sparsity=0.5)
    masks = {n: x.clone() for n, x in m.masker.masks().items()}
    dense = build_parp(task, pretrained)  # method none: a dense finetuned-style state dict
    with torch.no_grad():
        for p in dense.parameters():
            p.add_(0.01)
    m.load_state_dict(dense.state_dict())
    for n, p in m.masker.params().items():
        assert torch.equal(m.masker.masks()[n], masks[n])
        assert bool((p[~masks[n]] == 0).all())


def test_checkpoint_mixups_are_clear_errors(task, pretrained):
    pruned = build_parp(task, pretrained, method="mpi", sparsity=0.5)
    dense = build_parp(task, pretrained)
    with pytest.raises(ValueError, match="PRUNED.*pruning.method=none"):
        dense.load_state_dict(pruned.state_dict())
    ffn_only = build_parp(task, pretrained, method="mpi", sparsity=0.5, pattern=r"encoder\.layers\.\d+\.fc[12]")
    with pytest.raises(ValueError, match="another pruning.pattern"):
        ffn_only.load_state_dict(pruned.state_dict())


@pytest.mark.parametrize("kw,msg", [
    (dict(method="mpi", sparsity=1.0), "fraction of weights REMOVED"),
    (dict(method="mpi", sparsity=-0.2), "fraction of weights REMOVED"),
    (dict(method="mpi"), "needs pruning.sparsity"),
    (dict(method="parp", sparsity=0.5, reprune_interval=0), "N >= 1"),
    (dict(method="omp"), "needs pruning.mask_path"),
    (dict(method="omp", mask_path="/nonexistent/mask.pt"), "does not exist"),
    (dict(method="mpi", sparsity=0.5, pattern="nothing_matches"), "matched no parameter"),
])
def test_bad_pruning_config(task, pretrained, kw, msg):
    with pytest.raises((ValueError, FileNotFoundError), match=msg):
        build_parp(task, pretrained, **kw)


def test_parp_reprune_reaches_fp32_master_weights(task, pretrained, sample):
    """--fp16/--bf16: fairseq's FP16Optimizer copies fp32 master weights back into the model after
    every step; a re-prune must zero the masters too or the pruned weights come back."""
    from fairseq.criterions.ctc import CtcCriterion, CtcCriterionConfig
    from fairseq.optim.adam import FairseqAdamConfig
    from fairseq.optim.fp16_optimizer import FP16Optimizer
    from omegaconf import OmegaConf, open_dict

    m = build_parp(task, pretrained, method="parp", sparsity=0.5, reprune_interval=2).to(torch.bfloat16)
    cfg = OmegaConf.create({"common": {"bf16": True, "fp16_no_flatten_grads": True, "fp16_scale_window": None,
                                       "model_parallel_size": 1},
                            "optimization": {"update_freq": [1]},
                            "distributed_training": {"distributed_world_size": 1},
                            "optimizer": OmegaConf.structured(FairseqAdamConfig(lr=[1e-2], tpu=False))})
    with open_dict(cfg):
        cfg.optimizer._name = "adam"
    params = [p for p in m.parameters() if p.requires_grad]
    opt = FP16Optimizer.build_optimizer(cfg, params)
    crit = CtcCriterion(CtcCriterionConfig(zero_infinity=True, sentence_avg=True), task)
    s = {**sample, "net_input": {**sample["net_input"], "source": sample["net_input"]["source"].to(torch.bfloat16)}}
    for u in range(2):  # update 2 re-prunes
        m.train()
        opt.zero_grad()
        loss, _, _ = crit(m, s)
        opt.backward(loss)
        task.optimizer_step(opt, m, u)
    master = {id(p): p32 for p, p32 in zip(opt.fp16_params, opt.fp32_params)}
    for n, p in m.masker.params().items():
        removed = ~m.masker.masks()[n]
        assert bool((p[removed] == 0).all())
        assert bool((master[id(p)][removed] == 0).all()), f"{n}: fp32 master keeps pruned values"

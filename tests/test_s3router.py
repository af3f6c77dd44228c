"""S3-Router: learned masks over frozen weights (scores, STE, inits), and S3-Router-P."""

import pytest
import torch

from helpers import build_parp, build_stock, logits, train_step
from parp_fairseq.pruning import magnitude_masks, num_to_prune
from parp_fairseq.pruning.scores import init_scores
from parp_fairseq.safe_load import torch_load


def _exact_per_tensor(model, sparsity):
    for n, m in model.masker.masks().items():
        assert int((~m).sum()) == num_to_prune(sparsity, m.numel()), n


def test_ori_init_ranks_like_weights_pure():
    g = torch.Generator().manual_seed(0)
    w = {"a": torch.randn(32, 16, generator=g), "b": torch.randn(8, 64, generator=g)}
    s = init_scores(w, "ori", 0.3, seed=1)
    for n in w:
        assert torch.equal(torch.argsort(s[n].abs().flatten(), stable=True),
                           torch.argsort(w[n].abs().flatten(), stable=True))
        assert s[n].abs().max() <= 1 / w[n].shape[1] ** 0.5 + 1e-6  # kaiming-uniform scale
        assert (s[n] < 0).any() and (s[n] > 0).any()
    mag = init_scores(w, "magnitude", 0.3)
    assert set(torch.unique(mag["a"]).tolist()) == {0.0, 1.0}
    assert torch.allclose(init_scores(w, "magnitude_scale", 0.3, scale=2.0)["a"], w["a"] / 2)
    with pytest.raises(ValueError, match="score init"):
        init_scores(w, "bogus", 0.3)


def test_s3router_first_mask_is_per_tensor_magnitude_and_weights_frozen(task, pretrained):
    m = build_parp(task, pretrained, method="s3router", sparsity=0.3, ranking="tensor")
    pre = torch_load(pretrained)["model"]
    expected = magnitude_masks({n: pre[n] for n in m.masker.names()}, 0.3, "tensor")
    for n, mask in m.masker.masks().items():
        assert torch.equal(mask, expected[n]), n
    _exact_per_tensor(m, 0.3)
    trainable = {n for n, p in m.named_parameters() if p.requires_grad}
    assert all(n.endswith(".scores") or n.startswith("w2v_encoder.proj.") for n in trainable), trainable
    assert sum(n.endswith(".scores") for n in trainable) == 12
    m2 = build_parp(task, pretrained, method="s3router", sparsity=0.3, train_biases=True, train_layer_norms=True)
    t2 = {n for n, p in m2.named_parameters() if p.requires_grad}
    assert any(n.endswith("fc1.bias") for n in t2) and any("final_layer_norm" in n for n in t2)
    m3 = build_parp(task, pretrained, method="s3router", sparsity=0.3, train_weights=True)
    assert all(p.requires_grad for p in m3.masker.params().values())  # co-training weights and scores


def test_s3router_masks_effective_through_mha(task, pretrained, sample):
    m = build_parp(task, pretrained, method="s3router", sparsity=0.4, score_init="kaiming")
    stock = build_stock(task, pretrained)
    sd = {k: v for k, v in m.state_dict().items() if not k.endswith(("_mask", "_scores"))}
    masks = m.masker.masks()
    for n, msk in masks.items():  # weights zeroed by hand
        sd["w2v_encoder.w2v_model." + n] = sd["w2v_encoder.w2v_model." + n] * msk
    stock.load_state_dict(sd)
    assert torch.equal(logits(m, sample), logits(stock, sample))


def test_s3router_training_step_semantics(task, pretrained, sample):
    m = build_parp(task, pretrained, method="s3router", sparsity=0.5, score_init="ori", ranking="tensor")
    frozen = {n: p.detach().clone() for n, p in m.masker.params().items()}
    scores0 = {n: s.detach().clone() for n, s in m.masker.scores().items()}
    masks0 = {n: x.clone() for n, x in m.masker.masks().items()}
    head0 = m.w2v_encoder.proj.weight.detach().clone()
    # fairseq's own Adam: it writes p.data, which bumps no version counter (masks must still follow)
    from fairseq.optim.adam import Adam as FairseqAdamImpl
    opt = FairseqAdamImpl([p for p in m.parameters() if p.requires_grad], lr=5e-3)
    # update 0: straight-through gradients reach every score, also of removed entries
    m.train()
    from fairseq.criterions.ctc import CtcCriterion, CtcCriterionConfig
    loss, _, _ = CtcCriterion(CtcCriterionConfig(zero_infinity=True, sentence_avg=True), task)(m, sample)
    loss.backward()
    for n, s in m.masker.scores().items():
        assert s.grad is not None and bool((s.grad != 0).any()), n
        assert bool((s.grad[~masks0[n]] != 0).any()), f"{n}: no STE gradient to removed entries"
    for _ in range(12):
        train_step(m, task, sample, opt, m.num_updates)
        _exact_per_tensor(m, 0.5)
    for n, p in m.masker.params().items():
        assert torch.equal(p, frozen[n]), f"{n}: frozen weight changed"
    assert not torch.equal(m.w2v_encoder.proj.weight, head0), "CTC head did not train"
    assert any(not torch.equal(s, scores0[n]) for n, s in m.masker.scores().items())
    changed = sum(int((m.masker.masks()[n] != masks0[n]).sum()) for n in masks0)
    assert changed > 0, "learned masks never changed"
    assert m.sparsity_stats()["global"] == pytest.approx(0.5, abs=1e-4)


def test_s3router_state_dict_roundtrip_and_names(task, pretrained, sample, tmp_path):
    m = build_parp(task, pretrained, method="s3router", sparsity=0.2, score_init="kaiming")
    opt = torch.optim.Adam([p for p in m.parameters() if p.requires_grad], lr=1e-2)
    for u in range(3):
        train_step(m, task, sample, opt, u)
    sd = m.state_dict()
    stock_keys = set(build_stock(task, pretrained).state_dict())
    assert not any("parametrizations" in k for k in sd)
    extra = set(sd) - stock_keys
    assert len(extra) == 24 and all(k.endswith(("_mask", "_scores")) for k in extra)
    torch.save(sd, tmp_path / "s3.pt")
    ref = logits(m, sample)
    m2 = build_parp(task, pretrained, from_checkpoint=True, method="s3router", sparsity=0.2)
    m2.load_state_dict(torch.load(tmp_path / "s3.pt"))
    assert torch.equal(logits(m2, sample), ref)
    for n in m.masker.names():
        assert torch.equal(m.masker.scores()[n], m2.masker.scores()[n])
        assert torch.equal(m.masker.masks()[n], m2.masker.masks()[n])


def test_s3router_p_starts_from_finetuned_magnitudes(task, pretrained, finetuned):
    m = build_parp(task, pretrained, method="s3router_p", sparsity=0.6, score_init="magnitude_scale",
                   score_scale=0.5, init_from=str(finetuned), ranking="tensor")
    ft = torch_load(finetuned)["model"]
    for n, w in m.masker.params().items():
        assert torch.equal(w, ft["w2v_encoder.w2v_model." + n])
        assert torch.allclose(m.masker.scores()[n], w / 0.5)
    expected = magnitude_masks({n: ft["w2v_encoder.w2v_model." + n] for n in m.masker.names()}, 0.6, "tensor")
    assert all(torch.equal(m.masker.masks()[n], expected[n]) for n in expected)
    assert torch.equal(m.w2v_encoder.proj.weight, ft["w2v_encoder.proj.weight"])


@pytest.mark.parametrize("kw,msg", [
    (dict(method="s3router"), "needs pruning.sparsity"),
    (dict(method="s3router_p", sparsity=0.5), "init_from=FINETUNED"),
    (dict(method="s3router", sparsity=0.5, mask_path="x.pt"), "mask_path is not used"),
])
def test_s3router_bad_config(task, pretrained, kw, msg):
    with pytest.raises(ValueError, match=msg):
        build_parp(task, pretrained, **kw)


def test_s3router_needs_gradients_from_update_0(task, pretrained):
    from omegaconf import OmegaConf, open_dict

    from parp_fairseq.models.parp_wav2vec2 import ParpWav2Vec2CtcConfig, PruningConfig

    cfg = OmegaConf.structured(ParpWav2Vec2CtcConfig(
        w2v_path=str(pretrained), data=str(task.cfg.data), normalize=False, freeze_finetune_updates=100,
        ddp_backend="legacy_ddp", pruning=PruningConfig(method="s3router", sparsity=0.1, seed=1)))
    with open_dict(cfg):
        cfg._name = "parp_wav2vec_ctc"
    with pytest.raises(ValueError, match="freeze_finetune_updates=0"):
        task.build_model(cfg)


def test_pruning_needs_our_task(corpus, pretrained):
    from fairseq import tasks
    from omegaconf import OmegaConf, open_dict
    from fairseq.tasks.audio_finetuning import AudioFinetuningConfig

    cfg = OmegaConf.structured(AudioFinetuningConfig(data=str(corpus), labels="ltr", seed=1, tpu=False))
    with open_dict(cfg):
        cfg._name = "audio_finetuning"
    stock_task = tasks.setup_task(cfg)
    with pytest.raises(ValueError, match="task._name=parp_audio_finetuning"):
        build_parp(stock_task, pretrained, method="s3router", sparsity=0.1)

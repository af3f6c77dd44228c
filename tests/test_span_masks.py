"""wav2vec 2.0's span masks (``model.apply_mask``) drawn from the torch RNG fairseq seeds each update.

Stock ve-fairseq draws them from OS entropy (``compute_mask_indices`` without seed/epoch/indices), so
two runs of one ``common.seed`` differ; the plugin's ``seeded_span_masks`` makes them repeatable. The
end-to-end proof is ``test_train_e2e.test_resume_is_exact`` (span masks on: a killed and resumed run
equals the straight one to the last bit); HuBERT and data2vec are checked in their own test files.
"""

import pytest
import torch
from fairseq.data import data_utils

from helpers import assert_span_masks_seeded, build_parp, logits, span_mask_logits
from parp_fairseq.models.span_masks import seeded_span_masks

SPAN = dict(apply_mask=True, mask_prob=0.5, mask_length=2, mask_channel_prob=0.3, mask_channel_length=4)


@pytest.mark.parametrize("method", ["none", "parp"])
def test_span_masks_repeat_under_one_torch_seed(task, pretrained, sample, method):
    model = build_parp(task, pretrained, method=method, sparsity=0.5, model=SPAN)
    assert_span_masks_seeded(model, sample)


def test_stock_span_masks_are_not_repeatable(task, pretrained, sample):
    """The fault the plugin fixes (and what makes the tests above able to fail): seeded_span_masks=false."""
    model = build_parp(task, pretrained, model={**SPAN, "seeded_span_masks": False})
    assert not torch.equal(span_mask_logits(model, sample, 5), span_mask_logits(model, sample, 5))


def test_eval_forward_draws_nothing_and_patch_is_undone_on_error(task, pretrained, sample):
    model = build_parp(task, pretrained, model=SPAN)
    torch.manual_seed(0)
    before = torch.get_rng_state()
    logits(model, sample)  # eval: no masks, the torch RNG stream untouched
    assert torch.equal(before, torch.get_rng_state())
    w2v = model.w2v_encoder.w2v_model.train()
    scope = type(w2v).apply_mask.__globals__
    with pytest.raises(RuntimeError, match="boom"):
        with seeded_span_masks(w2v):
            assert scope["compute_mask_indices"] is not data_utils.compute_mask_indices
            raise RuntimeError("boom")
    assert scope["compute_mask_indices"] is data_utils.compute_mask_indices


def _masks_of_two_forwards(w2v, torch_seed=11):
    """The time masks (B, T) of two training forwards of one batch, each after torch.manual_seed."""
    got = []
    orig = w2v.apply_mask

    def spy(x, padding_mask, *a, **kw):
        out, idx = orig(x, padding_mask, *a, **kw)
        got.append(idx.clone())
        return out, idx

    w2v.apply_mask = spy  # instance attribute: the class method (and its module globals) stay in use
    x = torch.randn(3, 8000, generator=torch.Generator().manual_seed(0))
    for _ in range(2):
        torch.manual_seed(torch_seed)
        with seeded_span_masks(w2v), torch.no_grad():
            w2v.extract_features(x, None, mask=True)
    del w2v.apply_mask
    return got


def test_masks_are_per_utterance_and_follow_the_config(task, pretrained):
    """Utterance i of a batch gets the mask of (seed, call, i): the masked fraction is what the config asks."""
    model = build_parp(task, pretrained, model=dict(apply_mask=True, mask_prob=0.5, mask_length=2))
    got = _masks_of_two_forwards(model.w2v_encoder.w2v_model.train())
    assert torch.equal(got[0], got[1])
    assert not torch.equal(got[0][0], got[0][1]), "utterances of one batch share a mask"
    frac = got[0].float().mean().item()
    assert 0.3 < frac < 0.9, frac  # mask_prob 0.5 x length 2 with overlaps


def test_data_parallel_ranks_mask_independently(task, pretrained, monkeypatch):
    """fairseq seeds torch identically on every rank: the rank offsets the utterance indices, so replicas
    do not give their i-th utterances one mask."""
    from parp_fairseq.models import span_masks

    model = build_parp(task, pretrained, model=dict(apply_mask=True, mask_prob=0.5, mask_length=2))
    w2v = model.w2v_encoder.w2v_model.train()
    rank0 = _masks_of_two_forwards(w2v)
    monkeypatch.setattr(span_masks, "_rank", lambda: 1)
    rank1 = _masks_of_two_forwards(w2v)
    assert torch.equal(rank1[0], rank1[1])  # each rank still repeatable
    assert not torch.equal(rank0[0], rank1[0])


def test_no_span_masks_no_draw_dropout_as_stock(task, pretrained, sample):
    """With span masks off (model.apply_mask=false) the plugin draws nothing from the torch RNG: the
    training forward (dropout on) is the stock one under the same seed."""
    model = build_parp(task, pretrained, model=dict(apply_mask=False, dropout=0.1, mask_prob=0.5))
    ours = span_mask_logits(model, sample, 5)
    model.seeded_span_masks = False  # the stock forward
    assert torch.equal(ours, span_mask_logits(model, sample, 5))
    assert not torch.equal(ours, span_mask_logits(model, sample, 6))  # dropout is on: the check can fail

"""In-process construction of tiny models (no subprocess) for fast model-level tests."""

from __future__ import annotations

from typing import Tuple

import torch
from fairseq import tasks
from fairseq.models.wav2vec.wav2vec2_asr import Wav2Vec2CtcConfig, Wav2VecCtc
from omegaconf import OmegaConf, open_dict

from parp_fairseq.models.parp_wav2vec2 import ParpWav2VecCtc, PruningConfig
from parp_fairseq.tasks.parp_audio_finetuning import ParpAudioFinetuningConfig

_COMMON = dict(normalize=False, apply_mask=False, mask_channel_prob=0.0, layerdrop=0.0,
               feature_grad_mult=0.0, freeze_finetune_updates=0, ddp_backend="legacy_ddp")


def make_task(data, labels: str = "ltr"):
    cfg = OmegaConf.structured(ParpAudioFinetuningConfig(data=str(data), labels=labels, seed=1, tpu=False))
    with open_dict(cfg):
        cfg._name = "parp_audio_finetuning"
    return tasks.setup_task(cfg)


def build_parp(task, w2v_path, from_checkpoint=False, name="parp_wav2vec_ctc", model=None,
               **pruning) -> ParpWav2VecCtc:
    """A plugin CTC model (``name``: parp_wav2vec_ctc / parp_hubert_ctc) over ``w2v_path``; ``model``:
    overrides of the model config (e.g. ``apply_mask=True``), ``pruning``: of its ``pruning`` config."""
    from fairseq.models import MODEL_DATACLASS_REGISTRY

    pc = PruningConfig(seed=1, **pruning)
    cfg = OmegaConf.structured(MODEL_DATACLASS_REGISTRY[name](
        w2v_path=str(w2v_path), data=str(task.cfg.data), pruning=pc, **{**_COMMON, **(model or {})}))
    with open_dict(cfg):
        cfg._name = name
    return task.build_model(cfg, from_checkpoint=from_checkpoint)


def span_mask_logits(model, sample, torch_seed: int) -> torch.Tensor:
    """Training-mode logits (span masks and dropout on) after seeding torch as fairseq's trainer does."""
    from fairseq import utils

    model.train()
    utils.set_torch_seed(torch_seed)
    with torch.no_grad():
        return model.get_logits(model(**sample["net_input"])).detach().clone()


def assert_span_masks_seeded(model, sample) -> None:
    """Span masks on: one torch seed -> identical training forwards, another seed -> different ones;
    the masks take effect (unlike eval mode), and the fairseq module is left as it was."""
    w2v = model.w2v_encoder.w2v_model
    scope = type(w2v).apply_mask.__globals__
    stock = scope["compute_mask_indices"]
    a, b, c = (span_mask_logits(model, sample, s) for s in (5, 5, 6))
    assert torch.equal(a, b), "one torch seed, different span masks"
    assert not torch.equal(a, c), "another torch seed, the same span masks"
    assert not torch.equal(a, logits(model, sample)), "span masks had no effect"
    assert scope["compute_mask_indices"] is stock, "the fairseq module was left patched"


def build_stock(task, w2v_path) -> Wav2VecCtc:
    cfg = OmegaConf.structured(Wav2Vec2CtcConfig(w2v_path=str(w2v_path), data=str(task.cfg.data), **_COMMON))
    return Wav2VecCtc.build_model(cfg, task)


def batch(task, split="valid", n=4) -> dict:
    if split not in task.datasets:
        task.load_dataset(split)
    ds = task.datasets[split]
    return ds.collater([ds[i] for i in range(n)])


def logits(model, sample) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        out = model(**sample["net_input"])
        return model.get_logits(out).detach().clone()


def masked_tensors(model) -> Tuple[dict, dict]:
    return dict(model.masker.params()), dict(model.masker.masks())


def train_step(model, task, sample, opt, update_num) -> None:
    """One real training step: fairseq CTC criterion forward/backward, then the task's
    ``optimizer_step`` hook (where masks are kept exact / PARP re-prunes / scores refresh)."""
    from fairseq.criterions.ctc import CtcCriterion, CtcCriterionConfig

    crit = CtcCriterion(CtcCriterionConfig(zero_infinity=True, sentence_avg=True), task)
    model.train()
    opt.zero_grad()
    loss, _, _ = crit(model, sample)
    loss.backward()
    task.optimizer_step(opt, model, update_num)


def to_args_layout(src, dst) -> None:
    """Rewrite a pretrained checkpoint in the layout of fairseq's older releases (wav2vec_small.pt,
    libri960_big.pt, xlsr_53_56k.pt): an argparse ``args`` Namespace holding every option flat, no
    ``cfg``; ``model``, ``optimizer_history``, ``extra_state``, ``last_optimizer_state``."""
    import argparse

    from omegaconf import OmegaConf

    from parp_fairseq.safe_load import torch_load

    st = torch_load(src)
    cfg = st["cfg"]

    def plain(x):
        return OmegaConf.to_container(x, resolve=True) if OmegaConf.is_config(x) else dict(x or {})

    ns = {}
    for group in ("common", "dataset", "optimization", "checkpoint", "distributed_training", "task", "model"):
        ns.update({k: v for k, v in plain(cfg.get(group)).items() if k != "_name"})
    ns.update(arch=plain(cfg["model"])["_name"], task=plain(cfg["task"])["_name"],
              criterion=plain(cfg.get("criterion")).get("_name", "wav2vec"), optimizer="adam",
              lr_scheduler="polynomial_decay")
    out = {"args": argparse.Namespace(**ns), "model": st["model"],
           "optimizer_history": st.get("optimizer_history", []), "extra_state": st.get("extra_state", {}),
           "last_optimizer_state": None}
    if st.get("task_state"):  # HuBERT: its label dictionaries (fairseq Dictionary objects)
        out["task_state"] = st["task_state"]
    torch.save(out, dst)

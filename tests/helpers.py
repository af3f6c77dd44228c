"""In-process construction of tiny models (no subprocess) for fast model-level tests."""

from __future__ import annotations

from typing import Tuple

import torch
from fairseq import tasks
from fairseq.models.wav2vec.wav2vec2_asr import Wav2Vec2CtcConfig, Wav2VecCtc
from omegaconf import OmegaConf, open_dict

from parp_fairseq.models.parp_wav2vec2 import ParpWav2Vec2CtcConfig, ParpWav2VecCtc, PruningConfig
from parp_fairseq.tasks.parp_audio_finetuning import ParpAudioFinetuningConfig

_COMMON = dict(normalize=False, apply_mask=False, mask_channel_prob=0.0, layerdrop=0.0,
               feature_grad_mult=0.0, freeze_finetune_updates=0, ddp_backend="legacy_ddp")


def make_task(data, labels: str = "ltr"):
    cfg = OmegaConf.structured(ParpAudioFinetuningConfig(data=str(data), labels=labels, seed=1, tpu=False))
    with open_dict(cfg):
        cfg._name = "parp_audio_finetuning"
    return tasks.setup_task(cfg)


def build_parp(task, w2v_path, from_checkpoint=False, **pruning) -> ParpWav2VecCtc:
    pc = PruningConfig(seed=1, **pruning)
    cfg = OmegaConf.structured(ParpWav2Vec2CtcConfig(
        w2v_path=str(w2v_path), data=str(task.cfg.data), pruning=pc, **_COMMON))
    with open_dict(cfg):
        cfg._name = "parp_wav2vec_ctc"
    return task.build_model(cfg, from_checkpoint=from_checkpoint)


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

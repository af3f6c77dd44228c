"""``parp_audio_finetuning``: stock ``audio_finetuning`` plus the pruning hooks.

Hooks only, no trainer fork: ``optimizer_step`` (fixed masks stay exact, PARP re-prunes),
``begin_valid_epoch`` (PARP models are validated at their target sparsity on every rank),
``build_model`` (masks of a loaded checkpoint come from its state_dict) and ``state_dict``
(the sparsity report is written into every checkpoint under ``extra_state.task_state``).
"""


import logging
import math
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch
from fairseq.dataclass import ChoiceEnum

from fairseq.tasks import register_task
from fairseq.tasks.audio_finetuning import AudioFinetuningConfig, AudioFinetuningTask

logger = logging.getLogger(__name__)


@dataclass
class ParpAudioFinetuningConfig(AudioFinetuningConfig):
    # CTC decoding for fairseq-generate (see parp-fairseq-decode for the full decode command)
    ctc_decoder: ChoiceEnum(["viterbi", "kenlm"]) = field(  # type: ignore[valid-type]
        default="viterbi", metadata={"help": "fairseq-generate: viterbi or kenlm (flashlight-text beam search)"}
    )
    ctc_kenlm_model: Optional[str] = field(default=None, metadata={"help": "KenLM ARPA/binary for ctc_decoder=kenlm"})
    ctc_lexicon: Optional[str] = field(default=None, metadata={"help": "lexicon; none = lexicon-free"})
    ctc_beam: int = field(default=50, metadata={"help": "beam size"})
    ctc_beam_threshold: float = field(default=25.0, metadata={"help": "beam threshold"})
    ctc_lm_weight: float = field(default=2.0, metadata={"help": "LM weight"})
    ctc_word_score: float = field(default=-1.0, metadata={"help": "word insertion score"})
    ctc_sil_weight: float = field(default=0.0, metadata={"help": "silence weight"})
    ctc_unk_weight: float = field(default=-math.inf, metadata={"help": "unknown word weight"})
    check_manifest: bool = field(
        default=True,
        metadata={"help": "when a split is loaded, check every audio file of its manifest (present, "
                  "readable, 16 kHz mono, non-empty, sample count as listed) and its label file (one "
                  "UTF-8 line per utterance, dictionary symbols only) and fail with the first bad line"},
    )
    allow_unknown_labels: bool = field(
        default=False,
        metadata={"help": "accept label symbols missing from the dictionary (fairseq maps them to <unk>, "
                  "scored as errors): for evaluating on recorded speech whose transcripts hold symbols "
                  "the training data never had. Training splits should never need it"},
    )


def unwrap(model):
    """The model inside fairseq's wrappers (ModuleProxyWrapper -> DistributedDataParallel -> ...)."""
    while hasattr(model, "module") and isinstance(getattr(model, "module"), torch.nn.Module):
        model = model.module
    return model


def _pruned(model):
    """The parp model inside (possibly wrapped) ``model``, or None for other models."""
    model = unwrap(model)
    return model if hasattr(model, "after_update") else None


def _adjusting(model):
    """The PARP model (masks re-pruned during training) inside ``model``, or None: the runs that log
    the ``*_before_reprune`` / ``*_after_reprune`` metrics."""
    m = _pruned(model)
    return m if m is not None and m.masker is not None and m.masker.mode == "adjust" else None


@torch.no_grad()
def zero_fp32_master_copies(optimizer, masker) -> None:
    """After a re-prune, zero the removed entries in fairseq's fp32 master weights too.

    ``FP16Optimizer`` (``--fp16`` / ``--bf16``, not the memory-efficient variants) keeps fp32
    copies of the parameters and copies them back into the model after every step: zeroing only
    the model's half-precision weights would let the next step restore the pruned values.
    """
    fp32, fp16_params = getattr(optimizer, "fp32_params", None), getattr(optimizer, "fp16_params", None)
    if fp32 is None or fp16_params is None:
        return
    masks = {id(getattr(t.module, t.param)): getattr(t.module, f"{t.param}_mask") for t in masker.targets}
    if isinstance(fp32, dict):  # flat buffers, one per device, params laid out in order
        by_device = {}
        for p in fp16_params:
            by_device.setdefault(p.device.index, []).append(p)
        for dev, params in by_device.items():
            flat, offset = fp32[dev].data, 0
            for p in params:
                n = p.numel()
                if id(p) in masks:
                    flat[offset: offset + n].view_as(p).mul_(masks[id(p)].to(flat.dtype))
                offset += n
    else:
        for p, p32 in zip(fp16_params, fp32):
            if id(p) in masks:
                p32.data.mul_(masks[id(p)].to(p32.dtype))


#: CtcCriterion's validation error counts (summed, then turned into uer / wer / raw_wer)
REPRUNE_COUNT_KEYS = ("c_errors", "c_total", "w_errors", "wv_errors", "w_total")
#: validation logging keys that PARP also records for the other side of a re-prune
REPRUNE_LOG_KEYS = ("loss", *REPRUNE_COUNT_KEYS)
#: the metrics ``parp_ctc`` derives from them (``<metric>_before_reprune`` / ``<metric>_after_reprune``)
REPRUNE_METRICS = ("loss", "uer", "wer", "raw_wer")


def _last_valid_reprune_metrics() -> dict:
    """``loss`` / ``uer`` / ``wer`` / ``raw_wer`` ``_before_reprune`` / ``_after_reprune`` of the last
    validation (fairseq saves a checkpoint right after validating), where they were logged."""
    from fairseq.logging import metrics

    try:
        vals = metrics.get_smoothed_values("valid")
    except KeyError:
        return {}
    keys = [f"{m}_{side}_reprune" for m in REPRUNE_METRICS for side in ("before", "after")]
    out = {k: float(vals[k]) for k in keys if vals.get(k) is not None}
    return {k: v for k, v in out.items() if not math.isnan(v)}  # not logged at this validation


def reprune_metric_problem(metric: Optional[str], model) -> Optional[str]:
    """Why ``checkpoint.best_checkpoint_metric=<metric>`` cannot work for ``model`` (None when it can,
    or when ``metric`` is not one of the ``*_before_reprune`` / ``*_after_reprune`` metrics).

    fairseq reads the metric from every validation's stats; a name that is not there is a bare
    ``KeyError`` after the first epoch's training. ``<m>_after_reprune`` is logged at every validation
    of a PARP run unless ``validate_before_reprune`` runs without ``log_reprune_loss``;
    ``<m>_before_reprune`` only at validations that come with a re-prune (never every validation)."""
    if not metric:
        return None
    for side in ("before", "after"):
        suffix = f"_{side}_reprune"
        if metric.endswith(suffix):
            break
    else:
        return None
    base = metric[: -len(suffix)]
    if base not in REPRUNE_METRICS:
        return (f"checkpoint.best_checkpoint_metric={metric} is not a metric PARP logs: the re-prune metrics are "
                f"{', '.join(m + suffix for m in REPRUNE_METRICS)}")
    if side == "before":
        return (f"checkpoint.best_checkpoint_metric={metric} is logged only at validations that come with a "
                f"re-prune, and it measures the regrown weights, which checkpoints do not keep: use {base}_after_reprune")
    m = _adjusting(model)
    if m is None:
        p = _pruned(model)
        what = (f"model.pruning.method={str(p.pruning_cfg.method)}" if p is not None
                else f"a model without pruning ({type(unwrap(model)).__name__})")
        return (f"checkpoint.best_checkpoint_metric={metric} is logged by PARP runs only (model.pruning.method=parp), "
                f"not by {what}: use its plain counterpart, best_checkpoint_metric={base}")
    pc = m.pruning_cfg
    if pc.validate_before_reprune and not pc.log_reprune_loss:
        return (f"checkpoint.best_checkpoint_metric={metric} needs the re-pruned side validated: with "
                f"model.pruning.validate_before_reprune=true set model.pruning.log_reprune_loss=true")
    return None


@register_task("parp_audio_finetuning", dataclass=ParpAudioFinetuningConfig)
class ParpAudioFinetuningTask(AudioFinetuningTask):
    cfg: ParpAudioFinetuningConfig

    def __init__(self, cfg: ParpAudioFinetuningConfig):
        super().__init__(cfg)
        self.building_from_checkpoint = False
        self._model_ref = None
        self.allow_unknown_labels = False  # parp-fairseq-decode sets it for recorded-speech test sets
        self._warned_multiple = False

    def load_dataset(self, split: str, task_cfg=None, **kwargs):
        cfg = task_cfg or self.cfg
        tsv = Path(cfg.data) / f"{split}.tsv"
        if getattr(cfg, "check_manifest", True) and tsv.exists():
            from ..data.speech import check_label_file, check_manifest

            check_manifest(tsv)
            if cfg.labels:
                d = self.target_dictionary
                symbols = d.symbols[d.nspecial:] if d is not None else None
                allow = getattr(cfg, "allow_unknown_labels", False) or self.allow_unknown_labels
                unknown = check_label_file(tsv, tsv.with_suffix(f".{cfg.labels}"), symbols, allow_unknown=allow)
                if unknown:
                    logger.warning(f"{split}: {len(unknown)} label symbol(s) outside the dictionary "
                                   f"({unknown[:8]}) map to <unk> and count as errors")
        return super().load_dataset(split, task_cfg, **kwargs)

    def get_batch_iterator(self, dataset, *args, **kwargs):
        """fairseq's ``batch_by_size`` silently DROPS the last ``len % required_batch_size_multiple``
        utterances of a split (13 utterances, multiple 8: one batch of 8). Validation and
        ``fairseq-generate`` must see every utterance, so this task always batches with multiple 1."""
        mult = kwargs.get("required_batch_size_multiple", args[4] if len(args) > 4 else 1)
        if mult != 1:
            if not self._warned_multiple:
                logger.info(f"required_batch_size_multiple={mult} -> 1: fairseq's batch_by_size drops the "
                            f"last len % {mult} utterances of every split")
                self._warned_multiple = True
            if len(args) > 4:
                args = (*args[:4], 1, *args[5:])
            else:
                kwargs["required_batch_size_multiple"] = 1
        return super().get_batch_iterator(dataset, *args, **kwargs)

    def build_model(self, model_cfg, from_checkpoint=False):
        self.building_from_checkpoint = from_checkpoint
        try:
            model = super().build_model(model_cfg, from_checkpoint)
        finally:
            self.building_from_checkpoint = False
        if _pruned(model) is not None:
            self._model_ref = weakref.ref(model)
        return model

    def build_generator(self, models, args, seq_gen_cls=None, extra_gen_cls_kwargs=None,
                        prefix_allowed_tokens_fn=None):
        """CTC decoding for ``fairseq-generate`` (Viterbi, or KenLM beam search via flashlight-text)."""
        from ..decoding.decoders import FlashlightDecoder, ViterbiDecoder
        from ..decoding.generator import CtcGenerator

        c, d = self.cfg, self.target_dictionary
        if c.ctc_decoder == "kenlm":
            dec = FlashlightDecoder(d, c.ctc_kenlm_model, c.ctc_lexicon, beam=c.ctc_beam,
                                    beam_threshold=c.ctc_beam_threshold, lm_weight=c.ctc_lm_weight,
                                    word_score=c.ctc_word_score, unk_weight=c.ctc_unk_weight,
                                    sil_weight=c.ctc_sil_weight, nbest=max(1, getattr(args, "nbest", 1)))
        else:
            dec = ViterbiDecoder(d)
        return CtcGenerator(d, dec)

    def begin_epoch(self, epoch, model):
        super().begin_epoch(epoch, model)
        m = _pruned(model)
        if m is not None:
            m.begin_epoch(epoch)

    def train_step(self, sample, model, criterion, optimizer, update_num, ignore_grad=False):
        m = _pruned(model)
        if m is not None and m.before_train_step():  # an epoch-interval or validate-first re-prune
            zero_fp32_master_copies(optimizer, m.masker)
        return super().train_step(sample, model, criterion, optimizer, update_num, ignore_grad)

    def valid_step(self, sample, model, criterion):
        """Stock validation. PARP also logs ``<key>_after_reprune`` (the model at its target
        sparsity: what a checkpoint saved now holds) and, at a validation that comes with a re-prune
        (``log_reprune_loss``), ``<key>_before_reprune`` (the regrown weights), one of them computed
        beside the stock pass; ``parp_ctc`` turns them into ``loss`` / ``uer`` / ``wer`` metrics."""
        loss, sample_size, log = super().valid_step(sample, model, criterion)
        m = _adjusting(model)
        if m is None:
            return loss, sample_size, log
        keys = [k for k in REPRUNE_LOG_KEYS if k in log]
        if m.reprune_stash is not None:
            m.swap_stash()
            try:
                _, _, other = super().valid_step(sample, model, criterion)
            finally:
                m.swap_stash()
            side = m.stash_side
            live = "after" if side == "before" else "before"
            for k in keys:
                log[f"{k}_{side}_reprune"] = other[k]
                log[f"{k}_{live}_reprune"] = log[k]
        elif m.at_target:
            for k in keys:
                log[f"{k}_after_reprune"] = log[k]
        return loss, sample_size, log

    def optimizer_step(self, optimizer, model, update_num):
        super().optimizer_step(optimizer, model, update_num)
        m = _pruned(model)
        if m is not None and m.after_update(update_num + 1):
            zero_fp32_master_copies(optimizer, m.masker)

    def begin_valid_epoch(self, epoch, model):
        super().begin_valid_epoch(epoch, model)
        m = _pruned(model)
        if m is not None:
            from fairseq.logging import metrics

            # fairseq's "valid" aggregator spans every validation of the run (never reset): reset it so
            # that the re-prune metrics written into checkpoints are those of THIS validation
            metrics.reset_meters("valid")
            m.prepare_for_evaluation()

    def state_dict(self):
        sd = dict(super().state_dict())
        model = self._model_ref() if self._model_ref is not None else None
        if model is not None and model.masker is not None:
            sd["parp_pruning"] = {
                "method": str(model.pruning_cfg.method),
                "target_sparsity": model.target_sparsity,
                "num_updates": model.num_updates,
                "sparsity": model.saved_sparsity_stats(),
                "diagnostics": {**model.pruning_diagnostics(), **_last_valid_reprune_metrics()},
            }
        return sd

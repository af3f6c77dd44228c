"""``parp_ctc``: fairseq's CTC criterion that also logs the model's sparsity."""


import functools
import math
from dataclasses import dataclass

from fairseq import metrics
from fairseq.logging.meters import safe_round
from fairseq.criterions import register_criterion
from fairseq.criterions.ctc import CtcCriterion, CtcCriterionConfig

from ..tasks.parp_audio_finetuning import REPRUNE_COUNT_KEYS, unwrap


def _log_reprune_side(logging_outputs, suffix: str, sample_size: int) -> None:
    """``loss<suffix>`` (base 2, as fairseq's ``loss``) and ``uer`` / ``wer`` / ``raw_wer<suffix>``
    from the error counts, derived like :class:`CtcCriterion`'s."""
    if not any(f"loss{suffix}" in log for log in logging_outputs):
        return
    if sample_size:
        metrics.log_scalar(f"loss{suffix}", sum(log.get(f"loss{suffix}", 0) for log in logging_outputs)
                           / sample_size / math.log(2), sample_size, round=3)
    for k in REPRUNE_COUNT_KEYS:
        metrics.log_scalar(f"_{k}{suffix}", sum(log.get(f"{k}{suffix}", 0) for log in logging_outputs))
    for name, errors, total in (("uer", "c_errors", "c_total"), ("wer", "w_errors", "w_total"),
                                ("raw_wer", "wv_errors", "w_total")):
        if sum(log.get(f"{total}{suffix}", 0) for log in logging_outputs) > 0:
            metrics.log_derived(f"{name}{suffix}", functools.partial(_rate, f"_{errors}{suffix}", f"_{total}{suffix}"))


def _rate(errors: str, total: str, meters) -> float:
    return safe_round(meters[errors].sum * 100.0 / meters[total].sum, 3) if meters[total].sum > 0 else float("nan")


@dataclass
class ParpCtcCriterionConfig(CtcCriterionConfig):
    pass


@register_criterion("parp_ctc", dataclass=ParpCtcCriterionConfig)
class ParpCtcCriterion(CtcCriterion):
    """CTC loss; logging outputs carry ``sparsity`` (global) and ``sparsity_layers.N``.

    Logging outputs stay summable (fairseq's fast all-reduce path, which also works with gloo on
    CPU): each one carries ``nsparsity=1`` and the sums are divided by it in ``reduce_metrics``.
    """

    def forward(self, model, sample, reduce=True):
        loss, sample_size, logging_output = super().forward(model, sample, reduce)
        m = unwrap(model)
        stats = getattr(m, "sparsity_stats", dict)()
        if stats:
            logging_output["nsparsity"] = 1
        for k, v in stats.items():
            logging_output["sparsity" if k == "global" else f"sparsity_{k}"] = v
        if stats:
            logging_output.update(getattr(m, "pruning_diagnostics", dict)())  # mask_flip, mask_iou_init, ...
        return loss, sample_size, logging_output

    @staticmethod
    def reduce_metrics(logging_outputs) -> None:
        CtcCriterion.reduce_metrics(logging_outputs)
        n = sum(log.get("nsparsity", 0) for log in logging_outputs)
        if not n:
            return
        keys = sorted({k for log in logging_outputs for k in log if k.startswith(("sparsity", "mask_"))})
        for k in keys:
            # identical on every worker and micro-batch; priority puts them at the end of the log line
            metrics.log_scalar(k, sum(log.get(k, 0) for log in logging_outputs) / n, priority=300, round=4)
        sample_size = sum(log.get("sample_size", 0) for log in logging_outputs)
        for side in ("before", "after"):  # PARP validations (the task's valid_step), as fairseq's own
            _log_reprune_side(logging_outputs, f"_{side}_reprune", sample_size)

    @staticmethod
    def logging_outputs_can_be_summed() -> bool:
        return True

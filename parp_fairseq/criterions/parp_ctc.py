"""``parp_ctc``: fairseq's CTC criterion that also logs the model's sparsity."""


import math
from dataclasses import dataclass

from fairseq import metrics
from fairseq.criterions import register_criterion
from fairseq.criterions.ctc import CtcCriterion, CtcCriterionConfig

from ..tasks.parp_audio_finetuning import unwrap


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
        for k in ("loss_before_reprune", "loss_after_reprune"):  # PARP validations, as fairseq's `loss`
            if sample_size and any(k in log for log in logging_outputs):
                metrics.log_scalar(k, sum(log.get(k, 0) for log in logging_outputs) / sample_size / math.log(2),
                                   sample_size, round=3)

    @staticmethod
    def logging_outputs_can_be_summed() -> bool:
        return True

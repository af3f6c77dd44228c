"""``parp_ctc``: fairseq's CTC criterion that also logs the model's sparsity."""


from dataclasses import dataclass

from fairseq import metrics
from fairseq.criterions import register_criterion
from fairseq.criterions.ctc import CtcCriterion, CtcCriterionConfig


@dataclass
class ParpCtcCriterionConfig(CtcCriterionConfig):
    pass


@register_criterion("parp_ctc", dataclass=ParpCtcCriterionConfig)
class ParpCtcCriterion(CtcCriterion):
    """CTC loss; logging outputs carry ``sparsity`` (global) and ``sparsity_layers.N``."""

    def forward(self, model, sample, reduce=True):
        loss, sample_size, logging_output = super().forward(model, sample, reduce)
        stats = getattr(getattr(model, "module", model), "sparsity_stats", dict)()
        for k, v in stats.items():
            logging_output["sparsity" if k == "global" else f"sparsity_{k}"] = v
        return loss, sample_size, logging_output

    @staticmethod
    def reduce_metrics(logging_outputs) -> None:
        CtcCriterion.reduce_metrics(logging_outputs)
        keys = sorted({k for log in logging_outputs for k in log if k.startswith("sparsity")})
        for k in keys:
            vals = [log[k] for log in logging_outputs if k in log]
            # identical on every worker; priority puts them at the end of the log line
            metrics.log_scalar(k, sum(vals) / len(vals), priority=300, round=4)

    @staticmethod
    def logging_outputs_can_be_summed() -> bool:
        return False

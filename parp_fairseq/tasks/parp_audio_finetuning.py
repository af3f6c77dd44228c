"""``parp_audio_finetuning``: stock ``audio_finetuning`` plus the pruning hooks.

Hooks only, no trainer fork: ``optimizer_step`` (fixed masks stay exact, PARP re-prunes),
``begin_valid_epoch`` (PARP models are validated at their target sparsity on every rank),
``build_model`` (masks of a loaded checkpoint come from its state_dict) and ``state_dict``
(the sparsity report is written into every checkpoint under ``extra_state.task_state``).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

from fairseq.tasks import register_task
from fairseq.tasks.audio_finetuning import AudioFinetuningConfig, AudioFinetuningTask


@dataclass
class ParpAudioFinetuningConfig(AudioFinetuningConfig):
    pass


def _pruned(model):
    """The parp model inside (possibly wrapped) ``model``, or None for other models."""
    model = getattr(model, "module", model)
    return model if hasattr(model, "after_update") else None


@register_task("parp_audio_finetuning", dataclass=ParpAudioFinetuningConfig)
class ParpAudioFinetuningTask(AudioFinetuningTask):
    cfg: ParpAudioFinetuningConfig

    def __init__(self, cfg: ParpAudioFinetuningConfig):
        super().__init__(cfg)
        self.building_from_checkpoint = False
        self._model_ref = None

    def build_model(self, model_cfg, from_checkpoint=False):
        self.building_from_checkpoint = from_checkpoint
        try:
            model = super().build_model(model_cfg, from_checkpoint)
        finally:
            self.building_from_checkpoint = False
        if _pruned(model) is not None:
            self._model_ref = weakref.ref(model)
        return model

    def optimizer_step(self, optimizer, model, update_num):
        super().optimizer_step(optimizer, model, update_num)
        m = _pruned(model)
        if m is not None:
            m.after_update(update_num + 1)

    def begin_valid_epoch(self, epoch, model):
        super().begin_valid_epoch(epoch, model)
        m = _pruned(model)
        if m is not None:
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
            }
        return sd

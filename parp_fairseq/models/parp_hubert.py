"""``parp_hubert_ctc``: fairseq's ``hubert_ctc`` with the plugin's pruning masks.

The same model class as ``parp_wav2vec_ctc`` (masks, methods, hooks, checkpoints: one
implementation) over fairseq's ``HubertEncoder`` instead of ``Wav2VecEncoder``. Both encoders hold
the pretrained network as ``w2v_encoder.w2v_model`` with wav2vec 2.0's transformer
(``encoder.layers.N.self_attn.q_proj`` ...) and the CTC head as ``w2v_encoder.proj``, so the state
dict keys are stock ``hubert_ctc``'s and ``parp-fairseq-export`` writes a stock ``hubert_ctc``
checkpoint that fairseq loads without the plugin::

    fairseq-hydra-train --config-dir configs/finetune --config-name mini model._name=parp_hubert_ctc \\
        model.w2v_path=hubert.pt task.data=... common.user_dir=$(parp-fairseq-user-dir) pruning=parp
"""

from dataclasses import dataclass, field

from fairseq.models import register_model

from .families import hubert_encoder
from .parp_wav2vec2 import ParpWav2Vec2CtcConfig, ParpWav2VecCtc
from .sliced import SlicedWav2Vec2CtcConfig, SlicedWav2VecCtc


@dataclass
class ParpHubertCtcConfig(ParpWav2Vec2CtcConfig):
    autoregressive: bool = field(default=False, metadata={"help": "read by HubertEncoder; CTC is not"})


@register_model("parp_hubert_ctc", dataclass=ParpHubertCtcConfig)
class ParpHubertCtc(ParpWav2VecCtc):
    """HuBERT CTC model with pruning masks (see :mod:`parp_fairseq.models.parp_wav2vec2`)."""

    @classmethod
    def make_encoder(cls, cfg, task):
        return hubert_encoder(cfg, task)


@dataclass
class SlicedHubertCtcConfig(SlicedWav2Vec2CtcConfig):
    autoregressive: bool = field(default=False, metadata={"help": "read by HubertEncoder; CTC is not"})


@register_model("parp_hubert_ctc_sliced", dataclass=SlicedHubertCtcConfig)
class SlicedHubertCtc(SlicedWav2VecCtc):
    """``parp-fairseq-export --slice`` of a structured-pruned ``parp_hubert_ctc`` with per-layer widths."""

    @classmethod
    def make_encoder(cls, cfg, task):
        return hubert_encoder(cfg, task)

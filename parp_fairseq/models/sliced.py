"""``parp_wav2vec_ctc_sliced``: a wav2vec 2.0 CTC model whose layers have their own FFN widths and
head counts, what ``parp-fairseq-export --slice`` writes from a structured (neuron / head) pruned
checkpoint.

It is the stock ``wav2vec_ctc`` (same modules, same state_dict key names) with, in encoder
layer ``i``, ``fc1: D -> ffn_dims[i]``, ``fc2: ffn_dims[i] -> D`` and a self-attention of
``attention_heads[i]`` heads of the original head dim. A width or head count of 0 is a removed
FFN / attention block: it adds only its output bias. fairseq loads it with ``--user-dir``::

    fairseq-generate DATA --user-dir $(parp-fairseq-user-dir) --path sliced.pt --task audio_finetuning ...
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from fairseq.models import register_model
from fairseq.models.wav2vec.wav2vec2_asr import Wav2Vec2CtcConfig, Wav2VecCtc, Wav2VecEncoder
from torch import Tensor, nn

from ..errors import InputError


class SlicedSelfAttention(nn.Module):
    """Self-attention with ``num_heads`` heads of ``head_dim`` in a ``embed_dim`` model, where
    ``num_heads * head_dim`` may be anything (fairseq's ``MultiheadAttention`` needs it to equal
    ``embed_dim``). Parameters are named as fairseq's (``q/k/v/out_proj``), so state dicts of the
    stock layers, sliced, load as they are.

    ``forward(query (T, B, D), key_padding_mask (B, T) True = pad) -> ((T, B, D), None)``,
    the call signature ``TransformerSentenceEncoderLayer`` uses.
    """

    def __init__(self, embed_dim: int, num_heads: int, head_dim: int, dropout: float = 0.0):
        super().__init__()
        self.embed_dim, self.num_heads, self.head_dim = embed_dim, num_heads, head_dim
        inner = num_heads * head_dim
        self.q_proj = nn.Linear(embed_dim, inner)
        self.k_proj = nn.Linear(embed_dim, inner)
        self.v_proj = nn.Linear(embed_dim, inner)
        self.out_proj = nn.Linear(inner, embed_dim)
        self.dropout = dropout

    def forward(self, query: Tensor, key: Optional[Tensor] = None, value: Optional[Tensor] = None,
                key_padding_mask: Optional[Tensor] = None, attn_mask: Optional[Tensor] = None,
                need_weights: bool = False, **unused) -> Tuple[Tensor, None]:
        tgt, bsz, dim = query.shape
        if dim != self.embed_dim:
            raise ValueError(f"query has shape {tuple(query.shape)}; expected (T, B, {self.embed_dim})")
        if self.num_heads == 0:  # every head removed: out_proj adds its bias
            return self.out_proj(query.new_zeros(tgt, bsz, 0)), None

        def heads(x: Tensor) -> Tensor:  # (T, B, h*d) -> (B, h, T, d)
            return x.view(tgt, bsz, self.num_heads, self.head_dim).permute(1, 2, 0, 3)

        q, k, v = heads(self.q_proj(query)), heads(self.k_proj(query)), heads(self.v_proj(query))
        mask = None
        if attn_mask is not None:
            mask = attn_mask.to(q.dtype) if attn_mask.dtype != torch.bool else ~attn_mask
        if key_padding_mask is not None and key_padding_mask.any():
            keep = ~key_padding_mask.to(torch.bool)[:, None, None, :]  # (B, 1, 1, S): True = attend
            if mask is None:
                mask = keep
            elif mask.dtype == torch.bool:
                mask = mask & keep
            else:
                mask = mask.masked_fill(~keep, float("-inf"))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                             dropout_p=self.dropout if self.training else 0.0)
        out = out.permute(2, 0, 1, 3).reshape(tgt, bsz, self.num_heads * self.head_dim)
        return self.out_proj(out), None


def slice_encoder_layers(encoder: nn.Module, ffn_dims: Sequence[int], attention_heads: Sequence[int]) -> None:
    """Replace, in place, every layer's ``fc1``/``fc2`` and ``self_attn`` of a fairseq wav2vec 2.0
    ``TransformerEncoder`` by modules of the given widths (fresh weights: load a state dict next)."""
    layers = encoder.layers
    if len(ffn_dims) != len(layers) or len(attention_heads) != len(layers):
        raise InputError(f"ffn_dims ({len(ffn_dims)} values) and attention_heads ({len(attention_heads)}) "
                         f"must give one value per encoder layer ({len(layers)})")
    for i, layer in enumerate(layers):
        attn = getattr(layer, "self_attn", None)
        if not (hasattr(layer, "fc1") and hasattr(layer, "fc2") and hasattr(attn, "num_heads")):
            raise InputError(f"encoder layer {i} ({type(layer).__name__}) is not a transformer layer "
                             f"with fc1/fc2/self_attn; only layer_type=transformer can be sliced")
        d = layer.fc1.in_features
        full_heads = attn.num_heads
        if not 0 <= attention_heads[i] <= full_heads or not 0 <= ffn_dims[i]:
            raise InputError(f"layer {i}: {attention_heads[i]} heads / FFN width {ffn_dims[i]} out of range "
                             f"(the model has {full_heads} heads)")
        if ffn_dims[i] != layer.fc1.out_features:
            layer.fc1 = nn.Linear(d, ffn_dims[i])
            layer.fc2 = nn.Linear(ffn_dims[i], d)
        if attention_heads[i] != full_heads:
            p = attn.dropout_module.p if hasattr(attn, "dropout_module") else 0.0
            layer.self_attn = SlicedSelfAttention(d, attention_heads[i], attn.head_dim, p)


@dataclass
class SlicedWav2Vec2CtcConfig(Wav2Vec2CtcConfig):
    ffn_dims: List[int] = field(default_factory=list,
                                metadata={"help": "FFN width of every encoder layer (0 = FFN removed)"})
    attention_heads: List[int] = field(
        default_factory=list, metadata={"help": "attention heads of every encoder layer (0 = attention removed)"})


@register_model("parp_wav2vec_ctc_sliced", dataclass=SlicedWav2Vec2CtcConfig)
class SlicedWav2VecCtc(Wav2VecCtc):
    """The stock CTC model with per-layer FFN widths and head counts (see the module docstring)."""

    @classmethod
    def make_encoder(cls, cfg, task):
        return Wav2VecEncoder(cfg, len(task.target_dictionary))

    @classmethod
    def build_model(cls, cfg: SlicedWav2Vec2CtcConfig, task):
        w2v_encoder = cls.make_encoder(cfg, task)
        slice_encoder_layers(w2v_encoder.w2v_model.encoder, list(cfg.ffn_dims), list(cfg.attention_heads))
        return cls(cfg, w2v_encoder)

"""A fairseq generator for CTC models, so that ``fairseq-generate --task parp_audio_finetuning``
decodes wav2vec 2.0 CTC checkpoints (fairseq's own ``audio_finetuning`` cannot)."""

from __future__ import annotations

import math
from typing import Dict, List

import torch


class CtcGenerator:
    """``generate(models, sample)`` -> per utterance an n-best list of fairseq hypothesis dicts
    (``tokens``, ``score``, ``alignment``, ``positional_scores``, plus ``words``). An ensemble
    averages the models' frame posteriors."""

    def __init__(self, tgt_dict, decoder):
        self.tgt_dict = tgt_dict
        self.decoder = decoder
        self.symbols_to_strip_from_output = {tgt_dict.bos(), tgt_dict.eos(), tgt_dict.pad()}

    @torch.no_grad()
    def generate(self, models, sample, **unused) -> List[List[Dict]]:
        net_input = {k: sample["net_input"][k] for k in ("source", "padding_mask") if k in sample["net_input"]}
        lps, pad = [], None
        for m in models:
            net_out = m(**net_input)
            lps.append(m.get_normalized_probs(net_out, log_probs=True).transpose(0, 1).float())
            pad = net_out["padding_mask"]
        lp = lps[0] if len(lps) == 1 else torch.logsumexp(torch.stack(lps), 0) - math.log(len(lps))
        lp = lp.cpu()
        out = []
        for b in range(lp.size(0)):
            T = lp.size(1) if pad is None else int((~pad[b]).sum())
            hyps = self.decoder.decode(lp[b: b + 1, :T].contiguous())[0]
            out.append([{**h, "alignment": None, "positional_scores": torch.zeros(len(h["tokens"]))} for h in hyps])
        return out

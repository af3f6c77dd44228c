"""Greedy (Viterbi) CTC decoding and error rates, as wav2letter / fairseq's W2lViterbiDecoder."""

from __future__ import annotations

from typing import Iterable, List, Sequence, Tuple

import editdistance
import torch


def ctc_greedy(emissions: torch.Tensor, blank: int = 0) -> List[List[int]]:
    """Best path of each utterance: argmax, collapse repeats, drop blanks.

    Args:
        emissions: ``B x T x V`` scores (log-probs or logits); padded frames must be masked
            to favour the blank (fairseq's ``Wav2VecCtc.get_logits`` does this).
    Returns:
        one list of token ids per utterance.
    """
    if emissions.dim() != 3:
        raise ValueError(f"emissions must be B x T x V, got shape {tuple(emissions.shape)}")
    best = emissions.argmax(-1)
    out = []
    for row in best:
        toks = torch.unique_consecutive(row)
        out.append([int(t) for t in toks if int(t) != blank])
    return out


def edit_counts(hyps: Iterable[Sequence[str]], refs: Iterable[Sequence[str]]) -> Tuple[int, int]:
    """(edit distance summed over utterances, number of reference units)."""
    errs = n = 0
    for h, r in zip(hyps, refs):
        errs += editdistance.eval(list(h), list(r))
        n += len(r)
    return errs, n


def error_rate(hyps: Iterable[Sequence[str]], refs: Iterable[Sequence[str]]) -> float:
    """Corpus-level error rate in percent (WER for word lists, CER/PER for unit lists)."""
    errs, n = edit_counts(hyps, refs)
    if n == 0:
        raise ValueError("references are empty: cannot compute an error rate")
    return 100.0 * errs / n

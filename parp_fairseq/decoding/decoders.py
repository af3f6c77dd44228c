"""CTC decoders over a fairseq target dictionary: Viterbi (greedy) and flashlight-text beam search.

Same conventions as fairseq's wav2letter decoders (examples/speech_recognition/w2l_decoder.py):
blank = ``<ctc_blank>`` if present else ``<s>`` (bos), word boundary = ``|``, emissions are
``B x T x V`` log-probabilities. Each decoder returns, per utterance, an n-best list of
``{"tokens": LongTensor, "score": float, "words": [str]}``.
"""

from __future__ import annotations

import itertools
import os
from collections import OrderedDict
from typing import Dict, List, Optional

import torch

from .viterbi import ctc_greedy


def blank_index(tgt_dict) -> int:
    return tgt_dict.index("<ctc_blank>") if "<ctc_blank>" in tgt_dict.indices else tgt_dict.bos()


def silence_index(tgt_dict) -> int:
    if "<sep>" in tgt_dict.indices:
        return tgt_dict.index("<sep>")
    if "|" in tgt_dict.indices:
        return tgt_dict.index("|")
    return tgt_dict.eos()


def tokens_to_words(tgt_dict, tokens) -> List[str]:
    """Letter tokens -> words: ``b a d | b e d |`` -> ``["bad", "bed"]`` (``|`` separates words);
    for phone / unit dictionaries without ``|`` each token is a 'word'."""
    syms = [tgt_dict[int(t)] for t in tokens]
    if "|" not in tgt_dict.indices:
        return syms
    return "".join(s if s != "|" else " " for s in syms).split()


def load_lexicon(path: str, tgt_dict) -> "OrderedDict[str, List[List[str]]]":
    """wav2letter lexicon ``word<TAB>t o k e n s |`` -> {word: [spelling, ...]}, validated."""
    if not path or not os.path.isfile(path):
        raise FileNotFoundError(f"lexicon {path!r} does not exist; write one line per word "
                                f"('word<TAB>w o r d |') or build it with parp-fairseq-lm")
    lex: "OrderedDict[str, List[List[str]]]" = OrderedDict()
    bad = []
    with open(path, encoding="utf-8") as f:
        for ln, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) < 2:
                raise ValueError(f"{path}:{ln}: expected 'word<TAB>spelling', got {line.strip()!r}")
            word, spelling = parts[0], parts[1:]
            unknown = [t for t in spelling if t not in tgt_dict.indices]
            if unknown:
                bad.append((ln, word, unknown))
            lex.setdefault(word, []).append(spelling)
    if bad:
        ln, word, unknown = bad[0]
        raise ValueError(f"{path}: {len(bad)} spelling(s) use tokens missing from the model's dictionary, "
                         f"e.g. line {ln} {word!r}: {unknown}; the lexicon was written for another "
                         f"dictionary (letters vs phones?)")
    if not lex:
        raise ValueError(f"lexicon {path} is empty")
    return lex


def _word_dict(lexicon):
    """flashlight word dictionary of the lexicon's words plus ``<unk>`` (its default index);
    flashlight's own ``create_word_dict`` fails when the lexicon has no ``<unk>`` entry."""
    from flashlight.lib.text.dictionary import Dictionary as FlDictionary

    wd = FlDictionary()
    for w in lexicon:
        wd.add_entry(w)
    if not wd.contains("<unk>"):
        wd.add_entry("<unk>")
    wd.set_default_index(wd.get_index("<unk>"))
    return wd


class ViterbiDecoder:
    """Greedy CTC: argmax per frame, collapse repeats, drop blanks."""

    def __init__(self, tgt_dict):
        self.tgt_dict = tgt_dict
        self.blank = blank_index(tgt_dict)

    def decode(self, emissions: torch.Tensor) -> List[List[Dict]]:
        out = []
        for toks in ctc_greedy(emissions, blank=self.blank):
            t = torch.tensor(toks, dtype=torch.long)
            out.append([{"tokens": t, "score": 0.0, "words": tokens_to_words(self.tgt_dict, t)}])
        return out


class FlashlightDecoder:
    """flashlight-text beam search with a KenLM language model.

    With ``lexicon``: ``LexiconDecoder`` (word LM, words restricted to the lexicon).
    Without: ``LexiconFreeDecoder`` (the LM must be over the model's units, e.g. letters/phones).
    """

    def __init__(self, tgt_dict, kenlm_model: str, lexicon: Optional[str] = None, beam: int = 50,
                 beam_size_token: Optional[int] = None, beam_threshold: float = 25.0,
                 lm_weight: float = 2.0, word_score: float = -1.0, unk_weight: float = float("-inf"),
                 sil_weight: float = 0.0, nbest: int = 1):
        from flashlight.lib.text.decoder import (CriterionType, LexiconDecoder, LexiconDecoderOptions,
                                                 LexiconFreeDecoder, LexiconFreeDecoderOptions, SmearingMode, Trie)
        from flashlight.lib.text.decoder.kenlm import KenLM

        if not kenlm_model or not os.path.isfile(kenlm_model):
            raise FileNotFoundError(f"KenLM model {kenlm_model!r} does not exist; build one with "
                                    f"`parp-fairseq-lm --text TEXT --out-dir DIR` (ARPA or binary)")
        if beam < 1 or nbest < 1 or nbest > beam:
            raise ValueError(f"need 1 <= nbest <= beam, got beam={beam} nbest={nbest}")
        self.tgt_dict = tgt_dict
        self.blank, self.silence = blank_index(tgt_dict), silence_index(tgt_dict)
        self.nbest = nbest
        self.lexicon_free = lexicon is None
        bst = int(beam_size_token or len(tgt_dict))
        try:
            if lexicon is not None:
                self.lexicon = load_lexicon(lexicon, tgt_dict)
                self.word_dict = _word_dict(self.lexicon)
                unk = self.word_dict.get_index("<unk>")
                self.lm = KenLM(kenlm_model, self.word_dict)
                trie = Trie(len(tgt_dict), self.silence)
                start = self.lm.start(False)
                for word, spellings in self.lexicon.items():
                    widx = self.word_dict.get_index(word)
                    _, score = self.lm.score(start, widx)
                    for sp in spellings:
                        trie.insert([tgt_dict.index(t) for t in sp], widx, score)
                trie.smear(SmearingMode.MAX)
                opts = LexiconDecoderOptions(beam_size=beam, beam_size_token=bst, beam_threshold=beam_threshold,
                                             lm_weight=lm_weight, word_score=word_score, unk_score=unk_weight,
                                             sil_score=sil_weight, log_add=False, criterion_type=CriterionType.CTC)
                self.trie = trie  # the decoder keeps a reference; keep the object alive too
                self.decoder = LexiconDecoder(opts, trie, self.lm, self.silence, self.blank, unk, [], False)
            else:
                self.word_dict = _word_dict({w: [[w]] for w in tgt_dict.symbols})
                self.lm = KenLM(kenlm_model, self.word_dict)
                opts = LexiconFreeDecoderOptions(beam_size=beam, beam_size_token=bst, beam_threshold=beam_threshold,
                                                 lm_weight=lm_weight, sil_score=sil_weight, log_add=False,
                                                 criterion_type=CriterionType.CTC)
                self.decoder = LexiconFreeDecoder(opts, self.lm, self.silence, self.blank, [])
        except RuntimeError as e:  # flashlight's KenLM errors (corrupt / unigram-only ARPA ...)
            detail = " ".join(str(e).split())[-300:]
            raise ValueError(f"cannot load KenLM model {kenlm_model!r} (is it an ARPA or KenLM binary file? build one "
                             f"with parp-fairseq-lm): {detail}") from None

    def _tokens(self, idxs) -> torch.Tensor:
        idxs = (g[0] for g in itertools.groupby(idxs))
        return torch.LongTensor([i for i in idxs if i != self.blank and i >= 0])

    def decode(self, emissions: torch.Tensor) -> List[List[Dict]]:
        if emissions.dim() != 3:
            raise ValueError(f"emissions must be B x T x V, got shape {tuple(emissions.shape)}")
        emissions = emissions.float().cpu().contiguous()
        B, T, N = emissions.shape
        if N != len(self.tgt_dict):
            raise ValueError(f"emissions have {N} classes but the dictionary has {len(self.tgt_dict)}: "
                             f"model and data dictionaries differ")
        out = []
        for b in range(B):
            ptr = emissions.data_ptr() + 4 * b * emissions.stride(0)
            results = self.decoder.decode(ptr, T, N)[: self.nbest]
            hyps = []
            for r in results:
                toks = self._tokens(r.tokens)
                words = (tokens_to_words(self.tgt_dict, toks) if self.lexicon_free
                         else [self.word_dict.get_entry(x) for x in r.words if x >= 0])
                hyps.append({"tokens": toks, "score": float(r.score), "words": words})
            out.append(hyps)
        return out

"""A deterministic synthetic "tone language" corpus in fairseq manifest format.

Every letter is a short tone at its own pitch, words are separated by silence. A tiny
wav2vec2 learns it within seconds on a CPU, which makes it the corpus of the unit and
integration tests (no espeak-ng needed). Real and synthesized speech corpora live in
:mod:`parp_fairseq.data` prep scripts.

Layout written to ``out_dir`` (what ``audio_pretraining`` / ``audio_finetuning`` read)::

    train.tsv valid.tsv test.tsv   root line, then "<relpath>\\t<num_samples>"
    {split}.ltr                    "h e l l o | w o r l d |"
    {split}.wrd                    "hello world"
    dict.ltr.txt                   fairseq dictionary of letters and "|"
    lexicon.txt                    "word\\th e l l o |"
    wav/{split}/{idx}.wav          16 kHz mono PCM16
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Dict, List

import numpy as np
import soundfile as sf

from ..fsutil import output_dir

SAMPLE_RATE = 16000
LETTERS = "abcdefgh"
WORDS = [
    "bad", "bag", "bead", "bed", "beef", "cab", "cafe", "chef", "dab", "dead", "deaf",
    "each", "face", "fade", "feed", "hedge", "head", "ache", "age", "badge", "beach",
]
# Pitches spread over 300..2100 Hz, far enough apart to be separable by a tiny CNN.
_FREQS = {c: 300.0 * (1.32 ** i) for i, c in enumerate(LETTERS)}


def _tone(letter: str, rng: np.random.Generator, speaker_shift: float, rate: float) -> np.ndarray:
    dur = int(SAMPLE_RATE * 0.07 * rate * rng.uniform(0.85, 1.15))
    t = np.arange(dur) / SAMPLE_RATE
    f = _FREQS[letter] * speaker_shift
    wave = np.sin(2 * np.pi * f * t) + 0.3 * np.sin(2 * np.pi * 2 * f * t)
    env = np.minimum(1.0, np.minimum(t, t[::-1]) / 0.008)  # 8 ms attack / release
    return (wave * env).astype(np.float32)


def synthesize(sentence: str, rng: np.random.Generator, speaker_shift: float = 1.0,
               rate: float = 1.0) -> np.ndarray:
    """Render ``sentence`` (words of LETTERS separated by spaces) as a float32 waveform."""
    bad = set(sentence) - set(LETTERS) - {" "}
    if bad:
        raise ValueError(f"tone corpus can only speak letters {LETTERS!r}; got {sorted(bad)}")
    gap = lambda n: np.zeros(int(SAMPLE_RATE * n * rate), dtype=np.float32)  # noqa: E731
    pieces = [gap(0.05)]
    for w, word in enumerate(sentence.split()):
        if w:
            pieces.append(gap(0.06))
        for i, ch in enumerate(word):
            if i:
                pieces.append(gap(0.012))
            pieces.append(_tone(ch, rng, speaker_shift, rate))
    pieces.append(gap(0.05))
    audio = np.concatenate(pieces)
    audio = 0.5 * audio + 0.01 * rng.standard_normal(audio.shape[0]).astype(np.float32)
    return audio


def letters_of(sentence: str) -> str:
    """fairseq ``.ltr`` form: ``"bad bed" -> "b a d | b e d |"``."""
    return " ".join(" ".join(w) + " |" for w in sentence.split())


def _sentences(rng: np.random.Generator, n: int, min_words: int, max_words: int) -> List[str]:
    out = []
    for _ in range(n):
        k = int(rng.integers(min_words, max_words + 1))
        out.append(" ".join(rng.choice(WORDS, size=k)))
    return out


def make_tone_corpus(out_dir: str | os.PathLike, sizes: Dict[str, int] | None = None,
                     seed: int = 1, min_words: int = 1, max_words: int = 3,
                     overwrite: bool = False) -> Path:
    """Write the corpus to ``out_dir`` atomically (temp dir, then rename); returns the path.

    ``sizes`` maps split name to number of utterances (default train 64, valid 16, test 16).
    The test split uses speaker pitch shifts never seen in train ("held-out speakers").
    Same seed -> byte-identical files.
    """
    sizes = sizes or {"train": 64, "valid": 16, "test": 16}
    out = Path(out_dir)
    if out.exists():
        if (out / "dict.ltr.txt").exists() and not overwrite:
            return out
    with output_dir(out, "tones corpus") as tmp:
        counts: Counter = Counter()
        for s_idx, (split, n) in enumerate(sorted(sizes.items())):
            rng = np.random.default_rng([seed, s_idx])
            (tmp / "wav" / split).mkdir(parents=True)
            sents = _sentences(rng, n, min_words, max_words)
            shifts = (0.97, 1.03) if split == "test" else (0.92, 0.95, 1.0, 1.05, 1.08)
            tsv = [str((out / "wav" / split).resolve())]
            for i, sent in enumerate(sents):
                audio = synthesize(sent, rng, speaker_shift=float(rng.choice(shifts)),
                                   rate=float(rng.uniform(0.9, 1.1)))
                sf.write(tmp / "wav" / split / f"{i:05d}.wav", audio, SAMPLE_RATE, subtype="PCM_16")
                tsv.append(f"{i:05d}.wav\t{len(audio)}")
            (tmp / f"{split}.tsv").write_text("\n".join(tsv) + "\n")
            (tmp / f"{split}.wrd").write_text("\n".join(sents) + "\n")
            ltr = [letters_of(s) for s in sents]
            (tmp / f"{split}.ltr").write_text("\n".join(ltr) + "\n")
            if split == "train":
                for line in ltr:
                    counts.update(line.split())
        for sym in LETTERS + "|":  # every symbol in the dictionary even if unseen
            counts.setdefault(sym, 0)
        (tmp / "dict.ltr.txt").write_text(
            "".join(f"{s} {c}\n" for s, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
        )
        (tmp / "lexicon.txt").write_text("".join(f"{w}\t{' '.join(w)} |\n" for w in sorted(set(WORDS))))
    return out


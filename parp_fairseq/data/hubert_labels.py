"""Frame labels for HuBERT pretraining, made the way fairseq's ``examples/hubert/simple_kmeans`` makes
the first iteration's: MFCC features -> k-means -> one cluster id per frame.

* :func:`mfcc`: Kaldi-style MFCCs (25 ms Hamming windows every 10 ms, ``snip_edges``, pre-emphasis
  0.97, 23 mel bins, 13 cepstra, lifter 22) with deltas and delta-deltas: ``(frames, 39)`` at 100 Hz,
  as ``dump_mfcc_feature.py`` computes with ``torchaudio.compliance.kaldi.mfcc`` (written here in
  torch: torchaudio is not imported by this package);
* :func:`fit_kmeans`: scikit-learn's ``MiniBatchKMeans`` on (a sample of) the training frames, as
  ``learn_kmeans.py``;
* :func:`write_labels`: ``<split>.km`` (one line per manifest row, space-separated cluster ids, one per
  MFCC frame) and ``dict.km.txt`` (``<id> <count>``), what ``hubert_pretraining`` reads with
  ``task.labels=[km] task.label_rate=100``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from .tools import SAMPLE_RATE, CorpusError

FRAME_LENGTH = 400  # 25 ms at 16 kHz
FRAME_SHIFT = 160  # 10 ms: labels at 100 Hz
LABEL_RATE = SAMPLE_RATE // FRAME_SHIFT


def _mel_banks(n_fft: int, n_mels: int, low: float = 20.0, high: Optional[float] = None) -> torch.Tensor:
    """``(n_fft // 2 + 1, n_mels)`` triangular filters on Kaldi's mel scale (1127 ln(1 + f/700))."""
    high = high or SAMPLE_RATE / 2

    def mel(f):
        return 1127.0 * math.log(1.0 + f / 700.0)

    freqs = torch.arange(n_fft // 2 + 1, dtype=torch.float64) * SAMPLE_RATE / n_fft
    mels = 1127.0 * torch.log1p(freqs / 700.0)
    edges = torch.linspace(mel(low), mel(high), n_mels + 2, dtype=torch.float64)
    left, center, right = edges[:-2], edges[1:-1], edges[2:]
    up = (mels[:, None] - left) / (center - left)
    down = (right - mels[:, None]) / (right - center)
    return torch.clamp(torch.minimum(up, down), min=0.0).float()


def _deltas(x: torch.Tensor, window: int = 2) -> torch.Tensor:
    """Regression deltas over time of ``(frames, dim)`` (edges replicated), Kaldi's / torchaudio's formula."""
    pad = torch.cat([x[:1].expand(window, -1), x, x[-1:].expand(window, -1)])
    n = x.shape[0]
    num = sum(k * (pad[window + k:window + k + n] - pad[window - k:window - k + n]) for k in range(1, window + 1))
    return num / (2 * sum(k * k for k in range(1, window + 1)))


def mfcc(wav: np.ndarray, n_mels: int = 23, n_ceps: int = 13, lifter: float = 22.0) -> torch.Tensor:
    """MFCC + deltas + delta-deltas of a 16 kHz mono waveform ``(samples,)``: ``(frames, 3 * n_ceps)``,
    ``frames = 1 + (samples - 400) // 160`` (0 rows for shorter audio)."""
    x = torch.as_tensor(np.asarray(wav, dtype=np.float32)).flatten() * 32768.0  # Kaldi works on int16 scale
    if x.numel() < FRAME_LENGTH:
        return torch.zeros(0, 3 * n_ceps)
    frames = x.unfold(0, FRAME_LENGTH, FRAME_SHIFT)  # (T, 400)
    frames = frames - frames.mean(dim=1, keepdim=True)  # remove DC per frame
    frames = torch.cat([frames[:, :1] * (1 - 0.97), frames[:, 1:] - 0.97 * frames[:, :-1]], dim=1)
    frames = frames * torch.hamming_window(FRAME_LENGTH, periodic=False)
    n_fft = 512
    power = torch.fft.rfft(frames, n=n_fft).abs() ** 2  # (T, 257)
    fbank = torch.log(torch.clamp(power @ _mel_banks(n_fft, n_mels), min=torch.finfo(torch.float32).eps))
    k = torch.arange(n_mels, dtype=torch.float32)
    dct = torch.cos(math.pi / n_mels * (k[:, None] + 0.5) * torch.arange(n_ceps, dtype=torch.float32)[None])
    dct[:, 0] *= math.sqrt(1.0 / n_mels)
    dct[:, 1:] *= math.sqrt(2.0 / n_mels)
    ceps = fbank @ dct  # (T, n_ceps)
    ceps = ceps * (1.0 + lifter / 2.0 * torch.sin(math.pi * torch.arange(n_ceps) / lifter))
    d1 = _deltas(ceps)
    return torch.cat([ceps, d1, _deltas(d1)], dim=1)


def read_manifest(tsv: Path) -> List[Path]:
    """Audio paths of a fairseq manifest (``root`` line, then ``path<TAB>samples``)."""
    lines = Path(tsv).read_text(encoding="utf-8").splitlines()
    if not lines:
        raise CorpusError(f"{tsv} is empty; a manifest starts with the audio root folder")
    root = Path(lines[0].strip())
    out = []
    for i, ln in enumerate(lines[1:], start=2):
        parts = ln.split("\t")
        if len(parts) < 2:
            raise CorpusError(f"{tsv}:{i}: expected '<path>\\t<samples>', got {ln[:80]!r}")
        out.append(root / parts[0])
    return out


def features(paths: Sequence[Path], desc: str) -> List[torch.Tensor]:
    """MFCC features of every file (16 kHz mono), with a progress bar."""
    import soundfile as sf
    from tqdm import tqdm

    feats = []
    for p in tqdm(paths, desc=desc, unit="file"):
        wav, sr = sf.read(str(p), dtype="float32")
        if sr != SAMPLE_RATE or wav.ndim != 1:
            raise CorpusError(f"{p}: {sr} Hz, {wav.ndim} channel(s); HuBERT labels need 16 kHz mono audio "
                              f"(convert with `sox IN -r 16000 -c 1 OUT`)")
        feats.append(mfcc(wav))
    return feats


def fit_kmeans(train_feats: Sequence[torch.Tensor], clusters: int, seed: int, max_frames: int = 200_000):
    """scikit-learn ``MiniBatchKMeans`` (simple_kmeans' settings) on at most ``max_frames`` training frames."""
    from sklearn.cluster import MiniBatchKMeans

    x = torch.cat(list(train_feats)).numpy()
    if len(x) < clusters:
        raise CorpusError(f"{len(x)} training frames for {clusters} clusters; lower --clusters or add audio")
    rng = np.random.default_rng(seed)
    if len(x) > max_frames:
        x = x[rng.choice(len(x), max_frames, replace=False)]
    km = MiniBatchKMeans(n_clusters=clusters, init="k-means++", max_iter=100, batch_size=10000, tol=0.0,
                         max_no_improvement=100, n_init=20, reassignment_ratio=0.0, random_state=seed)
    km.fit(x)
    return km


def write_labels(out: Path, splits: Dict[str, Sequence[torch.Tensor]], km) -> Dict[str, int]:
    """``<split>.km`` per split and ``dict.km.txt`` into the folder ``out``; returns frames per split."""
    counts = np.zeros(km.n_clusters, dtype=np.int64)
    frames = {}
    for split, feats in splits.items():
        lines = []
        for f in feats:
            ids = km.predict(f.numpy()) if len(f) else np.zeros(0, dtype=np.int64)
            if split == "train":
                counts += np.bincount(ids, minlength=km.n_clusters)
            lines.append(" ".join(map(str, ids.tolist())))
        (out / f"{split}.km").write_text("".join(ln + "\n" for ln in lines), encoding="utf-8")
        frames[split] = sum(len(f) for f in feats)
    (out / "dict.km.txt").write_text("".join(f"{i} {int(c)}\n" for i, c in enumerate(counts)), encoding="utf-8")
    return frames

#!/usr/bin/env python
"""Training-step time and memory of each method as a ratio against stock fairseq ``wav2vec_ctc``.

Every variant runs the same loop, measured in the same process: fairseq ``CtcCriterion`` forward,
backward, then ``task.optimizer_step`` with fairseq's Adam (the stock ``audio_finetuning`` task for
the stock model, ``parp_audio_finetuning`` with its mask hooks for ours). Models are built from
``w2v_args`` (random weights: timing does not depend on them). Median of the measured steps, warm-up
excluded; each step runs every variant in a fresh random order, so that machine noise and
cache effects hit all of them alike.
Also times one global magnitude re-prune (PARP) of the model's masked parameters.

    python scripts/bench_train_step.py --sizes tiny base --out BENCHMARKS.md
    python scripts/bench_train_step.py --sizes base --device cuda --batch 8   # GPU: + peak memory
"""

from __future__ import annotations

import argparse
import gc
import logging
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import parp_fairseq  # noqa: E402,F401
from fairseq import tasks  # noqa: E402
from fairseq.criterions.ctc import CtcCriterion, CtcCriterionConfig  # noqa: E402
from fairseq.models.wav2vec.wav2vec2 import Wav2Vec2Config  # noqa: E402
from fairseq.models.wav2vec.wav2vec2_asr import Wav2Vec2CtcConfig, Wav2VecCtc  # noqa: E402
from fairseq.optim.adam import Adam as FairseqAdamImpl  # noqa: E402
from fairseq.tasks.audio_finetuning import AudioFinetuningConfig  # noqa: E402
from fairseq.tasks.audio_pretraining import AudioPretrainingConfig  # noqa: E402
from omegaconf import OmegaConf, open_dict  # noqa: E402

from parp_fairseq.models.parp_wav2vec2 import ParpWav2Vec2CtcConfig, PruningConfig  # noqa: E402
from parp_fairseq.pruning import magnitude_masks  # noqa: E402
from parp_fairseq.reporting import update_markdown_section  # noqa: E402
from parp_fairseq.tasks.parp_audio_finetuning import ParpAudioFinetuningConfig  # noqa: E402

SIZES = {
    # name: (wav2vec2 arch overrides, batch size, seconds of audio per utterance)
    "tiny": (dict(encoder_layers=2, encoder_embed_dim=64, encoder_ffn_embed_dim=128, encoder_attention_heads=4,
                  conv_feature_layers="[(32, 10, 5)] + [(32, 3, 2)] * 4 + [(32, 2, 2)] * 2", conv_pos=16,
                  conv_pos_groups=4, final_dim=32), 8, 2.0),
    "base": (dict(), 2, 4.0),  # Wav2Vec2Config defaults = wav2vec 2.0 BASE (95M parameters)
}
VARIANTS = [
    ("stock wav2vec_ctc", None),
    ("ours, dense (none)", dict(method="none")),
    ("OMP/MPI (fixed mask, s=0.7)", dict(method="mpi", sparsity=0.7)),
    ("PARP (s=0.7, re-prune every 50)", dict(method="parp", sparsity=0.7, reprune_interval=50)),
    ("S3-Router (s=0.1, per tensor)", dict(method="s3router", sparsity=0.1, ranking="tensor")),
]


def _task(data: str, ours: bool):
    dc = ParpAudioFinetuningConfig if ours else AudioFinetuningConfig
    cfg = OmegaConf.structured(dc(data=data, labels="ltr", seed=1, tpu=False))
    with open_dict(cfg):
        cfg._name = "parp_audio_finetuning" if ours else "audio_finetuning"
    return tasks.setup_task(cfg)


def _model(task, arch: dict, pruning):
    w2v = OmegaConf.create({"model": OmegaConf.structured(Wav2Vec2Config(**arch)),
                            "task": OmegaConf.structured(AudioPretrainingConfig(data=task.cfg.data, tpu=False, seed=1))})
    with open_dict(w2v):
        w2v.model._name, w2v.task._name = "wav2vec2", "audio_pretraining"
    common = dict(w2v_args=w2v, data=task.cfg.data, normalize=False, apply_mask=True, mask_prob=0.5,
                  mask_channel_prob=0.0, layerdrop=0.0, feature_grad_mult=0.0, freeze_finetune_updates=0,
                  ddp_backend="legacy_ddp")
    if pruning is None:
        return Wav2VecCtc.build_model(OmegaConf.structured(Wav2Vec2CtcConfig(**common)), task)
    cfg = OmegaConf.structured(ParpWav2Vec2CtcConfig(pruning=PruningConfig(seed=1, **pruning), **common))
    with open_dict(cfg):
        cfg._name = "parp_wav2vec_ctc"
    return task.build_model(cfg)


def _sample(bsz: int, seconds: float, vocab: int, gen: torch.Generator) -> dict:
    n = int(16000 * seconds)
    tgt_len = max(2, int(seconds * 8))
    target = torch.randint(4, vocab, (bsz, tgt_len), generator=gen)
    return {"id": torch.arange(bsz), "net_input": {"source": torch.randn(bsz, n, generator=gen), "padding_mask": None},
            "target": target, "target_lengths": torch.full((bsz,), tgt_len), "ntokens": bsz * tgt_len}


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def bench(size: str, steps: int, warmup: int, data: str, device: str = "cpu", batch: int = 0) -> list:
    arch, bsz, seconds = SIZES[size]
    bsz = batch or bsz
    cuda = device.startswith("cuda")
    runs = []
    for name, pruning in VARIANTS:
        task = _task(data, ours=pruning is not None)
        torch.manual_seed(0)
        model = _model(task, arch, pruning).to(device)  # masks and scores are buffers/params: they move too
        crit = CtcCriterion(CtcCriterionConfig(zero_infinity=True, sentence_avg=True), task)
        opt = FairseqAdamImpl([p for p in model.parameters() if p.requires_grad], lr=1e-5)
        runs.append({"name": name, "task": task, "model": model, "crit": crit, "opt": opt, "times": [],
                     "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad), "peak": 0,
                     "params": sum(p.numel() for p in model.parameters())})
    gen = torch.Generator().manual_seed(0)
    sample = _sample(bsz, seconds, len(runs[0]["task"].target_dictionary), gen)
    if cuda:
        sample = {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in sample.items()}
        sample["net_input"] = {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in sample["net_input"].items()}
    order = torch.Generator().manual_seed(1)
    for it in range(warmup + steps):  # every step: all variants, in a fresh random order
        for i in torch.randperm(len(runs), generator=order).tolist():
            r = runs[i]
            m = r["model"]
            m.train()
            m.set_num_updates(it)
            _sync(device)
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            t0 = time.perf_counter()
            r["opt"].zero_grad()
            loss, _, _ = r["crit"](m, sample)
            loss.backward()
            r["task"].optimizer_step(r["opt"], m, it)
            _sync(device)
            dt = time.perf_counter() - t0
            if it >= warmup:
                r["times"].append(dt)
                if cuda:
                    r["peak"] = max(r["peak"], torch.cuda.max_memory_allocated())
    base = statistics.median(runs[0]["times"])
    out = []
    for r in runs:
        med = statistics.median(r["times"])
        out.append((size, r["name"], r["params"], r["trainable"], med * 1000, med / base,
                    r["peak"] / 2**20, r["peak"] / max(runs[0]["peak"], 1)))
    # one PARP re-prune of the masked parameters (global magnitude ranking)
    parp = next(r for r in runs if r["name"].startswith("PARP"))["model"]
    params = parp.masker.params()
    t = []
    for _ in range(3):
        t0 = time.perf_counter()
        magnitude_masks(params, 0.7, "global")
        t.append(time.perf_counter() - t0)
    reprune = (size, sum(p.numel() for p in params.values()), min(t))
    del runs
    gc.collect()
    return out, reprune


def main() -> int:
    logging.disable(logging.WARNING)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", nargs="+", default=["tiny", "base"], choices=list(SIZES))
    ap.add_argument("--steps", type=int, default=15)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--out", default=str(REPO / "BENCHMARKS.md"))
    ap.add_argument("--device", default="cpu", help="cpu or cuda (GPU rows go to their own section)")
    ap.add_argument("--batch", type=int, default=0, help="utterances per step (default per size)")
    args = ap.parse_args()
    cuda = args.device.startswith("cuda")
    rows, reprunes = [], []
    with tempfile.TemporaryDirectory() as data:
        syms = [chr(c) for c in range(ord("a"), ord("z") + 1)] + ["|", "'"]
        Path(data, "dict.ltr.txt").write_text("".join(f"{s} 1\n" for s in syms))
        for size in args.sizes:
            print(f"[bench] {size}: {len(VARIANTS)} variants x ({args.warmup} warm-up + {args.steps}) steps", flush=True)
            r, rp = bench(size, args.steps, args.warmup, data, args.device, args.batch)
            rows += r
            reprunes.append(rp)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    cmd = "python scripts/bench_train_step.py " + " ".join(sys.argv[1:])
    where = (f"{torch.cuda.get_device_name()} (fp32), CUDA {torch.version.cuda}" if cuda else
             f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads")
    lines = [
        f"## Training step time vs stock fairseq ({'GPU' if cuda else 'CPU'})", "",
        f"`{cmd}` on {where}, "
        f"torch {torch.__version__}; median of {args.steps} steps after {args.warmup} warm-up, variants "
        f"interleaved in random order. Step = CTC forward + backward + `task.optimizer_step` (fairseq Adam). "
        + ("Peak memory = `torch.cuda.max_memory_allocated` during a step (weights, optimizer state, "
           "activations, masks and scores)." if cuda else f"Process peak RSS {peak:.0f} MiB."), "",
    ]
    if cuda:
        lines += ["| model | variant | params | trainable | step ms | ratio vs stock | peak MiB | memory vs stock |",
                  "|---|---|---|---|---|---|---|---|"]
        lines += [f"| {s} | {n} | {p/1e6:.2f}M | {t/1e6:.2f}M | {ms:.1f} | {ratio:.3f}x | {mib:.0f} | {mr:.3f}x |"
                  for s, n, p, t, ms, ratio, mib, mr in rows]
    else:
        lines += ["| model | variant | params | trainable | step ms | ratio vs stock |", "|---|---|---|---|---|---|"]
        lines += [f"| {s} | {n} | {p/1e6:.2f}M | {t/1e6:.2f}M | {ms:.1f} | {ratio:.3f}x |"
                  for s, n, p, t, ms, ratio, _, _ in rows]
    lines += ["", "Global magnitude re-prune (PARP) of all masked parameters, best of 3:", "",
              "| model | masked params | seconds |", "|---|---|---|"]
    lines += [f"| {s} | {n/1e6:.2f}M | {sec:.3f} |" for s, n, sec in reprunes]
    text = "\n".join(lines) + "\n"
    print(text)
    update_markdown_section(args.out, "bench_train_step" + ("_cuda" if cuda else ""), text,
                            title="# Benchmarks\n\nEvery figure comes from the command shown with it.\n")
    print(f"[bench] wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

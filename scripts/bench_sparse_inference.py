#!/usr/bin/env python
"""Inference latency of a pruned wav2vec 2.0 on sparse kernels vs the same model dense, and the size
of a compressed sparse export.

A wav2vec 2.0 BASE-sized ``Wav2VecCtc`` (95M parameters, random weights: kernel speed does not depend
on values) is pruned by global magnitude at each sparsity (and 2:4 semi-structured); its transformer
linears (q/k/v/out, fc1, fc2: 85M weights) then run

* dense (the zeros multiplied as usual: what the stock fairseq model does) - the reference;
* ``csr``: ``torch.sparse.mm`` with CSR weights (MKL on CPU, cuSPARSE on GPU);
* ``2:4``: ``to_sparse_semi_structured`` (GPU, fp16).

Median forward time of the whole model (feature extractor included) over repeated runs, warm-up
excluded, variants interleaved; ``max |diff|`` is the largest logit difference vs the dense pruned
model. Sizes: the stock export (``parp-fairseq-export``) vs ``--compress`` (bitmask + values).

    python scripts/bench_sparse_inference.py                      # CPU
    python scripts/bench_sparse_inference.py --device cuda        # GPU: fp16, 2:4 and CSR
"""

import argparse
import logging
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from bench_train_step import SIZES, _model, _task  # noqa: E402

from parp_fairseq.checkpoints import compress_state_dict  # noqa: E402
from parp_fairseq.pruning import magnitude_masks  # noqa: E402
from parp_fairseq.reporting import update_markdown_section  # noqa: E402
from parp_fairseq.sparse_kernels import DEFAULT_PATTERN, sparsify_linears  # noqa: E402


def _prune(model, sparsity: float, ranking: str) -> None:
    import re

    rx = re.compile(DEFAULT_PATTERN)
    params = {n: m.weight for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and rx.search(n)}
    masks = magnitude_masks(params, sparsity, ranking)
    with torch.no_grad():
        for n, p in params.items():
            p.mul_(masks[n].to(p.dtype))


def _time(fn, x, device) -> float:
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    with torch.inference_mode():
        out = fn(x)
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0, out


def _layer_bench(dev: str, dtype, args) -> list:
    """Dense vs 2:4 (cuSPARSELt and CUTLASS backends) vs CSR for the BASE transformer linears alone."""
    from torch.sparse import SparseSemiStructuredTensor

    from parp_fairseq.sparse_kernels import SparseLinear

    rows = []
    for tokens in sorted({args.batch * int(args.seconds * 50), 32768}):  # 20 ms frames
        for name, out_f, in_f in (("q/k/v/out_proj", 768, 768), ("fc1", 3072, 768), ("fc2", 768, 3072)):
            lin = torch.nn.Linear(in_f, out_f).to(dev, dtype).eval()
            x = torch.randn(tokens, in_f, device=dev, dtype=dtype)
            with torch.no_grad():
                lin24 = torch.nn.Linear(in_f, out_f).to(dev, dtype)
                lin24.weight.copy_(lin.weight * magnitude_masks({"w": lin.weight}, 0.5, "2:4")["w"])
                lin90 = torch.nn.Linear(in_f, out_f).to(dev, dtype)
                lin90.weight.copy_(lin.weight * magnitude_masks({"w": lin.weight}, 0.9, "tensor")["w"])
            fns = [lin]
            for cutlass in (False, True):
                SparseSemiStructuredTensor._FORCE_CUTLASS = cutlass
                try:
                    fns.append(SparseLinear(lin24, "2:4"))
                except Exception as e:  # a backend this build lacks
                    print(f"[bench] 2:4 {'CUTLASS' if cutlass else 'cuSPARSELt'} unavailable: {e}", flush=True)
                    fns.append(None)
            SparseSemiStructuredTensor._FORCE_CUTLASS = False
            fns.append(SparseLinear(lin90, "csr"))
            med = []
            for k, f in enumerate(fns):
                if k == 2:
                    SparseSemiStructuredTensor._FORCE_CUTLASS = True
                ts = []
                try:
                    for it in range(3 + args.runs * 5) if f is not None else ():
                        dt, _ = _time(f, x, dev)
                        if it >= 3:
                            ts.append(dt)
                except RuntimeError as e:  # e.g. CUTLASS 2:4 kernels exist for sm_8x only
                    print(f"[bench] {name}: variant {k} failed: {str(e)[:120]}", flush=True)
                    ts = []
                finally:
                    SparseSemiStructuredTensor._FORCE_CUTLASS = False
                med.append(statistics.median(ts) * 1000 if ts else float("nan"))
            rows.append((tokens, name, out_f, in_f, *med))
    return rows


def main() -> int:
    logging.disable(logging.WARNING)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--sparsities", nargs="+", type=float, default=[0.5, 0.7, 0.9])
    ap.add_argument("--seconds", type=float, default=4.0, help="audio per utterance")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--out", default=str(REPO / "BENCHMARKS.md"))
    args = ap.parse_args()
    dev = args.device
    dtype = torch.float16 if dev == "cuda" else torch.float32
    data = tempfile.mkdtemp()
    syms = [chr(c) for c in range(ord("a"), ord("z") + 1)] + ["|", "'"]
    Path(data, "dict.ltr.txt").write_text("".join(f"{s} 1\n" for s in syms))
    task = _task(data, ours=False)

    def build(sparsity: float, ranking: str):
        torch.manual_seed(0)  # the same weights every time (weight-norm modules cannot be deep-copied)
        m = _model(task, SIZES["base"][0], None).eval()
        _prune(m, sparsity, ranking)
        return m
    x = torch.randn(args.batch, int(16000 * args.seconds), generator=torch.Generator().manual_seed(0))
    x = x.to(dev, dtype)
    settings = [(s, "global") for s in args.sparsities] + [(0.5, "2:4")]
    rows, sizes = [], []
    for s, ranking in settings:
        dense = build(s, ranking)
        sd = {k: v for k, v in dense.state_dict().items()}
        with tempfile.TemporaryDirectory() as d:
            plain, comp, comp16 = (Path(d, n) for n in ("stock.pt", "c32.pt", "c16.pt"))
            torch.save(sd, plain)
            torch.save(compress_state_dict(sd), comp)
            torch.save(compress_state_dict(sd, torch.float16), comp16)
            sizes.append((s, ranking, plain.stat().st_size, comp.stat().st_size, comp16.stat().st_size))
        dense = dense.to(dev, dtype)
        variants = [("dense", dense)]
        if ranking == "2:4":  # the sparse variants call the projections as modules (no fused MHA path)
            nofast = build(s, ranking).to(dev, dtype)
            for mod in nofast.modules():
                if hasattr(mod, "skip_embed_dim_check"):
                    mod.skip_embed_dim_check = True
            variants.append(("dense, no MHA fast path", nofast))
        kinds = ["csr"] + (["2:4"] if dev == "cuda" and ranking == "2:4" else [])
        for k in kinds:
            m = build(s, ranking).to(dev, dtype)
            sparsify_linears(m, k)
            variants.append((k, m))
        fns = [(n, (lambda m: lambda inp: m(source=inp, padding_mask=None)["encoder_out"])(m)) for n, m in variants]
        times = {n: [] for n, _ in fns}
        outs = {}
        order = torch.Generator().manual_seed(1)
        for it in range(args.warmup + args.runs):
            for i in torch.randperm(len(fns), generator=order).tolist():
                n, f = fns[i]
                dt, out = _time(f, x, dev)
                outs[n] = out.float()
                if it >= args.warmup:
                    times[n].append(dt)
        ref = statistics.median(times["dense"])
        for n, _ in fns:
            med = statistics.median(times[n])
            diff = float((outs[n] - outs["dense"]).abs().max())
            rows.append((s, ranking, n, med * 1000, ref / med, diff))
        print(f"[bench] sparsity {s} ({ranking}): " + ", ".join(f"{r[2]} {r[3]:.1f} ms" for r in rows[-len(fns):]),
              flush=True)
    layer_rows = _layer_bench(dev, dtype, args) if dev == "cuda" else []
    where = (f"{torch.cuda.get_device_name()}, fp16, CUDA {torch.version.cuda}" if dev == "cuda" else
             f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, fp32")
    cmd = "python scripts/bench_sparse_inference.py " + " ".join(sys.argv[1:])
    lines = [f"## Sparse-kernel inference vs dense ({'GPU' if dev == 'cuda' else 'CPU'})", "",
             f"`{cmd}` on {where}, torch {torch.__version__}: wav2vec 2.0 BASE-sized CTC model (95M), "
             f"batch {args.batch} x {args.seconds:g} s, median of {args.runs} forwards after {args.warmup} warm-up, "
             "variants interleaved. Only the transformer linears (85M weights) are pruned and swapped; "
             "the CNN feature extractor and attention products stay dense.", "",
             "| sparsity | ranking | kernels | forward ms | speedup vs dense | max abs logit diff |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {s:g} | {r} | {n} | {ms:.1f} | {sp:.2f}x | {d:.1e} |" for s, r, n, ms, sp, d in rows]
    lines += ["", "Checkpoint size of the pruned model: plain state dict vs `parp-fairseq-export --compress` "
              "(bitmask + kept values):", "",
              "| sparsity | ranking | plain fp32 MiB | compressed fp32 MiB | ratio | compressed fp16 MiB | ratio |",
              "|---|---|---|---|---|---|---|"]
    lines += [f"| {s:g} | {r} | {p / 2**20:.1f} | {c / 2**20:.1f} | {p / c:.2f}x | {h / 2**20:.1f} | {p / h:.2f}x |"
              for s, r, p, c, h in sizes]
    if layer_rows:
        lines += ["", f"One linear layer alone (tokens = batch x frames, fp16, eager, one call at a time), median of "
                  f"{args.runs * 5} calls:", "",
                  "| tokens | layer | weight | dense ms | 2:4 cuSPARSELt ms | speedup | 2:4 CUTLASS ms | speedup "
                  "| csr s=0.9 ms | speedup |", "|---|---|---|---|---|---|---|---|---|---|"]
        lines += [f"| {tk} | {n} | {o}x{i} | {d:.3f} | {t:.3f} | {d / t:.2f}x | {t2:.3f} | {d / t2:.2f}x | {c:.3f} "
                  f"| {d / c:.2f}x |" for tk, n, o, i, d, t, t2, c in layer_rows]
    text = "\n".join(lines) + "\n"
    print(text)
    update_markdown_section(args.out, f"bench_sparse_inference_{dev}", text,
                            title="# Benchmarks\n\nEvery figure comes from the command shown with it.\n")
    print(f"[bench] wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

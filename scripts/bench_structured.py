#!/usr/bin/env python
"""Forward latency, parameters and checkpoint size of a structured-pruned, SLICED wav2vec 2.0 vs the
same model dense, measured in one run.

A wav2vec 2.0 BASE-sized ``Wav2VecCtc`` (95M parameters, random weights: dense kernels do not care
about values) is pruned with whole FFN neurons and attention heads (``granularity=neuron+head``,
each layer's heads and neurons ranked by mean |w|, ``ranking=tensor``: every layer keeps the same
widths) at each sparsity, then sliced as ``parp-fairseq-export --slice`` does (the same functions).
Rows: the stock dense model, the masked model (zeros multiplied: what training produces), the
sliced model. ``max |diff|`` is the largest logit difference sliced vs masked.

    python scripts/bench_structured.py                       # CPU, batch 1 x 4 s
    python scripts/bench_structured.py --device cuda         # GPU, fp16, batch 8 x 4 s
"""

import argparse
import logging
import platform
import statistics
import sys
import tempfile
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from bench_sparse_inference import _time  # noqa: E402
from bench_train_step import SIZES, _model, _task  # noqa: E402

from parp_fairseq.models.sliced import slice_encoder_layers  # noqa: E402
from parp_fairseq.pruning.structured import Granularity, collapse, slice_tensors  # noqa: E402
from parp_fairseq.reporting import update_markdown_section  # noqa: E402

PREFIX = "w2v_encoder.w2v_model."


def _build(task):
    torch.manual_seed(0)  # the same weights every time (weight-norm modules cannot be deep-copied)
    return _model(task, SIZES["base"][0], None).eval()


def _prune_and_slice(task, sparsity: float):
    """(masked model, sliced model, ffn widths, head counts) at ``sparsity`` of neurons and heads."""
    masked = _build(task)
    heads = masked.w2v_encoder.w2v_model.encoder.layers[0].self_attn.num_heads
    cut = Granularity("neuron+head", heads)
    sd = masked.state_dict()
    weights = {k[len(PREFIX):]: v for k, v in sd.items() if k.startswith(PREFIX) and cut.selects(k[len(PREFIX):])}
    masks = cut.magnitude(weights, sparsity, "tensor")
    with torch.no_grad():
        for n, m in masks.items():
            sd[PREFIX + n].mul_(m.to(sd[PREFIX + n].dtype))
    sets = cut.sets({n: list(m.shape) for n, m in masks.items()})
    groups = collapse(masks, sets)
    n_layers = len(masked.w2v_encoder.w2v_model.encoder.layers)
    ffn, hs = [0] * n_layers, [0] * n_layers
    for gs in sets:
        (ffn if gs.kind == "neuron" else hs)[int(gs.layer.rsplit(".", 1)[1])] = int(groups[gs.key].sum())
    sliced = _build(task)
    slice_encoder_layers(sliced.w2v_encoder.w2v_model.encoder, ffn, hs)
    sliced.load_state_dict(slice_tensors(sd, sets, groups, prefix=PREFIX))
    return masked, sliced.eval(), ffn, hs


def _params(model, only_layers: bool = False) -> int:
    mods = model.w2v_encoder.w2v_model.encoder.layers if only_layers else model
    return sum(p.numel() for p in mods.parameters())


def _size(model) -> int:
    with tempfile.TemporaryDirectory() as d:
        p = Path(d, "m.pt")
        torch.save(model.state_dict(), p)
        return p.stat().st_size


def main() -> int:
    logging.disable(logging.WARNING)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--sparsities", nargs="+", type=float, default=[0.3, 0.5, 0.7])
    ap.add_argument("--seconds", type=float, default=4.0, help="audio per utterance")
    ap.add_argument("--batch", type=int, default=None, help="default: 1 on CPU, 8 on GPU")
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2, help="CPU threads")
    ap.add_argument("--out", default=str(REPO / "BENCHMARKS.md"))
    args = ap.parse_args()
    dev = args.device
    if dev == "cpu":
        torch.set_num_threads(args.threads)
    batch = args.batch or (8 if dev == "cuda" else 1)
    dtype = torch.float16 if dev == "cuda" else torch.float32
    data = tempfile.mkdtemp()
    syms = [chr(c) for c in range(ord("a"), ord("z") + 1)] + ["|", "'"]
    Path(data, "dict.ltr.txt").write_text("".join(f"{s} 1\n" for s in syms))
    task = _task(data, ours=False)
    x = torch.randn(batch, int(16000 * args.seconds), generator=torch.Generator().manual_seed(0)).to(dev, dtype)
    dense = _build(task)
    n_dense, n_dense_layers, size_dense = _params(dense), _params(dense, True), _size(dense)
    dense = dense.to(dev, dtype)
    frames = dense.w2v_encoder.w2v_model(source=x, padding_mask=None, mask=False, features_only=True)["x"].shape[1]
    feats = torch.randn(batch, frames, dense.w2v_encoder.w2v_model.encoder.embedding_dim,
                        generator=torch.Generator().manual_seed(1)).to(dev, dtype)
    rows = []
    for s in args.sparsities:
        masked, sliced, ffn, hs = _prune_and_slice(task, s)
        n_sl, n_sl_layers, size_sl = _params(sliced), _params(sliced, True), _size(sliced)
        masked, sliced = masked.to(dev, dtype), sliced.to(dev, dtype)
        variants = [("dense", dense), ("masked", masked), ("sliced", sliced)]
        whole = [(n, (lambda m: lambda inp: m(source=inp, padding_mask=None)["encoder_out"])(m)) for n, m in variants]
        trf = [(n, (lambda m: lambda inp: m.w2v_encoder.w2v_model.encoder(inp, padding_mask=None)[0])(m))
               for n, m in variants]
        med, outs = {}, {}
        order = torch.Generator().manual_seed(1)
        for what, fns, inp in (("whole", whole, x), ("transformer", trf, feats)):
            times = {n: [] for n, _ in fns}
            for it in range(args.warmup + args.runs):
                for i in torch.randperm(len(fns), generator=order).tolist():
                    n, f = fns[i]
                    dt, out = _time(f, inp, dev)
                    if what == "whole":
                        outs[n] = out.float()
                    if it >= args.warmup:
                        times[n].append(dt)
            for n in times:
                med[what, n] = statistics.median(times[n]) * 1000
        diff = float((outs["sliced"] - outs["masked"]).abs().max())
        removed = 1 - n_sl_layers / n_dense_layers
        rows.append((s, removed, ffn[0], hs[0], med["whole", "dense"], med["whole", "sliced"],
                     med["whole", "dense"] / med["whole", "sliced"], med["transformer", "dense"],
                     med["transformer", "sliced"], med["transformer", "dense"] / med["transformer", "sliced"],
                     n_sl, size_sl, diff, med["whole", "masked"]))
        print(f"[bench] s={s}: {removed:.1%} of transformer parameters removed; whole forward dense "
              f"{rows[-1][4]:.1f} ms, sliced {rows[-1][5]:.1f} ms ({rows[-1][6]:.2f}x); transformer "
              f"{rows[-1][9]:.2f}x; max |diff| {diff:.1e}", flush=True)
        del masked, sliced
    where = (f"{torch.cuda.get_device_name()}, fp16, CUDA {torch.version.cuda}" if dev == "cuda" else
             f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, fp32")
    cmd = "python scripts/bench_structured.py " + " ".join(sys.argv[1:])
    unit = "GPU" if dev == "cuda" else "CPU"
    lines = [f"## Structured pruning, sliced model vs dense ({unit})", "",
             f"`{cmd}` on {where}, torch {torch.__version__}: wav2vec 2.0 BASE-sized CTC model "
             f"({n_dense / 1e6:.1f}M parameters, {n_dense_layers / 1e6:.1f}M in the 12 transformer layers; "
             f"{size_dense / 2**20:.0f} MiB state dict), batch {batch} x {args.seconds:g} s ({frames} frames), "
             f"median of {args.runs} forwards after {args.warmup} warm-up, variants interleaved. Each layer "
             "loses the same fraction of its heads and FFN neurons (`granularity=neuron+head`, "
             "`ranking=tensor`), then the model is sliced (`parp-fairseq-export --slice`). *whole* = the full "
             "forward (CNN feature encoder, positional conv, transformer, CTC head); *transformer* = the "
             "12 transformer layers alone on the same frames. The masked model (zeros in place, what "
             "training saves) runs as fast as dense, so it is not a row here; its whole-forward time is "
             "in the last column.", "",
             "| sparsity | transformer params removed | FFN width / heads per layer | dense ms | sliced ms | "
             "whole speedup | transformer dense ms | sliced ms | transformer speedup | params | state dict MiB "
             "| max abs logit diff | masked ms |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {s:g} | {rm:.1%} | {f} / {h} | {d:.1f} | {sl:.1f} | {sp:.2f}x | {td:.1f} | {ts:.1f} | {tsp:.2f}x "
              f"| {n / 1e6:.1f}M | {sz / 2**20:.0f} | {df:.1e} | {mm:.1f} |"
              for s, rm, f, h, d, sl, sp, td, ts, tsp, n, sz, df, mm in rows]
    update_markdown_section(args.out, f"bench_structured_{dev}", "\n".join(lines))
    print(f"wrote section bench_structured_{dev} of {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``parp-fairseq-decode``: decode a CTC checkpoint (ours, pruned or not, or stock ``wav2vec_ctc``)
on a fairseq manifest split to WER / CER (letters) or PER (phones).

    # Viterbi
    parp-fairseq-decode --checkpoint parp/checkpoint_best.pt --data DATA --split test --results-dir out/
    # KenLM lexicon beam search (flashlight-text), and a sweep of LM weight / word score
    parp-fairseq-decode --checkpoint ... --data DATA --split valid --decoder kenlm --lm lm/lm.bin \\
        --lexicon lm/lexicon.txt --beam 50 --lm-weight 0 1 2 --word-score -1 0 1 --results-dir out/

Writes into ``--results-dir``: ``hypo.word`` / ``ref.word`` and ``hypo.units`` / ``ref.units``
(one line per utterance, fairseq's ``(None-<id>)`` suffix), ``per_utt.tsv`` and ``summary.tsv``
(one row per decoder setting: WER, CER/PER, RTF) for the best setting, printed as a table.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import torch
from tqdm import tqdm

from ..decoding.decoders import FlashlightDecoder, ViterbiDecoder, tokens_to_words
from ..decoding.viterbi import edit_counts
from ..errors import run_cli
from ..fsutil import check_output_dir, output_dir


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {v}")
    return v


def checkpoint_fingerprint(path) -> Dict[str, object]:
    """What ties decode results to the checkpoint they came from: path, size and mtime."""
    st = os.stat(path)
    return {"checkpoint": os.path.abspath(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def decoder_inputs(lm=None, lexicon=None) -> Dict[str, object]:
    """The files a KenLM decode read besides the checkpoint (None for Viterbi), fingerprinted alike."""
    return {"lm": checkpoint_fingerprint(lm) if lm else None,
            "lexicon": checkpoint_fingerprint(lexicon) if lexicon else None}


def results_are_current(results_dir, checkpoint, lm=None, lexicon=None) -> bool:
    """True when ``results_dir`` holds a summary decoded from ``checkpoint`` (and, for KenLM, ``lm`` and
    ``lexicon``) as they are now: a retrained checkpoint or a rebuilt / other LM gets new results,
    never the stale ones."""
    import json

    src = Path(results_dir) / "source.json"
    if not (Path(results_dir) / "summary.tsv").exists() or not src.exists():
        return False
    try:
        rec = json.loads(src.read_text())
        return (rec.get("fingerprint") == checkpoint_fingerprint(checkpoint)
                and rec.get("decoder_inputs", decoder_inputs()) == decoder_inputs(lm, lexicon))
    except (ValueError, OSError):
        return False


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="parp-fairseq-decode", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--data", required=True, help="manifest dir with {split}.tsv, {split}.{labels}, dict")
    ap.add_argument("--split", default="test")
    ap.add_argument("--results-dir", required=True)
    ap.add_argument("--decoder", choices=("viterbi", "kenlm"), default="viterbi")
    ap.add_argument("--lm", help="KenLM ARPA or binary (word LM with --lexicon, unit LM without)")
    ap.add_argument("--lexicon", help="wav2letter lexicon; omit for lexicon-free decoding")
    ap.add_argument("--beam", type=int, default=50)
    ap.add_argument("--beam-size-token", type=int, default=None)
    ap.add_argument("--beam-threshold", type=float, default=25.0)
    ap.add_argument("--lm-weight", type=float, nargs="+", default=[2.0], help="several values: a sweep")
    ap.add_argument("--word-score", type=float, nargs="+", default=[-1.0], help="several values: a sweep")
    ap.add_argument("--sil-weight", type=float, default=0.0)
    ap.add_argument("--unk-weight", type=float, default=-math.inf)
    ap.add_argument("--nbest", type=int, default=1)
    ap.add_argument("--batch-size", type=_positive_int, default=8, help="utterances per forward batch (>= 1)")
    ap.add_argument("--cpu", action="store_true", help="stay on CPU even if CUDA is available")
    ap.add_argument("--sparse-kernels", choices=("csr", "2:4"), default=None,
                    help="run the pruned transformer linears on sparse kernels (csr: CPU/GPU; 2:4: GPU, "
                         "with --fp16, for ranking=2:4 models); see BENCHMARKS.md for when it pays off")
    ap.add_argument("--fp16", action="store_true", help="half-precision inference (GPU)")
    return ap


def _check_dictionary(task, data: str, model) -> None:
    labels = task.cfg.labels
    path = Path(data) / f"dict.{labels}.txt"
    if not path.is_file():
        raise FileNotFoundError(f"{path} missing: --data must hold the dictionary of the model's labels ({labels})")
    data_syms = [ln.split()[0] for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    d = task.target_dictionary
    model_syms = d.symbols[d.nspecial:]
    out_dim = getattr(getattr(model, "w2v_encoder", None), "proj", None)
    if data_syms != model_syms or (out_dim is not None and out_dim.out_features != len(d)):
        raise ValueError(f"dictionary mismatch: the checkpoint was trained with {len(model_syms)} {labels} "
                         f"symbols {model_syms[:8]}..., {path} has {len(data_syms)} {data_syms[:8]}...; "
                         f"decode with the data the model was finetuned on")


@torch.no_grad()
def emissions_of(model, task, split: str, batch_size: int, device) -> List[Dict]:
    """Per utterance: id, log-prob emissions (T x V, CPU float32), target tokens, audio seconds."""
    task.load_dataset(split)
    ds = task.datasets[split]
    d = task.target_dictionary
    out = []
    t0 = time.perf_counter()
    # fairseq's own batching (length-sorted, as fairseq-generate with --batch-size): padding changes
    # wav2vec 2.0 outputs (group norm over time), so identical batches give identical hypotheses.
    # required_batch_size_multiple=1: with fairseq-generate's default of 8, fairseq's batch_by_size
    # silently drops the last len % 8 utterances of a split (fairseq-generate needs
    # --required-batch-size-multiple 1 to score every utterance, and then matches this command).
    itr = task.get_batch_iterator(dataset=ds, max_tokens=None, max_sentences=batch_size,
                                  max_positions=(sys.maxsize, sys.maxsize), required_batch_size_multiple=1,
                                  seed=1, num_shards=1, shard_id=0, num_workers=0).next_epoch_itr(shuffle=False)
    dtype = next(model.parameters()).dtype  # float inputs follow the model (--fp16)
    for s in tqdm(itr, desc=f"forward {split}", unit="batch", file=sys.stderr, leave=False):
        net_input = {k: (v.to(device, dtype) if torch.is_tensor(v) and v.is_floating_point()
                         else v.to(device) if torch.is_tensor(v) else v) for k, v in s["net_input"].items()}
        with torch.inference_mode():
            net_out = model(**net_input)
            lp = model.get_normalized_probs(net_out, log_probs=True).transpose(0, 1).float().cpu()  # B x T x V
        pad = net_out["padding_mask"]
        for b in range(lp.size(0)):
            T = lp.size(1) if pad is None else int((~pad[b]).sum())
            tgt = s["target"][b]
            n = int(s["net_input"]["source"].size(1) if s["net_input"]["padding_mask"] is None
                    else (~s["net_input"]["padding_mask"][b]).sum())
            out.append({"id": int(s["id"][b]), "emissions": lp[b, :T].contiguous(),
                        "target": tgt[tgt != d.pad()].tolist(), "seconds": n / task.cfg.sample_rate})
    out.sort(key=lambda u: u["id"])
    if len(out) != len(ds):
        raise RuntimeError(f"decoded {len(out)} of the {len(ds)} utterances of {split!r}: fairseq's batching "
                           "dropped some; nothing was scored")
    for u in out:
        u["forward_seconds"] = (time.perf_counter() - t0) / len(out)
    return out


def read_summary(results_dir) -> List[Dict[str, str]]:
    """The rows of a ``summary.tsv`` this command wrote (one per decoder setting), as dicts."""
    hdr, *rows = [ln.split("\t") for ln in (Path(results_dir) / "summary.tsv").read_text().splitlines()]
    return [dict(zip(hdr, row)) for row in rows]


def run_decoder(decoder, utts: List[Dict], d) -> Dict:
    units_h, units_r, words_h, words_r = [], [], [], []
    t0 = time.perf_counter()
    for u in tqdm(utts, desc="search", unit="utt", file=sys.stderr, leave=False):
        hyp = decoder.decode(u["emissions"].unsqueeze(0))[0][0]
        ht = [d[int(t)] for t in hyp["tokens"]]
        rt = [d[t] for t in u["target"]]
        hw, rw = hyp["words"], tokens_to_words(d, u["target"])
        units_h.append(ht), units_r.append(rt), words_h.append(hw), words_r.append(rw)
    search = time.perf_counter() - t0
    ue, un = edit_counts([[x for x in h if x != "|"] for h in units_h], [[x for x in r if x != "|"] for r in units_r])
    we, wn = edit_counts(words_h, words_r)
    audio = sum(u["seconds"] for u in utts)
    return {"units_h": units_h, "units_r": units_r, "words_h": words_h, "words_r": words_r,
            "uer": 100.0 * ue / max(un, 1), "wer": 100.0 * we / max(wn, 1), "n_utts": len(utts),
            "rtf_search": search / audio, "rtf_forward": sum(u["forward_seconds"] for u in utts) / audio}


def write_results(res: Dict, utts: List[Dict], out: Path, has_words: bool) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name, rows in (("hypo.units", res["units_h"]), ("ref.units", res["units_r"]),
                       ("hypo.word", res["words_h"]), ("ref.word", res["words_r"])):
        with open(out / name, "w", encoding="utf-8") as f:
            for u, r in zip(utts, rows):
                f.write(f"{' '.join(r)} (None-{u['id']})\n")
    with open(out / "per_utt.tsv", "w", encoding="utf-8") as f:
        f.write("id\tref\thyp\tunit_errors\tref_units\n")
        for u, rw, hw, rt, ht in zip(utts, res["words_r"], res["words_h"], res["units_r"], res["units_h"]):
            e, n = edit_counts([[x for x in ht if x != "|"]], [[x for x in rt if x != "|"]])
            f.write(f"{u['id']}\t{' '.join(rw)}\t{' '.join(hw)}\t{e}\t{n}\n")


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(format="%(asctime)s | %(levelname)s | %(name)s | %(message)s", level=logging.WARNING)
    return run_cli("parp-fairseq-decode", lambda: _main(args))


def _main(args) -> int:
    import parp_fairseq  # noqa: F401  (registers our model/task; allow-lists fairseq globals)
    from fairseq import checkpoint_utils

    from ..checkpoints import PRETRAINED, checkpoint_kind, load_checkpoint

    # every input is checked before the (long) acoustic forward pass
    if args.decoder == "kenlm" and not args.lm:
        raise ValueError("--decoder kenlm needs --lm (KenLM ARPA/binary); build one with parp-fairseq-lm")
    for opt, path in (("--lm", args.lm), ("--lexicon", args.lexicon)):
        if path and not os.path.isfile(path):
            raise FileNotFoundError(f"{opt} {path} does not exist; build the LM and lexicon with parp-fairseq-lm")
    if args.decoder == "viterbi" and (args.lm or args.lexicon):
        raise ValueError("--lm / --lexicon are used by --decoder kenlm only; add --decoder kenlm or drop them")
    if not os.path.isfile(os.path.join(args.data, f"{args.split}.tsv")):
        raise FileNotFoundError(f"{args.data}/{args.split}.tsv missing: no manifest for split {args.split!r}")
    out = Path(args.results_dir)
    check_output_dir(out, "parp-fairseq-decode")  # refuse a folder that is not ours before any work
    state = load_checkpoint(args.checkpoint, arg_overrides={"data": args.data})
    if checkpoint_kind(state) == PRETRAINED:
        raise ValueError(f"{args.checkpoint} is a pretrained (not finetuned) checkpoint: it has no CTC head")
    models, _, task = checkpoint_utils.load_model_ensemble_and_task([args.checkpoint], state=state)
    del state
    device = torch.device("cuda" if torch.cuda.is_available() and not args.cpu else "cpu")
    model = models[0].eval().to(device)
    if args.fp16:
        model = model.half()
    if args.sparse_kernels:
        from ..sparse_kernels import sparsify_linears

        done = sparsify_linears(model, args.sparse_kernels)
        print(f"[decode] {len(done)} linear layers on {args.sparse_kernels} kernels "
              f"(mean sparsity {sum(done.values()) / len(done):.3f})", flush=True)
    _check_dictionary(task, args.data, model)
    d = task.target_dictionary
    task.allow_unknown_labels = True  # test transcripts may hold symbols training never saw: errors, not a crash
    settings = [(None, None)] if args.decoder == "viterbi" else list(itertools.product(args.lm_weight, args.word_score))

    def make_decoder(lmw, ws):
        if lmw is None:
            return ViterbiDecoder(d)
        return FlashlightDecoder(d, args.lm, args.lexicon, beam=args.beam, beam_size_token=args.beam_size_token,
                                 beam_threshold=args.beam_threshold, lm_weight=lmw, word_score=ws,
                                 unk_weight=args.unk_weight, sil_weight=args.sil_weight, nbest=args.nbest)

    first = make_decoder(*settings[0])  # loads the LM and lexicon: a bad file fails now, not after the forward
    print(f"[decode] {args.checkpoint} on {args.data}/{args.split} ({device})", flush=True)
    utts = emissions_of(model, task, args.split, args.batch_size, device)
    has_words = "|" in d.indices
    unit_name = "CER" if task.cfg.labels == "ltr" else "PER" if task.cfg.labels == "phn" else "UER"
    rows, best = [], None
    for lmw, ws in settings:
        res = run_decoder(first if (lmw, ws) == settings[0] else make_decoder(lmw, ws), utts, d)
        rows.append((args.decoder, lmw, ws, res))
        key = res["wer"] if has_words else res["uer"]
        if best is None or key < best[0]:
            best = (key, res, lmw, ws)
    header = ["decoder", "lm_weight", "word_score", "WER", unit_name, "utts", "RTF_forward", "RTF_search"]
    lines = ["\t".join(header)]
    for dec, lmw, ws, r in rows:
        lines.append("\t".join([dec, "-" if lmw is None else f"{lmw:g}", "-" if ws is None else f"{ws:g}",
                                f"{r['wer']:.2f}" if has_words else "-", f"{r['uer']:.2f}", str(r["n_utts"]),
                                f"{r['rtf_forward']:.4f}", f"{r['rtf_search']:.4f}"]))
    import json

    with output_dir(out, "parp-fairseq-decode") as tmp:  # all result files appear together, or none
        write_results(best[1], utts, tmp, has_words)
        (tmp / "summary.tsv").write_text("\n".join(lines) + "\n")
        (tmp / "source.json").write_text(json.dumps(
            {"fingerprint": checkpoint_fingerprint(args.checkpoint), "data": os.path.abspath(args.data),
             "split": args.split, "decoder": args.decoder,
             "decoder_inputs": decoder_inputs(args.lm, args.lexicon)}, indent=1) + "\n")
    print("\n".join(lines))
    _, r, lmw, ws = best
    tag = "viterbi" if lmw is None else f"kenlm lm_weight={lmw:g} word_score={ws:g}"
    print(f"[decode] best: {tag}: " + (f"WER {r['wer']:.2f} " if has_words else "")
          + f"{unit_name} {r['uer']:.2f} on {r['n_utts']} utterances -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

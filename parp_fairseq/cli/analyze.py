"""``parp-fairseq-analyze``: compare pruning masks (languages, methods, seeds) - tables and plots.

    parp-fairseq-analyze --masks nl=exp/nl/omp_0.5.pt es=exp/es/omp_0.5.pt ru=exp/ru/omp_0.5.pt \
        --phones nl=data/small/nl/dict.phn.txt es=data/small/es/dict.phn.txt ru=data/small/ru/dict.phn.txt \
        --out exp/analysis

Inputs are mask files (``parp-fairseq-mask``) or pruned checkpoints (their masks are read). Writes to
``--out`` (TSV + markdown + PNG):

* ``iou.*``, ``overlap.*``: pairwise IoU / overlap matrices and heatmaps, with the same matrices for
  random masks of the same per-tensor sparsity (``random_iou.*``) - the baseline of every figure;
* ``layer_sparsity.*``: sparsity per transformer layer for every mask (bars: which layers are pruned most);
* ``layer_cosine.*``: per-layer cosine similarity of every pair of masks (and of their random twins);
* with ``--phones``: the Pearson correlation over language pairs between mask IoU and phonetic
  similarity (Jaccard of the phone inventories), for the masks and for the random baseline, overall
  and per transformer layer (S3-Router supplement Table 2: ``phonetic_correlation_layers.tsv``), with a
  Mantel permutation p-value (languages relabelled; language pairs are not independent samples);
* ``mpi_vs_omp.tsv``: where both an MPI and an OMP mask are given (their files record the method),
  the IoU of each MPI-OMP pair next to the random-mask IoU - PARP's premise that the pretrained
  model's magnitude mask is already close to the finetuned one's;
* ``summary.md``: all tables in one page.

With ``--by-seed`` the masks are named ``CONDITION_SEED`` (``en_1 en_2 en_3 nl_1 ...``): each seed's masks
get the analysis above (``seed<N>/``), and ``seeds_cosine.{tsv,png}``, ``seeds_phonetic_correlation.{tsv,png}``
and ``seeds_summary.md`` give mean +- std over seeds of the per-layer cosine of cross-condition pairs, of
the same condition's masks from other seeds (the floor that the seed alone sets) and of random masks, and
of the Pearson r with phonetic similarity (``--phones`` keyed by CONDITION)::

    parp-fairseq-analyze --by-seed --out exp/s3r_masks --masks en_1=exp/w/en/s3router_s0.1_seed1/checkpoint_last.pt \
        en_2=... nl_1=... nl_2=... --phones en=data/full/en/dict.phn.txt nl=data/full/nl/dict.phn.txt

With ``--sparsities 0.1 0.3 ... 0.9`` the inputs are FINETUNED checkpoints instead, and their OMP masks at
each sparsity are compared within a condition (other seeds) and across conditions (other languages),
with ``--mpi PRETRAINED`` also against the pretrained model's MPI mask, next to the random-mask IoU:
``iou_vs_sparsity.{tsv,md,png}`` and ``iou_pairs.tsv`` (PARP Observation 1, Fig. 10-27)::

    parp-fairseq-analyze --sparsities 0.1 0.3 0.5 0.7 0.9 --mpi PRETRAINED.pt --out exp/iou_vs_s \
        --masks en_1=exp/w/en/dense_seed1/checkpoint_last.pt en_2=... nl_real_1=... nl_real_2=...
"""

import argparse
import os
import re
import sys
from pathlib import Path
from typing import Dict, List, Optional

from ..errors import CheckpointError, run_cli
from ..fsutil import check_output_dir, output_dir
from ..pruning import analysis as A


def _load(path: str) -> Dict:
    """The masks of a mask file or pruned checkpoint, and the method that made them."""
    from ..pruning.maskfile import load_mask_file

    try:
        mf = load_mask_file(path)
        return dict(mf.masks), str(mf.method)
    except CheckpointError as e:
        if "pickles" in str(e):  # unsafe file: do not try it again as a checkpoint
            raise
        from ..checkpoints import checkpoint_masks, load_checkpoint, pruning_cfg

        state = load_checkpoint(path)
        masks = checkpoint_masks(state["model"])
        if not masks:
            raise ValueError(f"{path} is neither a mask file nor a pruned checkpoint (it has no masks)")
        return masks, str(pruning_cfg(state).get("method", ""))


def _pairs(items: List[str], what: str) -> Dict[str, str]:
    out = {}
    for it in items:
        name, sep, path = it.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"{what} must be NAME=PATH, got {it!r}")
        if name in out:
            raise ValueError(f"{what}: name {name!r} given twice")
        out[name] = path
    return out


def _table(names: List[str], matrix: List[List[float]], fmt: str = "{:.4f}") -> List[str]:
    tsv = ["\t" + "\t".join(names)] + [n + "\t" + "\t".join(fmt.format(v) for v in row) for n, row in zip(names, matrix)]
    return tsv


def _md(names: List[str], matrix: List[List[float]], corner: str = "") -> str:
    lines = [f"| {corner} | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    lines += [f"| {n} | " + " | ".join(f"{v:.3f}" for v in row) + " |" for n, row in zip(names, matrix)]
    return "\n".join(lines)


def _heatmap(path: Path, names: List[str], matrix: List[List[float]], title: str) -> None:
    from ..reporting import pyplot

    plt = pyplot()

    fig, ax = plt.subplots(figsize=(1.0 + 0.7 * len(names), 0.8 + 0.6 * len(names)))
    im = ax.imshow(matrix, cmap="viridis", vmin=0, vmax=1)
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    for i, row in enumerate(matrix):
        for j, v in enumerate(row):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", color="w" if v < 0.6 else "k", fontsize=8)
    fig.colorbar(im, ax=ax, fraction=0.046)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _bars(path: Path, layers: List[str], series: Dict[str, List[float]], ylabel: str, title: str) -> None:
    from ..reporting import pyplot

    plt = pyplot()

    fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(layers) * max(1, len(series)) ** 0.5), 3.5))
    w = 0.8 / max(1, len(series))
    for i, (name, vals) in enumerate(series.items()):
        ax.bar([j + i * w for j in range(len(layers))], vals, w, label=name)
    ax.set_xticks([j + w * (len(series) - 1) / 2 for j in range(len(layers))], layers, rotation=45, ha="right")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, ncol=min(4, len(series)))
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _inventories(names: List[str], phones: Dict[str, str], how: str) -> Dict[str, set]:
    """The phone inventory (first column of a fairseq dict.phn.txt) of every name."""
    missing = [n for n in names if n not in phones]
    if missing:
        raise ValueError(f"--phones has no inventory for {missing}; give {how}")
    inv = {}
    for n in names:
        p = Path(phones[n])
        if not p.is_file():
            raise FileNotFoundError(f"phone inventory {p} does not exist")
        inv[n] = {ln.split()[0] for ln in p.read_text(encoding="utf-8").splitlines() if ln.strip()}
    return inv


def analyze(masks: Dict[str, Dict], out: Path, phones: Optional[Dict[str, str]] = None, seed: int = 0,
            methods: Optional[Dict[str, str]] = None, rand: Optional[Dict[str, Dict]] = None,
            cosines: Optional[Dict[tuple, tuple]] = None) -> str:
    """Compare masks pairwise (IoU, overlap, per-layer sparsity and cosine, MPI vs OMP, phonetic correlation)
    next to random masks of the same per-tensor sparsity: ``rand`` (``{name: mask}``, e.g. the ones
    :func:`by_seed` already drew) or drawn here from ``seed``. ``cosines``: per-layer cosines already computed
    (``{(a, b): (layer_cosine(masks[a], masks[b]), layer_cosine(rand[a], rand[b]))}``), reused, not recomputed."""
    names = list(masks)
    methods = methods or {}
    if len(names) < 2:
        raise ValueError("give at least two masks to compare")
    rand = rand or {n: A.random_like(m, seed + i) for i, (n, m) in enumerate(masks.items())}
    ious, ovl, rious = A.pairwise(masks, A.iou), A.pairwise(masks, A.overlap), A.pairwise(rand, A.iou)
    keep = {n: A.keep_fraction(m) for n, m in masks.items()}
    expected = [[A.random_iou(keep[a], keep[b]) if a != b else 1.0 for b in names] for a in names]
    lsp = {n: A.layer_sparsity(m) for n, m in masks.items()}
    layers = list(next(iter(lsp.values())))
    md = ["# Mask analysis", "", "Masks: " + ", ".join(f"`{n}` (sparsity {1 - keep[n]:.4f})" for n in names), "",
          "## IoU of kept weights", "", _md(names, ious), "",
          "Random masks with the same per-tensor sparsity (measured):", "", _md(names, rious), "",
          "Random masks, expected value k_a k_b / (k_a + k_b - k_a k_b):", "", _md(names, expected), "",
          "## Overlap (kept by both / all parameters)", "", _md(names, ovl), "",
          "## Sparsity per layer", "",
          "| layer | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    md += [f"| {lay} | " + " | ".join(f"{lsp[n][lay]:.3f}" for n in names) + " |" for lay in layers]
    cos_rows = []
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            c, rc = (cosines or {}).get((a, b)) or (A.layer_cosine(masks[a], masks[b]), A.layer_cosine(rand[a], rand[b]))
            cos_rows.append((f"{a}-{b}", c, rc))
    clayers = list(cos_rows[0][1])
    md += ["", "## Cosine similarity per layer (masks as 0/1 vectors; random twins in brackets)", "",
           "| pair | " + " | ".join(clayers) + " |", "|---" * (len(clayers) + 1) + "|"]
    md += [f"| {p} | " + " | ".join(f"{c[k]:.3f} ({rc[k]:.3f})" for k in clayers) + " |" for p, c, rc in cos_rows]
    mpi_omp = [(a, b) for a in names for b in names if methods.get(a) == "mpi" and methods.get(b) == "omp"]
    mo_rows = []
    for a, b in mpi_omp:
        i, j = names.index(a), names.index(b)
        mo_rows.append((a, b, ious[i][j], rious[i][j], expected[i][j]))
    if mo_rows:
        md += ["", "## MPI vs OMP (PARP's premise: the pretrained magnitude mask is close to the finetuned one's)", "",
               "| MPI mask | OMP mask | IoU | random IoU (measured) | random IoU (expected) | IoU / random |",
               "|---|---|---|---|---|---|"]
        md += [f"| {a} | {b} | {x:.4f} | {r:.4f} | {e:.4f} | {x / e:.2f}x |" for a, b, x, r, e in mo_rows]
    corr = layer_corr = None
    if phones:
        inv = _inventories(names, phones, "NAME=dict.phn.txt for every mask")
        psim = [[A.jaccard(inv[a], inv[b]) for b in names] for a in names]
        x = A.upper_pairs(psim)
        r_mask = A.pearson(x, A.upper_pairs(ious)) if len(x) >= 2 else float("nan")
        r_rand = A.pearson(x, A.upper_pairs(rious)) if len(x) >= 2 else float("nan")
        p_mask = A.mantel_p(psim, [ious]) if len(names) >= 3 else float("nan")
        corr = (r_mask, r_rand, len(x), p_mask)
        md += ["", "## Mask similarity vs phonetic similarity", "",
               "Phonetic similarity = Jaccard index of the phone inventories (dict.phn.txt):", "", _md(names, psim), "",
               f"Pearson r over {len(x)} language pairs: mask IoU vs phonetic similarity = **{r_mask:.3f}**; "
               f"random-mask baseline = {r_rand:.3f}; Mantel permutation p = {p_mask:.3g} (one-sided: the chance "
               f"that relabelling the languages gives an r this high)."]
        if len(x) >= 2:  # per layer (S3-Router supplement Table 2)
            pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1:]]
            liou = {p: A.layer_iou(masks[p[0]], masks[p[1]]) for p in pairs}
            lrand = {p: A.layer_iou(rand[p[0]], rand[p[1]]) for p in pairs}
            layer_corr = [(lay, A.pearson(x, [liou[p][lay] for p in pairs]),
                           A.pearson(x, [lrand[p][lay] for p in pairs])) for lay in liou[pairs[0]]]
            md += ["", "Per layer (IoU of that layer's kept weights vs phonetic similarity):", "",
                   "| layer | Pearson r (masks) | Pearson r (random masks) |", "|---|---|---|"]
            md += [f"| {lay} | {r:.3f} | {rr:.3f} |" for lay, r, rr in layer_corr]
    text = "\n".join(md) + "\n"
    with output_dir(out, "parp-fairseq-analyze") as tmp:
        for fname, mat in (("iou", ious), ("overlap", ovl), ("random_iou", rious)):
            (tmp / f"{fname}.tsv").write_text("\n".join(_table(names, mat)) + "\n")
        _heatmap(tmp / "iou.png", names, ious, "IoU of kept weights")
        _heatmap(tmp / "random_iou.png", names, rious, "IoU of random masks (same sparsity per tensor)")
        _heatmap(tmp / "overlap.png", names, ovl, "overlap = kept by both / all params")
        (tmp / "layer_sparsity.tsv").write_text(
            "layer\t" + "\t".join(names) + "\n"
            + "".join(f"{lay}\t" + "\t".join(f"{lsp[n][lay]:.4f}" for n in names) + "\n" for lay in layers))
        _bars(tmp / "layer_sparsity.png", layers, {n: [lsp[n][lay] for lay in layers] for n in names},
              "sparsity (fraction removed)", "sparsity per layer")
        (tmp / "layer_cosine.tsv").write_text(
            "pair\tmasks\t" + "\t".join(clayers) + "\n"
            + "".join(f"{p}\t{kind}\t" + "\t".join(f"{d[k]:.4f}" for k in clayers) + "\n"
                      for p, c, rc in cos_rows for kind, d in (("pruned", c), ("random", rc))))
        _bars(tmp / "layer_cosine.png", clayers, {p: [c[k] for k in clayers] for p, c, _ in cos_rows},
              "cosine similarity", "per-layer mask cosine similarity (random twins ~ keep fraction)")
        if corr is not None:
            (tmp / "phonetic_correlation.tsv").write_text(
                f"pairs\tpearson_mask_iou\tpearson_random_iou\tmantel_p\n{corr[2]}\t{corr[0]:.4f}\t{corr[1]:.4f}\t"
                f"{corr[3]:.4g}\n")
        if layer_corr is not None:
            (tmp / "phonetic_correlation_layers.tsv").write_text(
                "layer\tpearson_mask_iou\tpearson_random_iou\n"
                + "".join(f"{lay}\t{r:.4f}\t{rr:.4f}\n" for lay, r, rr in layer_corr))
        if mo_rows:
            (tmp / "mpi_vs_omp.tsv").write_text(
                "mpi\tomp\tiou\trandom_iou_measured\trandom_iou_expected\n"
                + "".join(f"{a}\t{b}\t{x:.4f}\t{r:.4f}\t{e:.4f}\n" for a, b, x, r, e in mo_rows))
        (tmp / "summary.md").write_text(text)
    return text


def split_seeds(names: List[str]) -> Dict[str, Dict[int, str]]:
    """``{condition: {seed: name}}`` of mask names ``CONDITION_SEED`` (``en_1``, ``nl_real_2``); every
    condition must have a mask for every seed given."""
    out: Dict[str, Dict[int, str]] = {}
    for n in names:
        m = re.fullmatch(r"(.+)_(\d+)", n)
        if not m:
            raise ValueError(f"--by-seed: mask name {n!r} has no _SEED suffix; name the masks CONDITION_SEED, "
                             f"e.g. en_1=... en_2=... nl_1=...")
        out.setdefault(m.group(1), {})[int(m.group(2))] = n
    seeds = sorted({s for by in out.values() for s in by})
    missing = [f"{c}_{s}" for c, by in out.items() for s in seeds if s not in by]
    if missing:
        raise ValueError(f"--by-seed: every condition needs a mask for every seed; missing {', '.join(missing)}")
    if len(out) < 2:
        raise ValueError(f"--by-seed: give masks of at least two conditions (got only {next(iter(out))!r})")
    return out


def by_seed(masks: Dict[str, Dict], out: Path, phones: Optional[Dict[str, str]] = None, seed: int = 0,
            methods: Optional[Dict[str, str]] = None) -> str:
    """Masks of several conditions (languages) x seeds, named ``CONDITION_SEED``, compared within each
    seed and summarised as mean +- std over seeds (S3-Router supplement Fig. 6 and Table 2, with error bars):

    * per-layer cosine of every cross-condition pair of one seed, next to the same condition's masks of
      two DIFFERENT seeds (the floor: what the seed alone changes; cross-condition similarity above it
      is not language-specific) and random masks of the same per-tensor sparsity;
    * with ``phones`` (``{condition: dict.phn.txt}``): per seed, the Pearson r over condition pairs of mask
      IoU vs phonetic similarity (Jaccard of the phone inventories), overall and per layer, and the same
      for the random masks; then mean +- std of r over seeds.

    Writes ``seeds_cosine.{tsv,png}``, ``seeds_phonetic_correlation.{tsv,png}`` (with ``phones``),
    ``seeds_summary.md`` and every seed's full analysis (:func:`analyze`) under ``seed<N>/``."""
    from ..reporting import mean_std, pyplot

    groups = split_seeds(list(masks))
    conds = list(groups)
    seeds = sorted(next(iter(groups.values())))
    psim = None
    if phones:
        inv = _inventories(conds, phones, "CONDITION=dict.phn.txt with --by-seed")
        psim = {(a, b): A.jaccard(inv[a], inv[b]) for i, a in enumerate(conds) for b in conds[i + 1:]}
    pairs = [(a, b) for i, a in enumerate(conds) for b in conds[i + 1:]]
    rand = {n: A.random_like(m, seed + i) for i, (n, m) in enumerate(masks.items())}

    def cos(x: Dict, y: Dict, layers: Optional[Dict[str, float]] = None) -> Dict[str, float]:
        d = dict(layers if layers is not None else A.layer_cosine(x, y))
        d["all"] = A.cosine(x, y)
        return d

    # cosine rows: (kind, pair, {layer: value}) - one per seed (cross / random) or per seed pair (same);
    # seed_cos[s]: the per-layer cosines of seed s's pairs, handed on to that seed's own analysis
    rows, seed_cos = [], {}
    for s in seeds:
        for a, b in pairs:
            ma, mb, ra, rb = masks[groups[a][s]], masks[groups[b][s]], rand[groups[a][s]], rand[groups[b][s]]
            c, rc = seed_cos.setdefault(s, {})[(a, b)] = (A.layer_cosine(ma, mb), A.layer_cosine(ra, rb))
            rows.append(("cross", f"{a}-{b}", cos(ma, mb, c)))
            rows.append(("random", f"{a}-{b}", cos(ra, rb, rc)))
    for c in conds:
        for i, s in enumerate(seeds):
            for t in seeds[i + 1:]:
                rows.append(("same", f"{c}-{c}", cos(masks[groups[c][s]], masks[groups[c][t]])))
    layers = list(rows[0][2])
    labels = {"cross": "other condition, same seed", "same": "same condition, other seed",
              "random": "random masks (same sparsity)"}
    kinds = [k for k in labels if any(r[0] == k for r in rows)]
    agg = {(k, lay): mean_std([r[2][lay] for r in rows if r[0] == k]) + (sum(r[0] == k for r in rows),)
           for k in kinds for lay in layers}
    per_pair = {}
    for k, pair, d in rows:
        per_pair.setdefault((k, pair), []).append(d)
    md = ["# Masks over seeds", "",
          f"Conditions: {', '.join(conds)}; seeds: {', '.join(map(str, seeds))} "
          f"(each seed's full analysis: `seed<N>/summary.md`).", "",
          "## Per-layer cosine similarity of the masks (0/1 vectors), mean +- std (n = pairs x seeds)", "",
          "| pairs | " + " | ".join(layers) + " |", "|---" * (len(layers) + 1) + "|"]
    md += [f"| {labels[k]} (n={agg[(k, layers[0])][2]}) | "
           + " | ".join(f"{agg[(k, lay)][0]:.4f} +- {agg[(k, lay)][1]:.4f}" for lay in layers) + " |" for k in kinds]
    md += ["", "Per pair (mean +- std over seeds; same-condition rows over seed pairs):", "",
           "| pair | kind | " + " | ".join(layers) + " |", "|---" * (len(layers) + 2) + "|"]
    for (k, pair), ds in per_pair.items():
        if k == "random":
            continue
        md.append(f"| {pair} | {k} | " + " | ".join("{:.4f} +- {:.4f}".format(*mean_std([d[lay] for d in ds]))
                                                  for lay in layers) + " |")
    corr = []  # (layer, mean r masks, std, mean r random, std, seeds)
    if psim is not None and len(pairs) >= 2:
        x = [psim[p] for p in pairs]
        per_seed, mats = {}, {}  # mats[layer]: every seed's IoU matrix over the conditions (Mantel test)
        idx = {c: i for i, c in enumerate(conds)}
        xmat = [[1.0 if a == b else psim[(a, b) if idx[a] < idx[b] else (b, a)] for b in conds] for a in conds]
        for s in seeds:
            liou = {p: dict(A.layer_iou(masks[groups[p[0]][s]], masks[groups[p[1]][s]])) for p in pairs}
            lrand = {p: dict(A.layer_iou(rand[groups[p[0]][s]], rand[groups[p[1]][s]])) for p in pairs}
            for p in pairs:
                liou[p]["all"] = A.iou(masks[groups[p[0]][s]], masks[groups[p[1]][s]])
                lrand[p]["all"] = A.iou(rand[groups[p[0]][s]], rand[groups[p[1]][s]])
            per_seed[s] = {lay: (A.pearson(x, [liou[p][lay] for p in pairs]), A.pearson(x, [lrand[p][lay] for p in pairs]))
                           for lay in layers}
            for lay in layers:
                m = [[1.0] * len(conds) for _ in conds]
                for a, b in pairs:
                    m[idx[a]][idx[b]] = m[idx[b]][idx[a]] = liou[(a, b)][lay]
                mats.setdefault(lay, []).append(m)
        for lay in layers:
            rm = mean_std([per_seed[s][lay][0] for s in seeds])
            rr = mean_std([per_seed[s][lay][1] for s in seeds])
            corr.append((lay, *rm, *rr, len(seeds), A.mantel_p(xmat, mats[lay], seed=seed)))
        md += ["", "## Mask similarity vs phonetic similarity (Pearson r over condition pairs, mean +- std over seeds)",
               "", f"{len(pairs)} condition pairs; phonetic similarity = Jaccard of the phone inventories; "
               "r of each seed's mask IoU (and its random masks' IoU) with it; Mantel p: the fraction of relabellings "
               "of the conditions whose mean r over seeds is at least the observed one:", "",
               "| layer | r (masks) | r (random masks) | seeds | Mantel p |", "|---|---|---|---|---|"]
        md += [f"| {lay} | {m_:.3f} +- {sd:.3f} | {m2:.3f} +- {sd2:.3f} | {n} | {pv:.3g} |"
               for lay, m_, sd, m2, sd2, n, pv in corr]
        md += ["", "Per seed (all layers): " + ", ".join(f"seed {s}: r = {per_seed[s]['all'][0]:.3f}" for s in seeds)]
    text = "\n".join(md) + "\n"
    plt = pyplot()
    with output_dir(out, "parp-fairseq-analyze") as tmp:
        for s in seeds:
            analyze({c: masks[groups[c][s]] for c in conds}, tmp / f"seed{s}", phones, seed,
                    {c: (methods or {}).get(groups[c][s], "") for c in conds},
                    rand={c: rand[groups[c][s]] for c in conds},  # the random twins of the summary
                    cosines=seed_cos[s])
        (tmp / "seeds_cosine.tsv").write_text("kind\tpair\tlayer\tmean\tstd\tn\n" + "".join(
            f"{k}\t{pair}\t{lay}\t{m_:.5f}\t{sd:.5f}\t{len(ds)}\n" for (k, pair), ds in per_pair.items()
            for lay in layers for m_, sd in [mean_std([d[lay] for d in ds])]) + "".join(
            f"{k}\tall\t{lay}\t{agg[(k, lay)][0]:.5f}\t{agg[(k, lay)][1]:.5f}\t{agg[(k, lay)][2]}\n"
            for k in kinds for lay in layers))
        fig, ax = plt.subplots(figsize=(max(6, 0.8 * len(layers)), 3.8))
        for i, k in enumerate(kinds):
            xs = [j + (i - 1) * 0.08 for j in range(len(layers))]
            ax.errorbar(xs, [agg[(k, lay)][0] for lay in layers], yerr=[agg[(k, lay)][1] for lay in layers],
                        marker="o", capsize=3, ls="--" if k == "random" else "-", label=labels[k])
        ax.set_xticks(range(len(layers)), layers, rotation=45, ha="right")
        ax.set_ylabel("mask cosine similarity")
        ax.set_title(f"per-layer mask cosine, mean +- std over pairs x seeds ({len(seeds)} seeds)", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(tmp / "seeds_cosine.png", dpi=110)
        plt.close(fig)
        if corr:
            (tmp / "seeds_phonetic_correlation.tsv").write_text(
                "layer\tpearson_mask_iou\tstd\tpearson_random_iou\tstd_random\tseeds\tpairs\tmantel_p\n" + "".join(
                    f"{lay}\t{m_:.4f}\t{sd:.4f}\t{m2:.4f}\t{sd2:.4f}\t{n}\t{len(pairs)}\t{pv:.4g}\n"
                    for lay, m_, sd, m2, sd2, n, pv in corr))
            fig, ax = plt.subplots(figsize=(max(6, 0.8 * len(layers)), 3.5))
            xs = range(len(corr))
            ax.bar([j - 0.2 for j in xs], [c[1] for c in corr], 0.4, yerr=[c[2] for c in corr], capsize=3,
                   label="masks")
            ax.bar([j + 0.2 for j in xs], [c[3] for c in corr], 0.4, yerr=[c[4] for c in corr], capsize=3,
                   label="random masks")
            ax.axhline(0, color="k", lw=0.8)
            ax.set_xticks(list(xs), [c[0] for c in corr], rotation=45, ha="right")
            ax.set_ylabel("Pearson r (mask IoU vs phone Jaccard)")
            ax.set_title(f"{len(pairs)} condition pairs, mean +- std over {len(seeds)} seeds", fontsize=9)
            ax.grid(axis="y", alpha=0.3)
            ax.legend(fontsize=8)
            fig.tight_layout()
            fig.savefig(tmp / "seeds_phonetic_correlation.png", dpi=110)
            plt.close(fig)
        (tmp / "seeds_summary.md").write_text(text)
    return text


def group_of(name: str) -> str:
    """The language / condition of a mask name: the name without a trailing ``_<seed>`` (``nl_real_2`` ->
    ``nl_real``, ``en_1`` -> ``en``, ``en`` -> ``en``)."""
    return re.sub(r"_\d+$", "", name)


def _omp_mask(path: str, state: Dict, sparsity: float, cmd: str = "omp") -> Dict:
    """``parp-fairseq-mask omp|mpi`` (global ranking, default pattern) of an already loaded checkpoint."""
    from . import mask as mask_cli

    ns = argparse.Namespace(cmd=cmd, checkpoint=path, sparsity=sparsity, ranking="global",
                            pattern=mask_cli.DEFAULT_PATTERN, prune_bias=False, granularity="weight",
                            group_norm="l1", remove_whole_layers=False, meta=[], keep=None)
    return dict(mask_cli.compute(ns, state).masks)


def iou_vs_sparsity(checkpoints: Dict[str, str], sparsities: List[float], out: Path,
                    mpi: Optional[str] = None) -> str:
    """PARP's Observation 1 over sparsities (its Fig. 10-27): the OMP masks (global magnitude ranking of
    each FINETUNED checkpoint) at every sparsity, compared as same-condition pairs (one language, other
    seeds), cross-condition pairs (other languages) and, with ``mpi`` (the pretrained checkpoint), MPI vs
    each OMP mask, next to the IoU two random masks of that sparsity have (k^2 / (2k - k^2), k = kept
    fraction). Writes ``iou_vs_sparsity.{tsv,md,png}`` and ``iou_pairs.tsv`` (every pair) into ``out``."""
    from tqdm import tqdm

    from ..checkpoints import load_checkpoint
    from ..reporting import mean_std

    names = list(checkpoints)
    if len(names) < 2:
        raise ValueError("give at least two finetuned checkpoints to compare")
    for s in sparsities:
        if not 0.0 < s < 1.0:
            raise ValueError(f"--sparsities: {s} is out of range; a sparsity is the fraction REMOVED, in (0, 1)")
    groups = {n: group_of(n) for n in names}
    kinds = [("same", "same condition, other seed"), ("cross", "other condition"), ("mpi", "MPI vs OMP"),
             ("random", "random masks (expected)")]
    summary, pair_rows = [], []
    states = {n: load_checkpoint(p) for n, p in checkpoints.items()}  # safe load, once per checkpoint
    mpi_state = load_checkpoint(mpi) if mpi else None
    for s in tqdm(sparsities, desc="sparsities", unit="sparsity", file=sys.stderr):
        masks = {n: _omp_mask(checkpoints[n], states[n], s) for n in names}
        vals: Dict[str, List[float]] = {"same": [], "cross": [], "mpi": []}
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                kind = "same" if groups[a] == groups[b] else "cross"
                v = A.iou(masks[a], masks[b])
                vals[kind].append(v)
                pair_rows.append((s, a, b, kind, v))
        if mpi:
            m = _omp_mask(mpi, mpi_state, s, "mpi")
            for n in names:
                v = A.iou(m, masks[n])
                vals["mpi"].append(v)
                pair_rows.append((s, "mpi", n, "mpi", v))
        k = A.keep_fraction(masks[names[0]])
        vals["random"] = [A.random_iou(k, k)]
        for kind, _ in kinds:
            if vals[kind]:
                summary.append((s, kind, *mean_std(vals[kind]), len(vals[kind])))
    by = {(s, kind): (m_, sd, n) for s, kind, m_, sd, n in summary}
    present = [(k, lab) for k, lab in kinds if any(kk == k for _, kk, *_ in summary)]
    md = ["# Mask IoU vs sparsity (OMP masks, global magnitude ranking)", "",
          "Checkpoints: " + ", ".join(f"`{n}` ({groups[n]})" for n in names) + (f"; MPI from `{mpi}`" if mpi else ""),
          "", "IoU of kept weights, mean +- std over pairs (n = pairs):", "",
          "| sparsity | " + " | ".join(lab for _, lab in present) + " |", "|---" * (len(present) + 1) + "|"]
    for s in sparsities:
        md.append(f"| {s:g} | " + " | ".join(
            "-" if (s, k) not in by else (f"{by[(s, k)][0]:.3f}" if k == "random" else
                                          f"{by[(s, k)][0]:.3f} +- {by[(s, k)][1]:.3f} (n={by[(s, k)][2]})")
            for k, _ in present) + " |")
    text = "\n".join(md) + "\n"
    from ..reporting import pyplot

    with output_dir(out, "parp-fairseq-analyze") as tmp:
        (tmp / "iou_vs_sparsity.tsv").write_text("sparsity\tpairs\tmean_iou\tstd_iou\tn\n" + "".join(
            f"{s:g}\t{kind}\t{m_:.4f}\t{sd:.4f}\t{n}\n" for s, kind, m_, sd, n in summary))
        (tmp / "iou_pairs.tsv").write_text("sparsity\ta\tb\tpairs\tiou\n" + "".join(
            f"{s:g}\t{a}\t{b}\t{kind}\t{v:.4f}\n" for s, a, b, kind, v in pair_rows))
        (tmp / "iou_vs_sparsity.md").write_text(text)
        plt = pyplot()
        fig, ax = plt.subplots(figsize=(6, 4))
        for k, lab in present:
            xs = [s for s in sparsities if (s, k) in by]
            ax.errorbar(xs, [by[(s, k)][0] for s in xs], yerr=[by[(s, k)][1] for s in xs], marker="o", capsize=3,
                        ls="--" if k == "random" else "-", label=lab)
        ax.set_xlabel("sparsity (fraction removed)")
        ax.set_ylabel("IoU of kept weights")
        ax.set_title("OMP mask IoU vs sparsity (mean +- std over pairs)", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(tmp / "iou_vs_sparsity.png", dpi=110)
        plt.close(fig)
    return text


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="parp-fairseq-analyze", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--masks", nargs="+", required=True, metavar="NAME=PATH",
                    help="mask files or pruned checkpoints")
    ap.add_argument("--phones", nargs="*", default=None, metavar="NAME=DICT",
                    help="dict.phn.txt per mask name: correlate mask similarity with phonetic similarity")
    ap.add_argument("--out", required=True, help="output folder: new, empty, or an earlier output of this "
                                                  "command (whose files are replaced; nothing else is touched)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the random-mask baseline")
    ap.add_argument("--sparsities", nargs="+", type=float, default=None,
                    help="IoU-vs-sparsity mode: --masks are FINETUNED checkpoints (NAME=PATH, NAME = condition "
                         "plus an optional _SEED, e.g. nl_real_2); their OMP masks at each sparsity are compared "
                         "within and across conditions (PARP Fig. 10-27)")
    ap.add_argument("--by-seed", action="store_true",
                    help="--masks are named CONDITION_SEED (en_1 en_2 nl_1 nl_2 ...): compare the conditions within "
                         "each seed, against the same condition's other seeds and random masks, and report mean "
                         "+- std over seeds (seeds_*.tsv/png/md; --phones then keyed by CONDITION)")
    ap.add_argument("--mpi", default=None, metavar="PRETRAINED",
                    help="with --sparsities: also the MPI mask of this pretrained checkpoint vs every OMP mask")
    args = ap.parse_args(argv)

    def body() -> int:
        paths = _pairs(args.masks, "--masks")
        check_output_dir(args.out, "parp-fairseq-analyze")  # before reading anything
        if args.by_seed:
            split_seeds(list(paths))  # names checked before any file is read
            if args.sparsities is not None:
                raise ValueError("--by-seed and --sparsities are two modes; give one of them")
        if args.mpi and args.sparsities is None:
            raise ValueError("--mpi is used with --sparsities only (give MPI mask files to --masks otherwise)")
        if args.sparsities is not None:
            for p in [*paths.values(), *([args.mpi] if args.mpi else [])]:
                if not os.path.isfile(p):
                    raise FileNotFoundError(f"{p} does not exist")
            print(iou_vs_sparsity(paths, args.sparsities, Path(args.out), args.mpi))
            print(f"wrote {args.out}/ (iou_vs_sparsity.tsv/md/png, iou_pairs.tsv)")
            return 0
        masks, methods = {}, {}
        for n, p in paths.items():
            if not os.path.isfile(p):
                raise FileNotFoundError(f"{p} does not exist")
            masks[n], methods[n] = _load(p)
        fn = by_seed if args.by_seed else analyze
        text = fn(masks, Path(args.out), _pairs(args.phones, "--phones") if args.phones else None, args.seed, methods)
        print(text)
        print(f"wrote {args.out}/ (summary.md, *.tsv, *.png)")
        return 0

    return run_cli("parp-fairseq-analyze", body)


if __name__ == "__main__":
    sys.exit(main())

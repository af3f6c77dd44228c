"""Mask analysis: IoU / overlap / per-layer tables against hand counts, random baselines, the CLI."""

import math

import pytest
import torch

from parp_fairseq.cli import analyze as analyze_cli
from parp_fairseq.pruning import MaskFile, magnitude_masks, random_masks, save_mask_file
from parp_fairseq.pruning import analysis as A


def _m(*rows):
    return {"encoder.layers.0.fc1.weight": torch.tensor(rows[0], dtype=torch.bool),
            "encoder.layers.1.fc1.weight": torch.tensor(rows[1], dtype=torch.bool)}


def _phone_dicts(folder, inventories):
    """A fairseq dict.phn.txt per language (``{lang: "a b c"}``) in ``folder``, as ``--phones`` arguments."""
    out = []
    for lang, inv in inventories.items():
        d = folder / f"dict.{lang}.txt"
        d.write_text("".join(f"{s} 1\n" for s in inv.split()))
        out.append(f"{lang}={d}")
    return out


def test_iou_overlap_cosine_by_hand():
    a = _m([1, 1, 0, 0], [1, 0, 1, 0])
    b = _m([1, 0, 1, 0], [1, 0, 1, 0])
    # kept a: {0,1 | 4,6}, kept b: {0,2 | 4,6}: intersection 3, union 5, total 8
    assert A.iou(a, b) == pytest.approx(3 / 5)
    assert A.overlap(a, b) == pytest.approx(3 / 8)
    assert A.iou(a, a) == 1.0
    cos = A.layer_cosine(a, b)
    assert cos["layers.0"] == pytest.approx(1 / 2) and cos["layers.1"] == pytest.approx(1.0)
    ls = A.layer_sparsity(a)
    assert ls == {"layers.0": 0.5, "layers.1": 0.5, "all": 0.5}


def test_random_baseline_matches_expectation():
    shapes = {f"encoder.layers.{i}.fc1.weight": torch.Size([200, 100]) for i in range(3)}
    a = random_masks(shapes, 0.7, seed=1)
    b = random_masks(shapes, 0.5, seed=2)
    expected = A.random_iou(0.3, 0.5)
    assert A.iou(a, b) == pytest.approx(expected, abs=0.01)
    twin = A.random_like(a, seed=3)
    assert all(int(twin[n].sum()) == int(a[n].sum()) for n in a)  # same per-tensor sparsity
    # magnitude masks of correlated weights are far above the random baseline
    w = {n: torch.randn(s, generator=torch.Generator().manual_seed(i)) for i, (n, s) in enumerate(shapes.items())}
    w2 = {n: t + 0.1 * torch.randn(t.shape) for n, t in w.items()}
    assert A.iou(magnitude_masks(w, 0.7), magnitude_masks(w2, 0.7)) > 2 * A.random_iou(0.3, 0.3)


def test_pearson_and_errors():
    assert A.pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert A.pearson([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert math.isnan(A.pearson([1, 1, 1], [1, 2, 3]))
    with pytest.raises(ValueError, match="equal-length"):
        A.pearson([1], [1])
    with pytest.raises(ValueError, match="different parameters"):
        A.iou(_m([1, 0], [1, 0]), {"x": torch.ones(2, dtype=torch.bool)})


def test_mantel_permutation_test():
    """Exact over all 6! relabellings for 6 items: a matrix against itself is the most extreme (p = 1/720),
    against its negation the least (p = 1); rows and columns move together (pairs are not independent)."""
    import random

    rng = random.Random(1)
    n = 6
    m = [[1.0] * n for _ in range(n)]
    for i in range(n):
        for j in range(i + 1, n):
            m[i][j] = m[j][i] = rng.random()
    assert A.mantel_p(m, [m]) == pytest.approx(1 / 720)
    assert A.mantel_p(m, [[[-v for v in row] for row in m]]) == 1.0
    assert 1 / 720 <= A.mantel_p(m, [m], max_perms=100, seed=3) <= 0.05  # sampled permutations, identity first
    with pytest.raises(ValueError, match=">= 3 items"):
        A.mantel_p([[1, 0], [0, 1]], [[[1, 0], [0, 1]]])
    with pytest.raises(ValueError, match="different items"):
        A.mantel_p(m, [[[1.0]]])


def test_analyze_cli_writes_tables_and_plots(tmp_path, capsys):
    shapes = {f"encoder.layers.{i}.{p}.weight": torch.Size([32, 16]) for i in range(2) for p in ("fc1", "fc2")}
    base = {n: torch.randn(s, generator=torch.Generator().manual_seed(7)) for n, s in shapes.items()}
    paths = []
    for k, lang in enumerate(("nl", "es", "ru")):
        w = {n: t + 0.3 * k * torch.randn(t.shape, generator=torch.Generator().manual_seed(k)) for n, t in base.items()}
        p = tmp_path / f"{lang}.pt"
        save_mask_file(p, MaskFile(magnitude_masks(w, 0.5), 0.5, "omp", "global"))
        paths.append(f"{lang}={p}")
    phones = _phone_dicts(tmp_path, {"nl": "a b c d", "es": "a b c e", "ru": "x y c"})
    out = tmp_path / "analysis"
    assert analyze_cli.main(["--masks", *paths, "--phones", *phones, "--out", str(out)]) == 0
    for f in ("iou.tsv", "iou.png", "overlap.png", "random_iou.tsv", "layer_sparsity.tsv", "layer_sparsity.png",
              "layer_cosine.tsv", "phonetic_correlation.tsv", "summary.md"):
        assert (out / f).stat().st_size > 0, f
    iou = [ln.split("\t") for ln in (out / "iou.tsv").read_text().splitlines()]
    assert iou[1][1] == "1.0000" and 0.33 < float(iou[1][2]) < 1.0
    assert "Pearson r over 3 language pairs" in (out / "summary.md").read_text()
    corr = (out / "phonetic_correlation.tsv").read_text().splitlines()
    p_value = float(corr[1].split("\t")[-1])  # exact over the 3! relabellings: a multiple of 1/6
    assert corr[0].split("\t")[-1] == "mantel_p" and p_value == pytest.approx(round(6 * p_value) / 6, abs=1e-3)
    layers = [ln.split("\t") for ln in (out / "phonetic_correlation_layers.tsv").read_text().splitlines()]
    assert [r[0] for r in layers[1:]] == ["layers.0", "layers.1"] and all(-1 <= float(r[1]) <= 1 for r in layers[1:])
    # bad input: one clear error, nothing written
    bad = tmp_path / "bad"
    assert analyze_cli.main(["--masks", paths[0], "--out", str(bad)]) == 2
    assert analyze_cli.main(["--masks", paths[0], "es", "--out", str(bad)]) == 2
    assert "NAME=PATH" in capsys.readouterr().err
    assert not bad.exists()


def test_fairseq_log_curve_parses_train_and_valid_lines(tmp_path):
    from parp_fairseq.reporting import fairseq_log_curve, plot_curve

    log = tmp_path / "hydra_train.log"
    log.write_text(
        "[2026-11-23 00:24:53][train_inner][INFO] - epoch 001:     25 / 232 loss=8.138, ntokens=377.44, num_updates=25, lr=1e-3\n"
        "[2026-11-23 00:24:58][valid][INFO] - epoch 001 | valid on 'valid' subset | loss 6.623 | ntokens 349 | num_updates 100\n"
        "[2026-11-23 00:24:59][fairseq_cli.train][INFO] - done training\n")
    pts = fairseq_log_curve(log)
    assert pts == [("train", 25, 8.138), ("valid", 100, 6.623)]
    plot_curve(pts, tmp_path / "c.png", "t")
    assert (tmp_path / "c.png").stat().st_size > 1000


def test_blank_phase_names_runs_that_recognize_nothing(tmp_path):
    """A CTC run whose last validation has uer >= 100 (only blanks, or garbage) recognizes nothing."""
    from parp_fairseq.reporting import blank_phase

    def log(*uers):
        f = tmp_path / "train.log"
        f.write_text("[2026-12-07 21:00:00][train_inner][INFO] - epoch 001: loss=9.1, uer=100, num_updates=10\n" + "".join(
            f"[2026-12-07 21:0{i}:00][valid][INFO] - epoch 00{i} | valid on 'valid' subset | loss 4.9 | uer {u} | "
            f"wer 100 | num_updates {200 * i}\n" for i, u in enumerate(uers, 1)))
        return blank_phase(f)

    assert log() is None  # no validation yet
    assert log(100, 100, 100) == "valid uer >= 100 at every one of its 3 validations (last: 100 at update 600)"
    assert log(100, 86.1, 52.8) is None  # left the blank phase
    assert log(99.99) is None
    assert log(100, 60.5, 100) == "valid uer 100 at its last validation (update 600; its best was 60.5 at update 400)"
    assert log(180.2) == "valid uer >= 100 at every one of its 1 validations (last: 180.2 at update 200)"  # garbage


def test_analyze_mpi_vs_omp(tmp_path):
    """PARP's premise: the IoU of the pretrained model's MPI mask with a finetuned model's OMP mask,
    next to the random-mask IoU; the hand-made case makes the finetuned weights a small change."""
    shapes = {f"encoder.layers.{i}.fc1.weight": torch.Size([64, 32]) for i in range(2)}
    pre = {n: torch.randn(s, generator=torch.Generator().manual_seed(1)) for n, s in shapes.items()}
    ft = {n: t + 0.1 * torch.randn(t.shape, generator=torch.Generator().manual_seed(2)) for n, t in pre.items()}
    mpi, omp = magnitude_masks(pre, 0.5), magnitude_masks(ft, 0.5)
    save_mask_file(tmp_path / "mpi.pt", MaskFile(mpi, 0.5, "mpi", "global"))
    save_mask_file(tmp_path / "omp.pt", MaskFile(omp, 0.5, "omp", "global"))
    out = tmp_path / "a"
    assert analyze_cli.main(["--masks", f"pre={tmp_path / 'mpi.pt'}", f"ft={tmp_path / 'omp.pt'}",
                             "--out", str(out)]) == 0
    rows = [ln.split("\t") for ln in (out / "mpi_vs_omp.tsv").read_text().splitlines()]
    assert rows[0][:3] == ["mpi", "omp", "iou"] and rows[1][:2] == ["pre", "ft"]
    from parp_fairseq.pruning.analysis import iou
    assert float(rows[1][2]) == pytest.approx(iou(mpi, omp), abs=1e-4)
    assert float(rows[1][2]) > 2 * float(rows[1][4])  # far above random (1/3 at 50 %)
    assert "MPI vs OMP" in (out / "summary.md").read_text()


def test_iou_vs_sparsity_within_across_conditions_and_mpi(finetuned, pretrained, tmp_path, capsys):
    """--sparsities: OMP masks of finetuned checkpoints at every sparsity, same-condition pairs (seeds),
    cross-condition pairs, MPI vs OMP, and the random expectation k^2 / (2k - k^2)."""
    import csv

    from parp_fairseq.checkpoints import load_checkpoint
    from parp_fairseq.cli import mask as mask_cli
    from parp_fairseq.fsutil import atomic_torch_save

    # a second "language": the finetuned model with its transformer weights perturbed
    state = load_checkpoint(finetuned)
    g = torch.Generator().manual_seed(0)
    for k, v in state["model"].items():
        if ".encoder.layers." in k and k.endswith("weight") and v.dim() == 2:
            state["model"][k] = v + 0.5 * v.std() * torch.randn(v.shape, generator=g)
    other = tmp_path / "other.pt"
    atomic_torch_save(state, other)
    out = tmp_path / "iou_s"
    args = ["--sparsities", "0.2", "0.6", "--mpi", str(pretrained), "--out", str(out),
            "--masks", f"aa_1={finetuned}", f"aa_2={finetuned}", f"bb={other}"]
    assert analyze_cli.main(args) == 0
    rows = {(r["sparsity"], r["pairs"]): r for r in csv.DictReader(open(out / "iou_vs_sparsity.tsv"), delimiter="\t")}
    for s in ("0.2", "0.6"):
        k = 1 - float(s)
        assert float(rows[(s, "same")]["mean_iou"]) == pytest.approx(1.0)  # the same weights: the same mask
        assert int(rows[(s, "cross")]["n"]) == 2 and int(rows[(s, "mpi")]["n"]) == 3
        assert float(rows[(s, "random")]["mean_iou"]) == pytest.approx(k * k / (2 * k - k * k), abs=1e-4)
        assert float(rows[(s, "random")]["mean_iou"]) < float(rows[(s, "cross")]["mean_iou"]) < 1.0
    # the pair table agrees with a mask computed by parp-fairseq-mask
    mpi_file, omp_file = tmp_path / "mpi.pt", tmp_path / "omp.pt"
    assert mask_cli.main(["mpi", "--checkpoint", str(pretrained), "--sparsity", "0.6", "--out", str(mpi_file)]) == 0
    assert mask_cli.main(["omp", "--checkpoint", str(finetuned), "--sparsity", "0.6", "--out", str(omp_file)]) == 0
    from parp_fairseq.pruning.maskfile import load_mask_file

    want = A.iou(load_mask_file(mpi_file).masks, load_mask_file(omp_file).masks)
    pair = [r for r in csv.DictReader(open(out / "iou_pairs.tsv"), delimiter="\t")
            if (r["sparsity"], r["a"], r["b"]) == ("0.6", "mpi", "aa_1")][0]
    assert float(pair["iou"]) == pytest.approx(want, abs=1e-4)
    assert (out / "iou_vs_sparsity.png").stat().st_size > 1000
    assert "| 0.6 |" in (out / "iou_vs_sparsity.md").read_text()
    # bad input: one clear error each
    capsys.readouterr()
    assert analyze_cli.main([*args[:1], "1.2", *args[3:]]) == 2 and "out of range" in capsys.readouterr().err
    assert analyze_cli.main(["--mpi", str(pretrained), "--out", str(tmp_path / "x"), "--masks", f"a={finetuned}",
                             f"b={other}"]) == 2
    assert "--sparsities" in capsys.readouterr().err
    assert analyze_cli.main(["--sparsities", "0.5", "--out", str(tmp_path / "y"), "--masks", f"a={pretrained}",
                             f"b={finetuned}"]) == 2
    assert "FINETUNED" in capsys.readouterr().err  # a pretrained checkpoint given where OMP needs a finetuned one


def test_analyze_by_seed_against_hand_computation(tmp_path, capsys, monkeypatch):
    """--by-seed: conditions differ by a fixed weight change, seeds by a smaller one; the summary must
    be the mean over seeds of the per-seed numbers, and rank same-condition > cross-condition > random."""
    calls = []
    layer_cosine = A.layer_cosine
    monkeypatch.setattr(A, "layer_cosine", lambda a, b: calls.append(1) or layer_cosine(a, b))
    shapes = {f"encoder.layers.{i}.{p}.weight": torch.Size([48, 24]) for i in range(2) for p in ("fc1", "fc2")}
    base = {n: torch.randn(s, generator=torch.Generator().manual_seed(0)) for n, s in shapes.items()}

    def noise(n, t, seed):
        return torch.randn(t.shape, generator=torch.Generator().manual_seed(seed * 100 + sorted(shapes).index(n)))

    conds = {"nl": (1, 0.4), "es": (2, 0.5), "ru": (3, 1.2)}  # (noise seed, size): ru is far from nl / es
    masks, paths = {}, []
    for c, (k, size) in conds.items():
        for seed in (1, 2):
            w = {n: t + size * noise(n, t, k) + 0.1 * noise(n, t, 10 * k + seed) for n, t in base.items()}
            masks[f"{c}_{seed}"] = magnitude_masks(w, 0.5)
            p = tmp_path / f"{c}_{seed}.pt"
            save_mask_file(p, MaskFile(masks[f"{c}_{seed}"], 0.5, "s3router", "tensor"))
            paths.append(f"{c}_{seed}={p}")
    phones = _phone_dicts(tmp_path, {"nl": "a b c d e", "es": "a b c d f", "ru": "x y z c"})
    out = tmp_path / "seeds"
    assert analyze_cli.main(["--by-seed", "--masks", *paths, "--phones", *phones, "--out", str(out)]) == 0
    # per-layer cosines computed once: 2 seeds x 3 cross pairs x (masks, random twins) + 3 same-condition seed pairs;
    # every seed's own analysis reuses its seed's (it used to compute those 12 again)
    assert len(calls) == 2 * 3 * 2 + 3
    for f in ("seeds_cosine.tsv", "seeds_cosine.png", "seeds_phonetic_correlation.tsv",
              "seeds_phonetic_correlation.png", "seeds_summary.md", "seed1/summary.md", "seed2/iou.tsv"):
        assert (out / f).stat().st_size > 0, f
    rows = {(r[0], r[1], r[2]): r for r in (ln.split("\t") for ln in (out / "seeds_cosine.tsv").read_text().splitlines()[1:])}
    # one pair by hand: nl-es over the two seeds, overall cosine
    ref = [A.cosine(masks[f"nl_{s}"], masks[f"es_{s}"]) for s in (1, 2)]
    assert float(rows[("cross", "nl-es", "all")][3]) == pytest.approx(sum(ref) / 2, abs=1e-5)
    assert rows[("cross", "nl-es", "all")][5] == "2"
    same = [A.layer_cosine(masks[f"{c}_1"], masks[f"{c}_2"])["layers.1"] for c in conds]
    assert float(rows[("same", "all", "layers.1")][3]) == pytest.approx(sum(same) / 3, abs=1e-5)
    agg = {k: float(rows[(k, "all", "all")][3]) for k in ("same", "cross", "random")}
    assert agg["same"] > agg["cross"] > agg["random"] == pytest.approx(0.5, abs=0.05)  # random at keep 0.5: ~k
    # every seed's own analysis uses the summary's random masks: its random row averages to the summary's
    per_seed = []
    for s in (1, 2):
        lines = [ln.split("\t") for ln in (out / f"seed{s}" / "layer_cosine.tsv").read_text().splitlines()]
        col = lines[0].index("layers.1")
        per_seed.append(float(next(r for r in lines[1:] if r[:2] == ["nl-es", "random"])[col]))
    assert float(rows[("random", "nl-es", "layers.1")][3]) == pytest.approx(sum(per_seed) / 2, abs=1e-4)
    lines = [ln.split("\t") for ln in (out / "seed1" / "layer_cosine.tsv").read_text().splitlines()]
    mine = float(next(r for r in lines[1:] if r[:2] == ["nl-es", "pruned"])[lines[0].index("layers.1")])
    assert mine == pytest.approx(A.layer_cosine(masks["nl_1"], masks["es_1"])["layers.1"], abs=1e-4)
    # Pearson r with the phone Jaccard, per seed by hand, then the mean
    inv = {"nl": set("abcde"), "es": set("abcdf"), "ru": set("xyzc")}
    pairs = [("nl", "es"), ("nl", "ru"), ("es", "ru")]
    x = [A.jaccard(inv[a], inv[b]) for a, b in pairs]
    r = [A.pearson(x, [A.iou(masks[f"{a}_{s}"], masks[f"{b}_{s}"]) for a, b in pairs]) for s in (1, 2)]
    corr = {ln.split("\t")[0]: ln.split("\t") for ln in (out / "seeds_phonetic_correlation.tsv").read_text().splitlines()[1:]}
    assert float(corr["all"][1]) == pytest.approx(sum(r) / 2, abs=1e-4) and float(corr["all"][1]) > 0.9
    assert corr["all"][5:7] == ["2", "3"]
    # Mantel test: relabel the 3 conditions (3! = 6 ways); the mean r over seeds is the statistic
    names = list(conds)
    xmat = [[A.jaccard(inv[a], inv[b]) for b in names] for a in names]
    ys = [[[A.iou(masks[f"{a}_{s}"], masks[f"{b}_{s}"]) for b in names] for a in names] for s in (1, 2)]
    assert float(corr["all"][7]) == pytest.approx(A.mantel_p(xmat, ys), abs=1e-3) and float(corr["all"][7]) < 0.34
    # bad input: one clear line, nothing written
    bad = tmp_path / "bad"
    assert analyze_cli.main(["--by-seed", "--masks", *paths[:-1], "--out", str(bad)]) == 2
    assert "missing ru_2" in capsys.readouterr().err
    assert analyze_cli.main(["--by-seed", "--masks", paths[0], f"es={tmp_path / 'es_1.pt'}", "--out", str(bad)]) == 2
    assert "no _SEED suffix" in capsys.readouterr().err
    assert not bad.exists()

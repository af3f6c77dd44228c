"""parp-fairseq-sweep: real fairseq runs per point, resumable, one tidy table, transfer matrix, plots."""

import csv
import os
import re
import threading
from pathlib import Path

import pytest
import torch

from parp_fairseq.cli import sweep as sweep_cli
from parp_fairseq.cli.decode import read_summary
from parp_fairseq.decoding import lm as lm_cli
from parp_fairseq.procutil import cpu_kind, lock_holder, workdir_lock
from parp_fairseq.pruning.maskfile import load_mask_file


def test_sweep_run_collect_resume_and_transfer(corpus, pretrained, tmp_path, capsys):
    root = tmp_path / "data"
    root.mkdir()
    for lang in ("aa", "bb"):  # two "languages" sharing the tone corpus
        os.symlink(corpus, root / lang)
    work = tmp_path / "sweep"
    args = ["run", "--workdir", str(work), "--data-root", str(root), "--pretrained", str(pretrained),
            "--langs", "aa", "--methods", "omp", "parp", "--sparsities", "0.5", "--labels", "ltr",
            "--config-name", "tiny", "--transfer", "aa:bb", "--", "optimization.max_update=20",
            "checkpoint.save_interval_updates=20", "dataset.validate_interval_updates=20",
            "model.pruning.reprune_interval=5"]
    assert sweep_cli.main(args) == 0
    for d in ("aa/dense_seed1", "aa/omp_s0.5_seed1", "aa/parp_s0.5_seed1", "bb/dense_seed1",
              "bb/parp_from_aa_s0.5_seed1", "bb/parp_from_bb_s0.5_seed1"):
        assert (work / d / "DONE").exists(), d
    stamp = (work / "aa/parp_s0.5_seed1/checkpoint_last.pt").stat().st_mtime_ns
    capsys.readouterr()
    assert sweep_cli.main(args) == 0  # resume: every point is skipped
    assert capsys.readouterr().out.count("done before") == 6
    assert (work / "aa/parp_s0.5_seed1/checkpoint_last.pt").stat().st_mtime_ns == stamp

    # a second stream of the same study: its points start from the first folder's dense models (linked,
    # not retrained), and its OMP mask is the first folder's; another recipe is refused, nothing trained
    work2, work3 = tmp_path / "sweep2", tmp_path / "sweep3"
    stream = [*args[3:9], "--methods", "omp", *args[12:18], *args[20:]]  # no --transfer, OMP only
    capsys.readouterr()
    assert sweep_cli.main(["run", "--workdir", str(work2), "--dense-from", str(work), *stream]) == 0
    assert "aa/dense_seed1: the finished dense reference of" in capsys.readouterr().out
    assert (work2 / "aa/dense_seed1").is_symlink() and (work2 / "aa/omp_s0.5_seed1/DONE").exists()
    assert (work2 / "aa/dense_seed1").resolve() == (work / "aa/dense_seed1").resolve()
    masks = [load_mask_file(w / "aa/omp_mask_s0.5_seed1.pt").masks for w in (work, work2)]
    assert masks[0].keys() == masks[1].keys() and all(torch.equal(masks[0][k], masks[1][k]) for k in masks[0])
    assert sweep_cli.main(["run", "--workdir", str(work3), "--dense-from", str(work), *stream,
                           "optimization.lr=[0.01]"]) == 2
    err = capsys.readouterr().err
    assert "another recipe" in err and "optimization.lr=[0.01]" in err and not (work3 / "aa").exists()

    results_md = tmp_path / "RESULTS.md"
    lm = tmp_path / "lm_aa"
    assert lm_cli.main(["--text", str(corpus / "train.wrd"), "--order", "2", "--out-dir", str(lm)]) == 0
    # one LM per language ({lang} in the paths): every language's files are checked before any decoding
    per_lang = ["--lm", str(tmp_path / "lm_{lang}" / "lm.bin"), "--lexicon", str(tmp_path / "lm_{lang}" / "lexicon.txt")]
    capsys.readouterr()
    assert sweep_cli.main(["collect", "--workdir", str(work), *per_lang]) == 2
    assert "(language bb)" in capsys.readouterr().err and not (work / "results.tsv").exists()
    os.symlink(lm, tmp_path / "lm_bb")
    # a collect is refused while another collects the folder; it goes ahead while a `run` trains there,
    # reporting the points finished so far and saying who is still training
    with workdir_lock(work, "parp-fairseq-sweep collect", name=sweep_cli.COLLECT_LOCK):
        assert sweep_cli.main(["collect", "--workdir", str(work), *per_lang]) == 2
        assert "in use by parp-fairseq-sweep collect" in capsys.readouterr().err
    with workdir_lock(work, "parp-fairseq-sweep run"):
        assert lock_holder(work).startswith("parp-fairseq-sweep run (pid ")
        assert sweep_cli.main(["collect", "--workdir", str(work), "--results-md", str(results_md), *per_lang]) == 0
        assert "still being trained by parp-fairseq-sweep run" in capsys.readouterr().out
    assert lock_holder(work) is None and lock_holder(tmp_path / "nowhere") is None
    all_rows = list(csv.DictReader(open(work / "results.tsv"), delimiter="\t"))
    rows = [r for r in all_rows if r["decoder"] == "viterbi"]
    # every point decoded twice: Viterbi and the KenLM lexicon beam search (its own results folder)
    kenlm = [r for r in all_rows if r["decoder"] == "kenlm"]
    assert len(kenlm) == len(rows) == 6
    assert (work / "aa/omp_s0.5_seed1/decode/test_kenlm_lm_aa_w2_s-1/summary.tsv").exists()
    assert all(float(r["WER"]) >= 0 for r in kenlm)
    assert {(r["lang"], r["method"]) for r in rows} == {
        ("aa", "dense"), ("aa", "omp"), ("aa", "parp"), ("bb", "dense"), ("bb", "parp_transfer")}
    # PARP's own diagnostic as logged at the end of its run; "-" for methods without one
    iou_init = {r["method"]: r["mask_iou_init"] for r in rows if r["lang"] == "aa"}
    assert iou_init["dense"] == iou_init["omp"] == "-" and 0.0 < float(iou_init["parp"]) <= 1.0
    for r in rows:
        assert r["split"] == "test" and r["decoder"] == "viterbi" and r["unit"] == "CER"
        assert float(r["actual_sparsity"]) == pytest.approx(float(r["target_sparsity"]), abs=1e-3), r
        assert 0.0 <= float(r["unit_error"]) and os.path.exists(r["checkpoint"])
    assert {r["mask_from"] for r in rows if r["method"] == "parp_transfer"} == {"aa", "bb"}
    # the transfer matrix: Viterbi and KenLM are separate matrices (never averaged together), each cell
    # the mean +- std of its seeds' rows
    tmd = (work / "transfer.md").read_text()
    assert "CER, Viterbi" in tmd and "WER, KenLM" in tmd
    for dec, metric in (("viterbi", "unit_error"), ("kenlm", "WER")):
        own = [float(r[metric]) for r in all_rows if r["decoder"] == dec and r["method"] == "parp_transfer"
               and r["lang"] == "bb" and r["mask_from"] == "bb"]
        assert len(own) == 1 and f"{own[0]:.1f} +- 0.0 (n=1) (+0.0)" in tmd, (dec, own, tmd)
    tsv = list(csv.DictReader(open(work / "transfer.tsv"), delimiter="\t"))
    assert sorted(r["decoder"] for r in tsv) == ["kenlm", "kenlm", "viterbi", "viterbi"]
    for png in ("aa_vs_sparsity.png", "bb_vs_sparsity.png", "aa_wer_kenlm_vs_sparsity.png", "layer_sparsity.png",
                "dense_curve.png"):
        assert (work / png).stat().st_size > 1000, png
    text = results_md.read_text()
    assert "parp-fairseq-sweep" in text and "| omp | 0.5 |" in text
    assert "aa viterbi | aa kenlm |" in text and "lm weight 2" in text
    # the dense curves: valid uer at updates 20 (the validation interval) of both languages' dense runs
    curve = list(csv.DictReader(open(work / "dense_curve.tsv"), delimiter="\t"))
    assert {(r["label"], r["num_updates"]) for r in curve} == {("aa dense", "20"), ("bb dense", "20")}
    logged = [ln for ln in (work / "aa/dense_seed1/train.log").read_text().splitlines() if "][valid]" in ln]
    uer = float(re.search(r"\| uer ([0-9.]+)", logged[-1]).group(1))
    assert float([r for r in curve if r["label"] == "aa dense"][0]["uer"]) == pytest.approx(uer, abs=1e-4)
    # several work folders in one plot (a learning-rate sweep); a bad one is one clear error
    out = tmp_path / "curves.png"
    assert sweep_cli.main(["curves", f"first={work}", str(work), "--lang", "aa", "--out", str(out)]) == 0
    assert out.stat().st_size > 1000
    assert {r["label"] for r in csv.DictReader(open(tmp_path / "curves.tsv"), delimiter="\t")} == {"first", "sweep"}
    assert sweep_cli.main(["curves", str(tmp_path / "nowhere"), "--out", str(out)]) == 2
    # any runs' curves, several metrics: PARP's re-pruned side (what its checkpoints keep) next to fairseq's own
    out = tmp_path / "parp_curves.png"
    assert sweep_cli.main(["curves", str(work), "--runs", "parp_s0.5_seed*", "--metric", "uer", "uer_after_reprune",
                           "--out", str(out)]) == 0
    assert out.stat().st_size > 1000
    parp = list(csv.DictReader(open(tmp_path / "parp_curves.tsv"), delimiter="\t"))
    logged = [ln for ln in (work / "aa/parp_s0.5_seed1/train.log").read_text().splitlines() if "][valid]" in ln]
    assert {r["run"] for r in parp} == {"parp_s0.5_seed1"} and len(parp) == len(logged)
    for key in ("uer", "uer_after_reprune"):
        assert float(parp[-1][key]) == pytest.approx(float(re.search(rf"\| {key} ([0-9.]+)", logged[-1]).group(1)))
    assert sweep_cli.main(["curves", str(work), "--runs", "imp_*", "--out", str(out)]) == 2
    assert sweep_cli.main(["curves", "x", "--metric", "uer", str(work), "--out", str(out)]) == 2  # a folder as metric
    assert sweep_cli.main(["curves", str(work), "--out", str(tmp_path / "curves.tsv")]) == 2  # would clobber
    # KenLM decoding needs both files, and letters
    assert sweep_cli.main(["collect", "--workdir", str(work), "--lm", str(lm / "lm.bin")]) == 2
    # cost vs dense from the real results.tsv: each pruned point minus its language's dense of that seed
    out = tmp_path / "cost.png"
    assert sweep_cli.main(["cost", str(work / "results.tsv"), "--lang", "aa", "--out", str(out)]) == 0
    dense = float(next(r["unit_error"] for r in rows if r["lang"] == "aa" and r["method"] == "dense"))
    got = {r["method"]: float(r["cost_mean"]) for r in csv.DictReader(open(tmp_path / "cost.tsv"), delimiter="\t")}
    want = {r["method"]: float(r["unit_error"]) - dense for r in rows if r["lang"] == "aa" and r["method"] != "dense"}
    assert got == pytest.approx(want, abs=1e-4) and set(got) == {"omp", "parp"}
    assert out.stat().st_size > 1000 and "| omp | 0.5 | 1 |" in (tmp_path / "cost.md").read_text()

    # LM weights tuned per model on valid (--tune-on), with an LM that never saw valid's sentences
    text = tmp_path / "lm_text.txt"
    text.write_text((corpus / "train.wrd").read_text() + (corpus / "valid.wrd").read_text())
    lm_v = tmp_path / "lm_v"
    assert lm_cli.main(["--text", str(text), "--order", "2", "--out-dir", str(lm_v)]) == 0
    tune = ["collect", "--workdir", str(work), "--lm", str(lm_v / "lm.bin"), "--lexicon", str(lm_v / "lexicon.txt")]
    grid = ["--lm-weight", "0", "2", "--word-score", "-1", "1"]
    before = (work / "results.tsv").read_text()
    capsys.readouterr()
    for argv, msg in ((grid, "add --tune-on valid"), (["--tune-on", "test"], "that split is reported"),
                      (["--tune-on", "dev", *grid], "dev.tsv does not exist"),
                      # the LM's text held the valid sentences: weights tuned there would favour the LM
                      (["--tune-on", "valid", *grid], "rebuild it with parp-fairseq-lm ... --exclude")):
        assert sweep_cli.main(tune + argv) == 2, argv
        err = capsys.readouterr().err
        assert msg in err and "Traceback" not in err, (argv, err)
        assert (work / "results.tsv").read_text() == before and not list(work.glob("*/*/decode/valid_*"))
    assert lm_cli.main(["--text", str(text), "--order", "2", "--out-dir", str(lm_v), "--exclude",
                        str(corpus / "valid.wrd")]) == 0
    assert sweep_cli.main(tune + ["--tune-on", "valid", *grid, "--results-md", str(results_md)]) == 0
    tuned = [r for r in csv.DictReader(open(work / "results.tsv"), delimiter="\t") if r["decoder"] == "kenlm"]
    assert len(tuned) == 6 and {r["lm_tuned_on"] for r in tuned} == {"valid"}
    for r in tuned:  # each model's own choice: the first lowest-WER setting of its valid grid
        d = Path(r["checkpoint"]).parent / "decode"
        valid = [v for v in csv.DictReader(open(d / "valid_kenlm_lm_v_w0,2_s-1,1/summary.tsv"), delimiter="\t")]
        assert len(valid) == 4
        best = min(valid, key=lambda v: float(v["WER"]))
        assert (r["lm_weight"], r["word_score"]) == (best["lm_weight"], best["word_score"])
        assert float(r["tuned_WER"]) == pytest.approx(float(best["WER"]), abs=1e-3)
        # the test WER reported is the test decode with that one setting
        test = list(csv.DictReader(open(d / f"test_kenlm_lm_v_w{best['lm_weight']}_s{best['word_score']}/summary.tsv"),
                                   delimiter="\t"))
        assert len(test) == 1 and float(r["WER"]) == pytest.approx(float(test[0]["WER"]), abs=1e-3)
        # the decodes with the other LM (the first collect's) are kept in their own folder, not overwritten
        assert (d / "test_kenlm_lm_aa_w2_s-1" / "summary.tsv").exists()
    md = (work / "results.md").read_text()
    assert "chosen per model by its WER on valid from lm weight 0,2 x word score -1,1" in md
    assert "| method | mask from | sparsity | lm weight | word score | valid WER |" in md
    # an older table (no lm_weight columns) merges with a new one: "-" where it has no value
    old_cols = ["lang", "method", "mask_from", "target_sparsity", "actual_sparsity", "seed", "split", "decoder",
                "WER", "unit", "unit_error", "transformer_params", "mask_iou_init", "checkpoint"]
    old = tmp_path / "old.tsv"
    old.write_text("\t".join(old_cols) + "\n" + "\t".join(
        ["cc", "dense", "-", "0.0000", "0.0000", "1", "test", "viterbi", "90.0", "CER", "40.0", "1", "-", "/x.pt"]) + "\n")
    assert sweep_cli.main(["merge", str(old), str(work / "results.tsv"), "--out", str(tmp_path / "m.tsv")]) == 0
    merged = list(csv.DictReader(open(tmp_path / "m.tsv"), delimiter="\t"))
    assert list(merged[0])[-4:] == ["lm_weight", "word_score", "lm_tuned_on", "tuned_WER"]
    assert [r["lm_weight"] for r in merged if r["lang"] == "cc"] == ["-"] and len(merged) == 1 + 12

    # dev numbers: --splits adds each point's valid rows (Viterbi); the dense one is the valid uer that
    # fairseq's criterion logged for the checkpoint it kept (two implementations of greedy CTC)
    before = (work / "results.tsv").read_text()
    capsys.readouterr()
    for argv, msg in ((["--splits", "tset"], "no language of this sweep has it"),
                      (["--splits", "test", "test"], "a split named twice"),
                      (["--splits", "real", "test_spk"], "has any of them"),
                      ([*tune[3:], "--tune-on", "valid", *grid, "--splits", "test", "valid"],
                       "its KenLM rows would be fitted")):
        assert sweep_cli.main(["collect", "--workdir", str(work), *argv]) == 2, argv
        err = capsys.readouterr().err
        assert msg in err and "Traceback" not in err, (argv, err)
        assert (work / "results.tsv").read_text() == before
    assert sweep_cli.main(["collect", "--workdir", str(work), "--splits", "valid", "test"]) == 0
    dev = list(csv.DictReader(open(work / "results.tsv"), delimiter="\t"))
    assert len(dev) == 12 and {(r["split"], r["decoder"]) for r in dev} == {("test", "viterbi"), ("valid", "viterbi")}
    assert [r["split"] for r in dev[:2]] == ["test", "valid"]  # each point's test row first
    key = lambda r: (r["lang"], r["method"], r["mask_from"])  # noqa: E731
    assert {key(r): r["unit_error"] for r in dev if r["split"] == "test"} == {key(r): r["unit_error"] for r in rows}
    valid = {key(r): float(r["unit_error"]) for r in dev if r["split"] == "valid"}
    n_valid = len((corpus / "valid.tsv").read_text().splitlines()) - 1  # the manifest's root line
    for r in dev:  # each valid row is its point's decode of every valid utterance
        if r["split"] == "valid":
            d = Path(r["checkpoint"]).parent / "decode" / "valid_viterbi"
            assert len((d / "per_utt.tsv").read_text().splitlines()) == n_valid + 1  # + header
            assert float(r["unit_error"]) == pytest.approx(float(read_summary(d)[0]["CER"]), abs=1e-4)
    assert valid != {key(r): float(r["unit_error"]) for r in rows}  # not the test numbers again
    assert "| method | sparsity | aa | bb | aa valid | bb valid |" in (work / "results.md").read_text()
    assert sweep_cli.main(["cost", str(work / "results.tsv"), "--split", "valid", "--lang", "aa", "--out", str(out)]) == 0
    got = {r["method"]: float(r["cost_mean"]) for r in csv.DictReader(open(tmp_path / "cost.tsv"), delimiter="\t")}
    assert got == pytest.approx({m: valid[("aa", m, "-")] - valid[("aa", "dense", "-")] for m in ("omp", "parp")},
                                abs=1e-4)


def _results_tsv(path, rows):
    cols = ["lang", "method", "target_sparsity", "seed", "split", "decoder", "WER", "unit_error"]
    path.write_text("\t".join(cols) + "\n" + "".join("\t".join(str(r.get(c, "-")) for c in cols) + "\n" for r in rows))
    return path


def _cost_row(method: str, sparsity: float, seed: int, unit_error: float, **other) -> dict:
    """One test-split Viterbi row of a results.tsv for the `cost` tests (``other``: lang, decoder, ...)."""
    return {"lang": "en", "split": "test", "decoder": "viterbi", "WER": 90.0, "method": method,
            "target_sparsity": sparsity, "seed": seed, "unit_error": unit_error, **other}


def test_cost_pairs_each_point_with_the_dense_of_its_own_file_and_seed(tmp_path, capsys):
    """Two sessions' slices: seed 1 has a dense model in each; a point is never paired across files."""
    a = _results_tsv(tmp_path / "a.tsv", [
        _cost_row("dense", 0, 1, 47.0),
        _cost_row("dense", 0, 2, 45.0),
        _cost_row("omp", 0.5, 1, 48.0),
        _cost_row("omp", 0.5, 2, 48.0),
        _cost_row("omp", 0.5, 3, 40.0),  # no dense: left out
        _cost_row("omp", 0.5, 1, 1.0, decoder="kenlm")])
    b = _results_tsv(tmp_path / "b.tsv", [
        _cost_row("dense", 0, 1, 50.0),
        _cost_row("omp", 0.9, 1, 54.0)])
    out = tmp_path / "c.png"
    assert sweep_cli.main(["cost", str(a), str(b), "--out", str(out)]) == 0
    assert "1 pruned rows without a dense row" in capsys.readouterr().out
    got = {(r["method"], r["sparsity"]): r for r in csv.DictReader(open(tmp_path / "c.tsv"), delimiter="\t")}
    assert float(got[("omp", "0.5000")]["cost_mean"]) == pytest.approx(2.0)  # (+1 and +3) / 2
    assert float(got[("omp", "0.5000")]["cost_std"]) == pytest.approx(2 ** 0.5, rel=1e-3)  # sample std
    assert got[("omp", "0.5000")]["n"] == "2" and got[("omp", "0.5000")]["costs (per seed)"] == "+1.00 / +3.00"
    assert float(got[("omp", "0.9000")]["cost_mean"]) == pytest.approx(4.0)  # 54 - 50 (b's dense), not 54 - 47
    assert out.stat().st_size > 1000
    # --lang: only that language's unpaired rows are counted as left out
    c = _results_tsv(tmp_path / "c.tsv", [_cost_row("omp", 0.5, 1, 1.0, lang="de")])
    assert sweep_cli.main(["cost", str(a), str(c), "--lang", "en", "--out", str(tmp_path / "e.png")]) == 0
    assert "; 1 pruned rows without a dense row" in capsys.readouterr().out
    # bad input: one clear line, nothing written
    (tmp_path / "x.tsv").write_text("not\ta\tresults\n1\t2\t3\n")
    for argv, msg in ((["cost", str(tmp_path / "none.tsv"), "--out", str(out)], "does not exist"),
                      (["cost", str(tmp_path / "x.tsv"), "--out", str(out)], "is not a sweep results.tsv"),
                      (["cost", str(a), "--out", str(tmp_path / "c.tsv")], "give a .png"),
                      (["cost", str(a), "--lang", "xx", "--out", str(tmp_path / "d.png")], "no pruned point")):
        assert sweep_cli.main(argv) == 2
        assert msg in capsys.readouterr().err
    assert not (tmp_path / "d.png").exists()


def test_cost_versus_another_method_pairs_by_file_seed_and_sparsity(tmp_path, capsys):
    """--versus omp: PARP - OMP of the same file, seed and sparsity (never OMP of another sparsity or file)."""
    a = _results_tsv(tmp_path / "a.tsv", [
        _cost_row("dense", 0, 1, 30.0),
        _cost_row("omp", 0.5, 1, 40.0),
        _cost_row("omp", 0.5, 2, 42.0),
        _cost_row("omp", 0.9, 1, 50.0),
        _cost_row("parp", 0.5, 1, 39.0),
        _cost_row("parp", 0.5, 2, 45.0),
        _cost_row("parp", 0.7, 1, 1.0)])  # no OMP at 0.7
    b = _results_tsv(tmp_path / "b.tsv", [
        _cost_row("omp", 0.9, 1, 60.0),
        _cost_row("parp", 0.9, 1, 58.0)])
    out = tmp_path / "v.png"
    assert sweep_cli.main(["cost", str(a), str(b), "--versus", "omp", "--out", str(out)]) == 0
    assert "1 pruned rows without a omp row" in capsys.readouterr().out  # parp 0.7; dense is not a point
    got = {(r["method"], r["sparsity"]): r for r in csv.DictReader(open(tmp_path / "v.tsv"), delimiter="\t")}
    assert set(got) == {("parp", "0.5000"), ("parp", "0.9000")}  # OMP itself is the zero line
    assert got[("parp", "0.5000")]["costs (per seed)"] == "-1.00 / +3.00"
    assert float(got[("parp", "0.5000")]["cost_mean"]) == pytest.approx(1.0)
    assert got[("parp", "0.9000")]["costs (per seed)"] == "-2.00"  # 58 - 60 (b's OMP), not 58 - 50
    assert "| method | sparsity | n | minus omp | per seed |" in (tmp_path / "v.md").read_text()
    # the default stays pruned - dense; a method no table has is one clear line naming those it has
    assert sweep_cli.main(["cost", str(a), "--versus", "opm", "--out", str(tmp_path / "w.png")]) == 2
    err = capsys.readouterr().err
    assert "no pruned point has a opm row" in err and "methods in the tables: dense, omp, parp" in err
    assert not (tmp_path / "w.png").exists()


_COLLECT_COLS = ["lang", "method", "mask_from", "target_sparsity", "actual_sparsity", "seed", "split", "decoder", "WER",
                 "unit", "unit_error", "transformer_params", "mask_iou_init", "checkpoint"]


def _collect_tsv(path, rows, cols=_COLLECT_COLS):
    base = dict(lang="en", mask_from="-", actual_sparsity="0.0000", split="test", decoder="viterbi", WER="90.0000",
                unit="CER", transformer_params="100", mask_iou_init="-", checkpoint="/x.pt")
    path.write_text("\t".join(cols) + "\n" + "".join("\t".join(str({**base, **r}[c]) for c in cols) + "\n"
                                                     for r in rows))
    return path


def test_merge_keeps_one_row_per_point_and_refuses_a_rerun_that_does_not_repeat(tmp_path, capsys):
    """Two streams' work folders share seed 2's dense model; a third table reran a point differently."""
    dense2 = {"method": "dense", "target_sparsity": "0.0000", "seed": 2, "unit_error": "35.5200"}
    a = _collect_tsv(tmp_path / "a.tsv", [
        {"method": "omp", "target_sparsity": "0.7000", "actual_sparsity": "0.7000", "seed": 2, "unit_error": "36.0"},
        {**dense2, "decoder": "kenlm"}, dense2,
        {"method": "dense", "target_sparsity": "0.0000", "seed": 1, "unit_error": "35.0100"},
        {"lang": "nl", "method": "dense", "target_sparsity": "0.0000", "seed": 1, "unit_error": "20.0"}])
    b = _collect_tsv(tmp_path / "b.tsv", [dense2, {**dense2, "decoder": "kenlm"},
                                           {"method": "mpi", "target_sparsity": "0.7000", "seed": 2, "unit_error": "38.0"}])
    out = tmp_path / "merged.tsv"
    assert sweep_cli.main(["merge", str(a), str(b), "--out", str(out), "--lang", "en"]) == 0
    assert "5 rows (5 distinct of 2 table(s), 2 repeated with the same numbers, 0 conflicting)" in capsys.readouterr().out
    rows = list(csv.DictReader(open(out), delimiter="\t"))
    assert [(r["method"], r["seed"], r["decoder"]) for r in rows] == [  # dense first, then by method, seed, decoder
        ("dense", "1", "viterbi"), ("dense", "2", "viterbi"), ("dense", "2", "kenlm"), ("mpi", "2", "viterbi"),
        ("omp", "2", "viterbi")]
    assert list(rows[0]) == _COLLECT_COLS
    # merging into an existing table: its rows come first; the same rows again are repeats only
    assert sweep_cli.main(["merge", str(b), "--out", str(out)]) == 0
    assert "(5 distinct of 2 table(s), 3 repeated" in capsys.readouterr().out
    # a rerun with other numbers: refused, naming the point, and the table is left as it was
    before = out.read_text()
    c = _collect_tsv(tmp_path / "c.tsv", [{**dense2, "unit_error": "35.9000"}])
    assert sweep_cli.main(["merge", str(c), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "1 row(s) measured differently" in err and "en dense - 0.0000 2 test viterbi" in err
    assert "unit_error 35.5200 -> 35.9000" in err and "Traceback" not in err and out.read_text() == before
    assert sweep_cli.main(["merge", str(c), "--out", str(out), "--on-conflict", "first"]) == 0
    assert out.read_text() == before and "conflict (first kept)" in capsys.readouterr().out
    assert sweep_cli.main(["merge", str(c), "--out", str(out), "--on-conflict", "last"]) == 0
    got = {(r["method"], r["seed"], r["decoder"]): r["unit_error"] for r in csv.DictReader(open(out), delimiter="\t")}
    assert got[("dense", "2", "viterbi")] == "35.9000" and got[("dense", "1", "viterbi")] == "35.0100"
    # one slice of folders that trained several sparsities: its points and every dense row
    s3 = _collect_tsv(tmp_path / "s3.tsv", [{"method": "omp", "target_sparsity": "0.3000", "seed": 2, "unit_error": "35.0"}])
    assert sweep_cli.main(["merge", str(a), str(b), str(s3), "--out", str(tmp_path / "s03.tsv"), "--sparsities", "0.3"]) == 0
    assert "5 rows (5 distinct of 3 table(s), 2 repeated" in capsys.readouterr().out
    assert [(r["lang"], r["method"], r["target_sparsity"], r["seed"]) for r in
            csv.DictReader(open(tmp_path / "s03.tsv"), delimiter="\t") if r["decoder"] == "viterbi"] == [
        ("en", "dense", "0.0000", "1"), ("en", "dense", "0.0000", "2"), ("en", "omp", "0.3000", "2"),
        ("nl", "dense", "0.0000", "1")]
    assert sweep_cli.main(["merge", str(a), "--out", str(tmp_path / "s0.tsv"), "--sparsities", "0"]) == 2
    assert "--sparsities 0 is out of range" in capsys.readouterr().err and not (tmp_path / "s0.tsv").exists()
    # bad input: one clear line, nothing written
    (tmp_path / "e.tsv").write_text("lang\tmethod\n")
    for argv, msg in (([str(tmp_path / "e.tsv")], "is not a sweep results.tsv"),
                      ([str(tmp_path / "none.tsv")], "does not exist")):
        assert sweep_cli.main(["merge", *argv, "--out", str(tmp_path / "new.tsv")]) == 2
        assert msg in capsys.readouterr().err
        assert not (tmp_path / "new.tsv").exists()


def test_sweep_bad_input(tmp_path, pretrained, capsys):
    base = ["run", "--workdir", str(tmp_path / "w"), "--data-root", str(tmp_path), "--pretrained", str(pretrained),
            "--langs", "xx"]
    assert sweep_cli.main(base + ["--methods", "magic"]) == 2
    assert "unknown method" in capsys.readouterr().err
    assert sweep_cli.main(base + ["--sparsities", "1.5"]) == 2
    assert "out of range" in capsys.readouterr().err
    assert sweep_cli.main(base) == 2
    assert "parp-fairseq-corpus build" in capsys.readouterr().err
    os.makedirs(tmp_path / "xx")
    (tmp_path / "xx" / "dict.ltr.txt").write_text("A 1\n")
    for bad, msg in ((["--jobs", "0"], "at least 1"), (["--jobs", "2", "--world-size", "2", "--seeds", "1", "2"],
                                                      "use one of the two"), (["--threads", "0"], "at least 1 torch"),
                     (["--dense-from", str(tmp_path / "nope")], "is not a folder")):
        assert sweep_cli.main(base + ["--labels", "ltr", *bad]) == 2
        assert msg in capsys.readouterr().err and not (tmp_path / "w").exists()  # nothing written
    same = ["run", "--workdir", str(tmp_path / "xx"), "--dense-from", str(tmp_path / "xx")] + base[3:]
    assert sweep_cli.main(same + ["--labels", "ltr"]) == 2
    assert "is --workdir itself" in capsys.readouterr().err
    assert sweep_cli.main(["collect", "--workdir", str(tmp_path / "none")]) == 2


def _hydra_record(run_dir, config_name, overrides):
    """What fairseq-hydra-train leaves in RUN/hydra/.hydra (the two files run_recipe reads)."""
    h = run_dir / "hydra" / ".hydra"
    h.mkdir(parents=True)
    (h / "hydra.yaml").write_text(f"hydra:\n  job:\n    name: hydra_train\n    config_name: {config_name}\n")
    (h / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))


def test_dense_from_waits_for_the_other_stream_and_refuses_what_nobody_finishes(tmp_path):
    src_work, work = tmp_path / "a", tmp_path / "b"
    src = src_work / "en" / "dense_seed3"
    place = ["common.cpu=true", f"checkpoint.save_dir={src}", "distributed_training.distributed_world_size=1"]
    recipe = ["task.data=/d/en", "common.seed=3"]
    _hydra_record(src, "study", place + recipe)
    want = ("study", sweep_cli.recipe_overrides(recipe + ["common.cpu=false", "checkpoint.save_dir=/elsewhere"]))
    dst = work / "en" / "dense_seed3"
    lines = []
    with pytest.raises(RuntimeError, match="not a finished dense run .* nothing is training"):
        sweep_cli.link_dense_reference(src_work, dst, want, lines.append, poll=0.01)
    assert not os.path.lexists(dst)
    # the other stream's sweep holds its folder and finishes the point a moment later: this one waits
    with workdir_lock(src_work, "parp-fairseq-sweep run"):
        timer = threading.Timer(0.3, (src / "DONE").touch)
        timer.start()
        sweep_cli.link_dense_reference(src_work, dst, want, lines.append, poll=0.02)
        timer.join()
    assert dst.is_symlink() and dst.resolve() == src.resolve()
    assert sum("waiting for" in ln for ln in lines) == 1 and "(linked, not retrained)" in lines[-1]
    assert sorted(p.name for p in dst.parent.iterdir()) == ["dense_seed3"]  # no temporary link left
    # another recipe (config name or an override that changes what it learns) is refused
    for other in (("mini", want[1]), ("study", sweep_cli.recipe_overrides(recipe + ["optimization.lr=[1e-3]"]))):
        with pytest.raises(ValueError, match="another recipe"):
            sweep_cli.link_dense_reference(src_work, tmp_path / "c" / "en" / "dense_seed3", other, lines.append)
    with pytest.raises(ValueError, match="no readable hydra record"):
        sweep_cli.run_recipe(tmp_path)


def test_point_names_round_trip(tmp_path):
    for args, method, src in ((("nl", "parp", 0.5, 1), "parp", ""), (("nl", "omp", 0.8, 2), "omp", ""),
                              (("es", "parp", 0.5, 1, "nl"), "parp_transfer", "nl"),
                              (("nl", "parp", 0.5, 1, "", "2:4"), "parp-2of4", ""), (("nl", "dense", None, 3), "dense", ""),
                              (("nl", "omp", 0.5, 1, "", "", "neuron+head"), "omp-neuron+head", ""),
                              (("nl", "s3router", 0.1, 1, "", "", "", "kaiming"), "s3router-kaiming", ""),
                              (("nl", "s3router_p", 0.5, 2, "", "", "", "magnitude"), "s3router_p-magnitude", ""),
                              (("nl", "mpi", 0.5, 3, "", "", "", "kaiming"), "mpi", "")):  # no scores to init
        d = sweep_cli.point_dir(tmp_path, *args)
        d.mkdir(parents=True)
        (d / "DONE").touch()
        p = [q for q in sweep_cli._points(tmp_path) if q["dir"] == d][0]
        assert (p["lang"], p["method"], p["src"], p["seed"]) == (args[0], method, src, args[3])
        assert p["target_sparsity"] == (args[2] or 0.0)


def test_sweep_score_init_names_the_points_and_reaches_the_model(corpus, pretrained, tmp_path, capsys):
    """--score-init: S3-Router variants sit beside each other in one work folder, each trained with its init."""
    from parp_fairseq.checkpoints import load_checkpoint, pruning_cfg

    root = tmp_path / "data"
    root.mkdir()
    os.symlink(corpus, root / "aa")
    work = tmp_path / "sweep"
    base = ["run", "--workdir", str(work), "--data-root", str(root), "--pretrained", str(pretrained),
            "--langs", "aa", "--methods", "s3router", "--sparsities", "0.1", "--labels", "ltr",
            "--config-name", "tiny"]
    tail = ["--", "optimization.max_update=4", "checkpoint.save_interval_updates=4",
            "dataset.validate_interval_updates=4"]
    # --no-dense-reference: S3-Router needs no dense model, so none is trained ...
    assert sweep_cli.main(base + ["--score-init", "kaiming", "--no-dense-reference"] + tail) == 0
    assert not (work / "aa" / "dense_seed1").exists()
    # ... until a point starts from it (S3-Router-P); the overlay's own init: no folder suffix
    capsys.readouterr()
    assert sweep_cli.main(base + ["--methods", "s3router", "s3router_p", "--no-dense-reference"] + tail) == 0
    assert (work / "aa" / "dense_seed1" / "DONE").exists()
    # after 4 updates the dense model recognizes nothing yet (valid uer >= 100: garbage, later only blanks): the
    # sweep says so once, naming the points that start from it, and collect's table names its rows
    logged = [ln for ln in (work / "aa/dense_seed1/train.log").read_text().splitlines() if "][valid]" in ln]
    assert logged and all(float(re.search(r"\| uer ([0-9.]+)", ln).group(1)) >= 100 for ln in logged), logged
    out = capsys.readouterr().out
    assert out.count("WARNING: aa/dense_seed1 recognizes nothing (valid uer >= 100 at every one of its") == 1, out
    assert "omp / imp / s3router_p points" in out
    assert sweep_cli.main(["collect", "--workdir", str(work)]) == 0
    assert "Runs that recognize nothing (last valid uer >= 100" in capsys.readouterr().out
    assert "`aa/dense_seed1` (valid uer >= 100" in (work / "results.md").read_text()
    for name, method, init in (("s3router-kaiming_s0.1_seed1", "s3router", "kaiming"),
                               ("s3router_s0.1_seed1", "s3router", "ori"),
                               ("s3router_p_s0.1_seed1", "s3router_p", "magnitude_scale")):
        cfg = pruning_cfg(load_checkpoint(work / "aa" / name / "checkpoint_last.pt"))
        assert (str(cfg["method"]), str(cfg["score_init"])) == (method, init), name
    assert str(cfg["init_from"]) == str(work / "aa" / "dense_seed1" / "checkpoint_last.pt")
    assert {p["method"] for p in sweep_cli._points(work)} == {"dense", "s3router", "s3router-kaiming", "s3router_p"}
    with pytest.raises(SystemExit):
        sweep_cli.main(base + ["--score-init", "gaussian"])


def test_sweep_imp_points_share_their_rounds_and_equal_a_run_of_their_own(corpus, pretrained, tmp_path, capsys,
                                                                          monkeypatch):
    """IMP at 20 % and 30 % (official schedule, 10 points a round): the 30 % point links the 20 % point's two
    rounds in and trains only its third, and lands weight for weight where a run of its own lands (both with
    one torch thread through their --threads, whatever the environment says: a 2-core machine's default
    would make the run alone another run)."""
    import json

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)

    from parp_fairseq.cli import imp as imp_cli
    from parp_fairseq.safe_load import torch_load

    root = tmp_path / "data"
    root.mkdir()
    os.symlink(corpus, root / "aa")
    work = tmp_path / "sweep"
    assert sweep_cli.main(["run", "--workdir", str(work), "--data-root", str(root), "--pretrained", str(pretrained),
                           "--langs", "aa", "--methods", "imp", "--sparsities", "0.2", "0.3", "--labels", "ltr",
                           "--config-name", "tiny", "--imp-schedule", "original", "--imp-rate", "0.1", "--threads", "1",
                           "--", "optimization.max_update=4", "checkpoint.save_interval_updates=4",
                           "dataset.validate_interval_updates=4"]) == 0
    s2, s3 = work / "aa" / "imp_s0.2_seed1", work / "aa" / "imp_s0.3_seed1"
    for r in (1, 2):
        assert (s3 / f"round{r}" / "REUSED_FROM").read_text().strip() == str((s2 / f"round{r}").resolve())
        assert os.path.samefile(s3 / f"round{r}" / "checkpoint_last.pt", s2 / f"round{r}" / "checkpoint_last.pt")
    assert not (s3 / "round3" / "REUSED_FROM").exists() and (s3 / "round3" / "DONE").exists()
    rows = [line.split("\t") for line in (s3 / "imp_rounds.tsv").read_text().splitlines()]
    assert rows[0][-1] == "trained_in" and [r[-1] for r in rows[1:]] == ["", str((s2 / "round1").resolve()),
                                                                       str((s2 / "round2").resolve()), ""]
    # the same 30 % run with every round trained here
    rec = json.loads((s3 / "imp.json").read_text())["settings"]
    assert imp_cli.main(["--config-dir", rec["config_dir"], "--config-name", "tiny", "--workdir", str(tmp_path / "alone"),
                         "--sparsity", "0.3", "--rate", "0.1", "--schedule", "original", "--start-checkpoint",
                         rec["start_checkpoint"], "--threads", "1", "--", *rec["overrides"]]) == 0
    assert (tmp_path / "alone" / "threads").read_text() == (s3 / "threads").read_text() == "1\n"
    assert (tmp_path / "alone" / "cpu").read_text() == (s3 / "cpu").read_text() == cpu_kind() + "\n"
    shared = torch_load(s3 / "final_checkpoint.pt")["model"]
    alone = torch_load(tmp_path / "alone" / "final_checkpoint.pt")["model"]
    assert shared.keys() == alone.keys()
    assert all(torch.equal(shared[k], alone[k]) for k in shared), [k for k in shared if not torch.equal(shared[k], alone[k])][:3]
    assert sum(int((~v).sum()) for k, v in shared.items() if k.endswith("_mask")) > 0


def test_structured_sweep_decodes_sliced_models(corpus, pretrained, tmp_path):
    root = tmp_path / "data"
    (root / "aa").mkdir(parents=True)
    for f in corpus.iterdir():  # the corpus, plus a held-out-speaker split as a real task has (test_spk)
        os.symlink(f, root / "aa" / f.name)
        if f.name.startswith("test."):
            os.symlink(f, root / "aa" / f.name.replace("test.", "test_spk."))
    work = tmp_path / "sweep"
    assert sweep_cli.main(["run", "--workdir", str(work), "--data-root", str(root), "--pretrained", str(pretrained),
                           "--langs", "aa", "--methods", "parp", "--sparsities", "0.5", "--labels", "ltr",
                           "--config-name", "tiny", "--ranking", "tensor", "--granularity", "neuron+head", "--",
                           "optimization.max_update=6", "checkpoint.save_interval_updates=6",
                           "dataset.validate_interval_updates=6"]) == 0
    point = work / "aa" / "parp-tensor-neuron+head_s0.5_seed1"
    assert (point / "DONE").exists()
    assert sweep_cli.main(["collect", "--workdir", str(work), "--slice"]) == 0
    all_rows = list(csv.DictReader(open(work / "results.tsv"), delimiter="\t"))
    # test_spk is decoded too, with the same errors as test here (the same files)
    by = {(r["method"], r["split"]): float(r["unit_error"]) for r in all_rows}
    assert {r["split"] for r in all_rows} == {"test", "test_spk"}
    assert by[("dense", "test_spk")] == by[("dense", "test")]
    assert "| aa | aa test_spk |" in (work / "results.md").read_text()
    rows = {r["method"]: r for r in all_rows if r["split"] == "test"}
    sliced, dense = rows["parp-tensor-neuron+head"], rows["dense"]
    assert sliced["checkpoint"] == str(point / "sliced.pt") and (point / "decode" / "test_viterbi_sliced").is_dir()
    # half of every layer's heads and neurons gone: about half the transformer parameters
    assert 0.45 < int(sliced["transformer_params"]) / int(dense["transformer_params"]) < 0.6


def test_job_settings_give_each_job_one_gpu_or_its_share_of_the_cores():
    # one job: the stock behaviour (every visible GPU through fairseq's distributed training) ...
    assert sweep_cli.job_settings(1, n_gpus=2, environ={}) == (
        ["common.cpu=false", "distributed_training.distributed_world_size=2"], [{}])
    # ... and on CPU one process with one torch thread, as every CPU job gets whatever --jobs (a seed's
    # numbers depend on the thread count); --threads, else the environment's OMP_NUM_THREADS, changes it
    cpu = ["common.cpu=true", "distributed_training.distributed_world_size=1"]
    assert sweep_cli.job_settings(1, n_gpus=0, environ={}, cpu_count=16) == (cpu, [{"OMP_NUM_THREADS": "1"}])
    assert sweep_cli.job_settings(2, n_gpus=0, environ={}, cpu_count=16) == (cpu, [{"OMP_NUM_THREADS": "1"}] * 2)
    assert sweep_cli.job_settings(1, n_gpus=0, environ={"OMP_NUM_THREADS": "3"})[1] == [{"OMP_NUM_THREADS": "3"}]
    assert sweep_cli.job_settings(2, n_gpus=0, environ={"OMP_NUM_THREADS": "3"}, threads=2)[1] == \
        [{"OMP_NUM_THREADS": "2"}] * 2
    with pytest.raises(ValueError, match="at least 1 torch thread"):
        sweep_cli.job_settings(1, n_gpus=0, threads=0)
    dist, envs = sweep_cli.job_settings(3, n_gpus=2, environ={}, cpu_count=16)
    assert dist == ["common.cpu=false", "distributed_training.distributed_world_size=1"]
    assert [e["CUDA_VISIBLE_DEVICES"] for e in envs] == ["0", "1", "0"] and {e["OMP_NUM_THREADS"] for e in envs} == {"5"}
    # the GPUs this process may see, not 0..n-1; a user's thread count is left alone
    _, envs = sweep_cli.job_settings(3, n_gpus=2, environ={"CUDA_VISIBLE_DEVICES": "3,5", "OMP_NUM_THREADS": "2"})
    assert envs == [{"CUDA_VISIBLE_DEVICES": "3"}, {"CUDA_VISIBLE_DEVICES": "5"}, {"CUDA_VISIBLE_DEVICES": "3"}]
    assert sweep_cli.job_settings(2, n_gpus=2, environ={}, threads=4)[1] == [
        {"OMP_NUM_THREADS": "4", "CUDA_VISIBLE_DEVICES": "0"}, {"OMP_NUM_THREADS": "4", "CUDA_VISIBLE_DEVICES": "1"}]
    with pytest.raises(ValueError, match="at least 1"):
        sweep_cli.job_settings(0)
    with pytest.raises(ValueError, match="use one of the two"):
        sweep_cli.job_settings(2, requested=2, n_gpus=2, environ={})


def test_record_cpu_run_writes_the_count_and_cpu_once_and_warns_on_a_resume_with_another(tmp_path):
    lines = []
    sweep_cli.record_cpu_run(tmp_path, {"CUDA_VISIBLE_DEVICES": "0"}, lines.append)  # GPU / user env: nothing
    assert not (tmp_path / "threads").exists() and not (tmp_path / "cpu").exists()
    sweep_cli.record_cpu_run(tmp_path, {"OMP_NUM_THREADS": "1"}, lines.append)
    sweep_cli.record_cpu_run(tmp_path, {"OMP_NUM_THREADS": "1"}, lines.append)  # a resume on the same setting
    assert (tmp_path / "threads").read_text() == "1\n" and lines == []
    here = (tmp_path / "cpu").read_text().strip()
    assert here == cpu_kind() and f"torch {torch.__version__} " in here and " (family " in here
    sweep_cli.record_cpu_run(tmp_path, {"OMP_NUM_THREADS": "2"}, lines.append)
    assert (tmp_path / "threads").read_text() == "1\n"  # the count it started with
    assert len(lines) == 1 and "started with 1 torch thread(s) and goes on with 2" in lines[0] and "--threads 1" in lines[0]
    # resumed on another CPU kind (or torch build): the same warning, naming both
    sweep_cli.record_cpu_run(tmp_path, {"OMP_NUM_THREADS": "1"}, lines.append, kind="Other CPU, torch 0.0 AVX2")
    assert len(lines) == 2 and f"started on {here} and goes on on Other CPU, torch 0.0 AVX2" in lines[1]
    assert (tmp_path / "cpu").read_text().strip() == here


def test_sweep_jobs_train_seeds_at_once_and_repeat_the_one_at_a_time_runs(corpus, pretrained, tmp_path, monkeypatch,
                                                                          capsys):
    """--jobs 2: both seeds' dense -> OMP chains train at once in one work folder, and each run equals the same
    seed trained alone (seeded span masks; one torch thread per run by default, with --jobs 1 too): running in
    parallel changes nothing."""
    import torch

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)  # the sweep's own default, not the environment's
    root = tmp_path / "data"
    root.mkdir()
    os.symlink(corpus, root / "aa")

    def sweep(work, *extra):
        return sweep_cli.main(["run", "--workdir", str(work), "--data-root", str(root), "--pretrained", str(pretrained),
                               "--langs", "aa", "--methods", "omp", "--sparsities", "0.5", "--labels", "ltr",
                               "--config-name", "tiny", *extra, "--", "optimization.max_update=8",
                               "checkpoint.save_interval_updates=8", "dataset.validate_interval_updates=8"])

    assert sweep(tmp_path / "par", "--seeds", "1", "2", "--jobs", "2") == 0
    out = capsys.readouterr().out
    assert "seeds 1 2, 2 at a time" in out and "[dense_seed2]" in out  # progress lines name their run
    assert sweep(tmp_path / "one", "--seeds", "2") == 0
    for d in ("dense_seed2", "omp_s0.5_seed2"):
        a = torch.load(tmp_path / "par/aa" / d / "checkpoint_last.pt", weights_only=True)["model"]
        b = torch.load(tmp_path / "one/aa" / d / "checkpoint_last.pt", weights_only=True)["model"]
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), d
    assert (tmp_path / "par/aa/omp_s0.5_seed1/DONE").exists()
    assert (tmp_path / "one/aa/dense_seed2/threads").read_text() == (tmp_path / "par/aa/dense_seed2/threads").read_text() \
        == "1\n"
    a = torch.load(tmp_path / "par/aa/dense_seed1/checkpoint_last.pt", weights_only=True)["model"]
    assert not all(torch.equal(a[k], b[k]) for k in a)  # the other seed is another run


def test_child_group_stop_ends_every_job_and_refuses_new_ones(tmp_path):
    import threading
    import time

    from parp_fairseq.procutil import ChildGroup, run_child

    group, rcs = ChildGroup(), []
    jobs = [threading.Thread(target=lambda: rcs.append(run_child(["sleep", "60"], log_file=open(os.devnull, "w"),
                                                                 group=group))) for _ in range(2)]
    for j in jobs:
        j.start()
    deadline = time.time() + 10
    while len(group._procs) < 2 and time.time() < deadline:
        time.sleep(0.05)
    t0 = time.time()
    group.stop()
    for j in jobs:
        j.join(timeout=30)
    assert sorted(rcs) == [-15, -15] and time.time() - t0 < 10  # SIGTERM'd, not left sleeping
    with pytest.raises(RuntimeError, match="were stopped"):
        run_child(["true"], group=group)


def test_in_parallel_one_failure_stops_the_running_jobs_and_starts_no_more():
    import threading
    import time

    from parp_fairseq.procutil import ChildGroup, run_child

    group, slot, started, rcs = ChildGroup(), threading.local(), [], []

    def fn(item):
        started.append((item, slot.env["CUDA_VISIBLE_DEVICES"]))
        if item == 1:
            time.sleep(0.5)
            raise ValueError("seed 1 failed")
        rcs.append(run_child(["sleep", "60"], log_file=open(os.devnull, "w"), group=group))

    t0 = time.time()
    with pytest.raises(ValueError, match="seed 1 failed"):
        sweep_cli._in_parallel([1, 2, 3, 4], fn, [{"CUDA_VISIBLE_DEVICES": "0"}, {"CUDA_VISIBLE_DEVICES": "1"}],
                               slot, group)
    assert time.time() - t0 < 20 and rcs == [-15]  # seed 2's run was stopped, not waited for
    assert sorted(i for i, _ in started) == [1, 2] and {g for _, g in started} == {"0", "1"}


def _sessions_get_autogroups() -> bool:
    """True where the kernel schedules a new session as an autogroup of its own (sched_autogroup): a
    process started with ``start_new_session`` reads an ``/autogroup-N nice K`` line different from ours.
    Elsewhere (no autogroups, a sandboxed /proc, autogroups off) the file is missing, empty or shared."""
    import subprocess

    def read(new_session: bool) -> str:
        try:
            return subprocess.run(["cat", "/proc/self/autogroup"], capture_output=True, text=True,
                                  start_new_session=new_session, timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    ours, new = read(False), read(True)
    return bool(ours) and bool(new) and new.split()[0] != ours.split()[0]


@pytest.mark.skipif(not _sessions_get_autogroups(), reason="new sessions get no autogroup of their own here")
def test_training_children_keep_a_niced_sweeps_priority_in_their_own_session():
    """run_child starts each child in a session of its own; with sched_autogroup that session would get a
    full CPU share beside everything else however niced the sweep is, unless its autogroup is niced too."""
    import subprocess
    import sys

    code = ("import os; os.nice(7); from parp_fairseq.procutil import run_child; lines = []; "
            "run_child(['cat', '/proc/self/autogroup'], on_line=lines.append); "
            "print(open('/proc/self/autogroup').read().strip()); print(''.join(lines).strip())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    parent, child = out[0], out[1]
    assert child.split()[0] != parent.split()[0]  # a session (autogroup) of its own
    base = os.nice(0)  # the test suite itself may run niced
    assert child.endswith(f"nice {min(base + 7, 19)}"), (parent, child)
    # a parent at nice 0 leaves the child's session alone
    code0 = code.replace("os.nice(7); ", "")
    out0 = subprocess.run([sys.executable, "-c", code0], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out0[1].endswith(f"nice {base}")

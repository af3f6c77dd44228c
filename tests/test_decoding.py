"""Decoding: Viterbi and KenLM lexicon beam search (flashlight-text), fairseq-generate, WER/PER."""

import subprocess

import pytest
import torch
from fairseq.data import Dictionary

from conftest import fairseq_generate, hydra_train
from parp_fairseq.cli import decode as decode_cli
from parp_fairseq.decoding.decoders import ViterbiDecoder, load_lexicon
from parp_fairseq.decoding.lm import build as build_lm
from parp_fairseq.decoding.viterbi import ctc_greedy, edit_counts, error_rate


def _levenshtein(a, b):  # independent oracle
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


def test_error_rates_of_known_strings():
    refs = [["the", "cat", "sat"], ["on", "the", "mat"], ["a"]]
    hyps = [["the", "bat", "sat", "down"], ["on", "mat"], []]
    errs, n = edit_counts(hyps, refs)
    assert (errs, n) == (2 + 1 + 1, 7)
    assert errs == sum(_levenshtein(h, r) for h, r in zip(hyps, refs))
    assert error_rate(hyps, refs) == pytest.approx(100 * 4 / 7)
    # PER over phone sequences
    assert error_rate([["p", "a", "t"]], [["b", "a", "t", "a"]]) == pytest.approx(50.0)
    with pytest.raises(ValueError, match="empty"):
        error_rate([["x"]], [[]])


def _dict(symbols):
    d = Dictionary()
    for s in symbols:
        d.add_symbol(s)
    return d


def test_viterbi_collapses_repeats_and_blanks():
    d = _dict(["|", "a", "b", "d"])
    blank = d.bos()
    seq = [blank, d.index("b"), d.index("b"), blank, d.index("a"), d.index("a"), d.index("d"),
           d.index("|"), blank, d.index("a"), blank, d.index("a"), d.index("|")]
    em = torch.full((1, len(seq), len(d)), -10.0)
    for t, k in enumerate(seq):
        em[0, t, k] = 0.0
    hyp = ViterbiDecoder(d).decode(em)[0][0]
    assert [d[int(t)] for t in hyp["tokens"]] == ["b", "a", "d", "|", "a", "a", "|"]
    assert hyp["words"] == ["bad", "aa"]
    with pytest.raises(ValueError, match="B x T x V"):
        ctc_greedy(em[0])


def test_lexicon_errors(tmp_path):
    d = _dict(["|", "a", "b", "d"])
    with pytest.raises(FileNotFoundError, match="lexicon"):
        load_lexicon(str(tmp_path / "missing.txt"), d)
    (tmp_path / "lex.txt").write_text("bad\tb a d |\nzap\tz a p |\n")
    with pytest.raises(ValueError, match="missing from the model's dictionary.*'zap'"):
        load_lexicon(str(tmp_path / "lex.txt"), d)


@pytest.fixture(scope="module")
def trained(corpus, pretrained, tmp_path_factory):
    """A tiny model finetuned long enough to half-learn the tone letters, pruned with PARP."""
    d = tmp_path_factory.mktemp("trained")
    hydra_train("configs/finetune", "tiny", d, f"task.data={corpus}", f"model.w2v_path={pretrained}",
                "pruning=parp", "model.pruning.sparsity=0.3", "model.pruning.reprune_interval=50",
                "optimization.max_update=400", "optimization.lr=[0.002]", "dataset.validate_interval_updates=200",
                "checkpoint.save_interval_updates=200")
    return d / "checkpoint_last.pt"


@pytest.fixture(scope="module")
def lm(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("lm") / "lm"
    build_lm(str(corpus / "train.wrd"), str(out), order=2, dict_path=str(corpus / "dict.ltr.txt"))
    return out


def test_lm_builder_outputs_and_cache(lm, corpus, capsys):
    assert (lm / "lm.arpa").read_text().startswith("\n\\data\\") or "\\data\\" in (lm / "lm.arpa").read_text()
    assert (lm / "lm.bin").stat().st_size > 0
    lex = (lm / "lexicon.txt").read_text().splitlines()
    assert "bad\tb a d |" in lex
    build_lm(str(corpus / "train.wrd"), str(lm), order=2, dict_path=str(corpus / "dict.ltr.txt"))
    assert "up to date" in capsys.readouterr().out
    with pytest.raises(ValueError, match="unigram"):
        build_lm(str(corpus / "train.wrd"), str(lm.parent / "x"), order=1)


def test_lm_leaves_out_the_transcripts_it_is_tuned_on(tmp_path, capsys):
    """--exclude valid.wrd: an LM to tune the LM weight on valid must not have seen valid's sentences."""
    from parp_fairseq.decoding import lm as lm_cli

    (tmp_path / "text.txt").write_text("the cat sat\nthe dog ran\n  a bird flew\nthe cat sat\n")
    (tmp_path / "valid.wrd").write_text("a bird flew\n")
    assert lm_cli.main(["--text", str(tmp_path / "text.txt"), "--out-dir", str(tmp_path / "lm"), "--order", "2",
                        "--exclude", str(tmp_path / "valid.wrd")]) == 0
    assert "left out 1 line(s)" in capsys.readouterr().out
    arpa = (tmp_path / "lm" / "lm.arpa").read_text()
    unigrams = {ln.split("\t")[1] for ln in arpa.split("\\1-grams:")[1].split("\\2-grams:")[0].splitlines() if "\t" in ln}
    assert {"the", "cat", "dog"} <= unigrams and not {"bird", "flew"} & unigrams
    lex = (tmp_path / "lm" / "lexicon.txt").read_text()
    assert "cat\t" in lex and "bird" not in lex
    assert sorted(p.name for p in (tmp_path / "lm").iterdir() if not p.name.startswith(".")) == [
        "lexicon.txt", "lm.arpa", "lm.bin", "lm.json"]  # the filtered text was a temporary
    # lm.json tells which transcripts the LM saw (collect --tune-on checks the tuning split with it)
    seen = lm_cli.lines_seen_by_lm
    assert seen(tmp_path / "lm" / "lm.bin", ["a bird flew", "the dog ran", "not in it"]) == 1
    # the same text without --exclude is another LM, not "up to date"
    assert lm_cli.main(["--text", str(tmp_path / "text.txt"), "--out-dir", str(tmp_path / "lm"), "--order", "2"]) == 0
    assert "up to date" not in capsys.readouterr().out and "bird" in (tmp_path / "lm" / "lexicon.txt").read_text()
    assert seen(tmp_path / "lm" / "lm.bin", ["a bird flew", "the dog ran", "not in it"]) == 2
    (tmp_path / "text.txt").write_text("other text\n")  # changed since: cannot tell
    assert seen(tmp_path / "lm" / "lm.bin", ["a bird flew"]) is None and seen(tmp_path / "x.bin", ["a"]) is None
    # bad input: one clear line, nothing written
    for bad, msg in (([str(tmp_path / "none.wrd")], "--exclude"), ([str(tmp_path / "text.txt")], "once the --exclude")):
        assert lm_cli.main(["--text", str(tmp_path / "text.txt"), "--out-dir", str(tmp_path / "lm2"), "--order", "2",
                            "--exclude", *bad]) == 2
        err = capsys.readouterr().err
        assert msg in err and "Traceback" not in err and not (tmp_path / "lm2").exists()


def _decode(tmp_path, name, *args):
    out = tmp_path / name
    assert decode_cli.main([*args, "--results-dir", str(out)]) == 0
    summary = (out / "summary.tsv").read_text().splitlines()
    return out, summary


def _best_wer(summary):
    return min(float(line.split("\t")[3]) for line in summary[1:])


def test_kenlm_lexicon_beam_search_beats_viterbi(trained, corpus, lm, tmp_path):
    common = ["--checkpoint", str(trained), "--data", str(corpus), "--split", "test"]
    _, vit = _decode(tmp_path, "vit", *common)
    out, kl = _decode(tmp_path, "kenlm", *common, "--decoder", "kenlm", "--lm", str(lm / "lm.bin"),
                      "--lexicon", str(lm / "lexicon.txt"), "--beam", "50", "--lm-weight", "0.5", "2",
                      "--word-score", "-1", "1")
    assert len(kl) == 1 + 4  # header + the 2 x 2 sweep
    v, k = _best_wer(vit), _best_wer(kl)
    print(f"test WER viterbi {v:.1f} -> kenlm {k:.1f}")
    assert v > 0 and k < v, (v, k)
    vocab = {ln.split("\t")[0] for ln in (lm / "lexicon.txt").read_text().splitlines()}
    for line in (out / "hypo.word").read_text().splitlines():  # lexicon decoding: only real words
        assert set(line.rsplit(" (None-", 1)[0].split()) <= vocab


def test_fairseq_generate_on_pruned_checkpoint_matches_decode(trained, corpus, tmp_path):
    _, vit = _decode(tmp_path, "vit", "--checkpoint", str(trained), "--data", str(corpus), "--split", "test")
    wer, stdout = fairseq_generate(corpus, trained, "test", batch_size=8)
    assert wer == pytest.approx(float(vit[1].split("\t")[3]), abs=0.01)
    assert "H-0\t" in stdout


def test_decode_scores_every_utterance(trained, corpus, tmp_path):
    """fairseq's batch_by_size with required_batch_size_multiple=8 (fairseq-generate's default) drops
    the last len % 8 utterances; the decode command must score all of them."""
    import shutil

    sub = tmp_path / "odd"
    sub.mkdir()
    for f in corpus.glob("dict.*"):
        shutil.copy(f, sub)
    tsv = (corpus / "test.tsv").read_text().splitlines()
    (sub / "test.tsv").write_text("\n".join(tsv[:12]) + "\n")  # root + 11 utterances
    for ext in ("ltr", "wrd"):
        (sub / f"test.{ext}").write_text("\n".join((corpus / f"test.{ext}").read_text().splitlines()[:11]) + "\n")
    out, rows = _decode(tmp_path, "odd_decoded", "--checkpoint", str(trained), "--data", str(sub), "--split", "test")
    assert rows[1].split("\t")[5] == "11"
    assert len((out / "hypo.word").read_text().splitlines()) == 11


def test_exported_checkpoint_decodes_identically(trained, corpus, tmp_path):
    stock = tmp_path / "stock.pt"
    assert subprocess.run(["parp-fairseq-export", str(trained), str(stock)]).returncode == 0
    a, _ = _decode(tmp_path, "masked", "--checkpoint", str(trained), "--data", str(corpus), "--split", "test")
    b, _ = _decode(tmp_path, "stock", "--checkpoint", str(stock), "--data", str(corpus), "--split", "test")
    assert (a / "hypo.units").read_text() == (b / "hypo.units").read_text()


def test_decode_bad_input(trained, corpus, lm, tmp_path, capsys):
    other = tmp_path / "other"
    other.mkdir()
    for f in ("test.tsv", "test.ltr", "test.wrd"):
        (other / f).write_text((corpus / f).read_text())
    (other / "dict.ltr.txt").write_text("x 1\ny 1\n")
    base = ["--checkpoint", str(trained), "--split", "test", "--results-dir", str(tmp_path / "o")]
    assert decode_cli.main([*base, "--data", str(other)]) == 2
    assert "dictionary mismatch" in capsys.readouterr().err
    assert decode_cli.main([*base, "--data", str(corpus), "--decoder", "kenlm"]) == 2
    assert "needs --lm" in capsys.readouterr().err
    assert decode_cli.main([*base, "--data", str(corpus), "--decoder", "kenlm", "--lm", str(tmp_path / "no.bin"),
                            "--lexicon", str(lm / "lexicon.txt")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert decode_cli.main([*base, "--data", str(corpus), "--split", "nosuch"]) == 2
    assert "no manifest" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_lexicon_free_decoding_with_a_letter_lm(trained, corpus, tmp_path):
    """No lexicon: flashlight's LexiconFreeDecoder with a KenLM over the model's letters."""
    letters = tmp_path / "letters.txt"
    letters.write_text((corpus / "train.ltr").read_text())
    lm = build_lm(str(letters), str(tmp_path / "ltr_lm"), order=4)
    out, summary = _decode(tmp_path, "free", "--checkpoint", str(trained), "--data", str(corpus), "--split", "test",
                           "--decoder", "kenlm", "--lm", str(lm / "lm.bin"), "--beam", "20", "--lm-weight", "0.5",
                           "--word-score", "0")
    row = summary[1].split("\t")
    assert row[0] == "kenlm" and 0.0 <= float(row[4]) <= 100.0
    hyps = (out / "hypo.units").read_text().splitlines()
    assert len(hyps) == 16 and any(h.split(" (None-")[0].strip() for h in hyps)

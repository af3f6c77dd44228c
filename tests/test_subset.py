"""``parp-fairseq-corpus subset``: the papers' low-resource label settings (10 min / 1 h) as a seeded
subset of a task's train split, labels aligned with their audio, everything else unchanged."""

import json

from parp_fairseq.cli import corpus as corpus_cli
from parp_fairseq.data.manifest import manifest_hours


def _train(d):
    rows = (d / "train.tsv").read_text().splitlines()
    return rows[0], rows[1:], {ext: (d / f"train.{ext}").read_text().splitlines() for ext in ("ltr", "wrd")}


def test_subset_keeps_aligned_labels_within_the_hours(corpus, tmp_path, capsys):
    total = manifest_hours(corpus / "train.tsv")
    out = tmp_path / "third"
    assert corpus_cli.main(["subset", str(corpus), "--hours", str(total / 3), "--out", str(out)]) == 0
    root, rows, labels = _train(corpus)
    sroot, srows, slabels = _train(out)
    assert sroot == root and 0 < len(srows) < len(rows)  # same audio root: no audio copied
    assert manifest_hours(out / "train.tsv") <= total / 3
    # every kept utterance carries its own transcript (the source's line of the same audio)
    for ext in ("ltr", "wrd"):
        assert len(slabels[ext]) == len(srows)
        assert all(slabels[ext][k] == labels[ext][rows.index(r)] for k, r in enumerate(srows))
    # the other splits and the dictionaries are the source's, byte for byte
    for name in ("valid.tsv", "test.tsv", "test.ltr", "dict.ltr.txt"):
        assert (out / name).read_bytes() == (corpus / name).read_bytes()
    meta = json.loads((out / "subset.json").read_text())
    assert meta["utterances"] == len(srows) and meta["of"] == len(rows) and meta["seed"] == 1
    # seeded: the same seed gives the same subset, another seed another one
    assert corpus_cli.main(["subset", str(corpus), "--hours", str(total / 3), "--out", str(tmp_path / "again")]) == 0
    assert (tmp_path / "again" / "train.tsv").read_text() == (out / "train.tsv").read_text()
    assert corpus_cli.main(["subset", str(corpus), "--hours", str(total / 3), "--out", str(tmp_path / "s2"),
                            "--seed", "2"]) == 0
    assert (tmp_path / "s2" / "train.tsv").read_text() != (out / "train.tsv").read_text()
    # the kept subset trains: fairseq's dataset reads it (checked by the corpus checker)
    assert corpus_cli.main(["check", str(out), "--splits", "train", "--labels", "ltr"]) == 0


def test_subset_bad_input_is_one_clear_error_and_writes_nothing(corpus, tmp_path, capsys):
    total = manifest_hours(corpus / "train.tsv")
    out = tmp_path / "sub"
    for hours, says in ((0, "must be > 0"), (total * 2, "nothing to leave out")):
        assert corpus_cli.main(["subset", str(corpus), "--hours", str(hours), "--out", str(out)]) == 2
        assert says in capsys.readouterr().err
    # labels out of step with the manifest
    bad = tmp_path / "bad"
    bad.mkdir()
    for p in corpus.iterdir():
        if p.is_file():
            (bad / p.name).write_bytes(p.read_bytes())
    (bad / "train.ltr").write_text("".join((corpus / "train.ltr").read_text().splitlines(True)[:-1]))
    assert corpus_cli.main(["subset", str(bad), "--hours", str(total / 3), "--out", str(out)]) == 2
    assert "train.ltr has" in capsys.readouterr().err
    # a folder the user owns is never overwritten
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    assert corpus_cli.main(["subset", str(corpus), "--hours", str(total / 3), "--out", str(mine)]) != 0
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]
    assert not out.exists()

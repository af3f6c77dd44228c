"""The offline speech corpus (tiny tier): real espeak-ng + sox synthesis, real recorded speech from the
Debian packages, manifests that fairseq's own dataset classes read."""

import hashlib
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from parp_fairseq.cli import corpus as corpus_cli
from parp_fairseq.data import speech

pytestmark = pytest.mark.skipif(
    not (shutil.which("espeak-ng") and shutil.which("sox") and speech.FILLETS.exists()),
    reason="espeak-ng / sox / fillets-ng-data missing (scripts/setup.sh installs them)")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return speech.prepare(tmp_path_factory.mktemp("corpus") / "tiny", "tiny", log=lambda *a: None)


def test_every_language_and_split(tiny):
    assert sorted(p.name for p in tiny.iterdir() if p.is_dir()) == sorted([*speech.LANGUAGES, "pretrain", "nl_real",
                                                                           "cs_real"])
    assert corpus_cli.main(["check", str(tiny)]) == 0
    for lang in speech.LANGUAGES:
        d = tiny / lang
        for split, n in zip(speech.SPLITS, speech.TIERS["tiny"].en if lang == "en" else speech.TIERS["tiny"].other):
            assert speech.check_manifest(d / f"{split}.tsv") == n
            speech.check_labels(d, split, "phn")
        # held-out speakers: nobody in test speaks in train
        spk = lambda split: {ln.split("/")[-1].split("_")[0] for ln in (d / f"{split}.tsv").read_text().splitlines()[1:]}  # noqa: E731
        assert spk("test") and not spk("test") & spk("train")
        assert not set((d / "test.wrd").read_text().splitlines()) & set((d / "train.wrd").read_text().splitlines())
    pre = (tiny / "pretrain" / "train.tsv").read_text().splitlines()
    real_train = [r for t in ("nl_real", "cs_real") for part in ("train", "extra") if (tiny / t / f"{part}.tsv").exists()
                  for r in (tiny / t / f"{part}.tsv").read_text().splitlines()[1:]]
    assert real_train and len(pre) - 1 == 12 + 10 * 8 + len(real_train)
    # unlabelled pretraining audio never holds a test utterance of a real task
    tests = {r for t in ("nl_real", "cs_real") for part in ("test", "test_spk") if (tiny / t / f"{part}.tsv").exists()
             for r in (tiny / t / f"{part}.tsv").read_text().splitlines()[1:]}
    assert tests and not tests & set(pre)


def test_manifests_load_in_fairseq_dataset_classes(tiny):
    from fairseq.data.audio.raw_audio_dataset import FileAudioDataset

    from helpers import make_task

    for lang, labels in (("en", "ltr"), ("en", "phn"), ("zh", "phn")):
        task = make_task(tiny / lang, labels=labels)
        task.load_dataset("test")
        ds = task.datasets["test"]
        item = ds[0]
        assert item["source"].dim() == 1 and item["source"].numel() > 8000
        tokens = [task.target_dictionary[i] for i in item["label"].tolist()]
        first = (tiny / lang / f"test.{labels}").read_text().splitlines()[0].split()
        assert tokens == first
    fa = FileAudioDataset(str(tiny / "pretrain" / "train.tsv"), sample_rate=16000)
    n = len((tiny / "pretrain" / "train.tsv").read_text().splitlines()) - 1
    assert len(fa) == n > 92 and fa[3]["source"].dtype.is_floating_point


def test_phone_inventories_per_language(tiny):
    inv = {lang: {ln.split()[0] for ln in (tiny / lang / "dict.phn.txt").read_text().splitlines()}
           for lang in speech.LANGUAGES}
    for lang, phones in inv.items():
        assert len(phones) >= 15, (lang, sorted(phones))
        assert not any(re.search(r"[\s|]", p) for p in phones)
    assert any(p[-1].isdigit() or p[-1] in "ɜ" for p in inv["zh"])  # Mandarin phones carry tones
    assert "ʃ" in inv["tt"] or "ʃ" in inv["ru"] or "ɕ" in inv["ru"]
    assert inv["es"] != inv["it"] and inv["nl"] != inv["sv"]
    assert (tiny / "en" / "train.ltr").read_text().split()[-1] == "|"
    lex = (tiny / "en" / "lexicon.txt").read_text().splitlines()
    assert all(ln.split("\t")[1] == " ".join(ln.split("\t")[0]) + " |" for ln in lex)


def test_real_speech_transcripts_aligned(tiny):
    en = tiny / "en"
    rows = en.joinpath("real.tsv").read_text().splitlines()[1:]
    words = en.joinpath("real.wrd").read_text().splitlines()
    assert len(rows) == len(words) == 10 + speech.TIERS["tiny"].real_en_fillets
    src = {}
    for sub, f in (("librivox", "transcription"), ("cards", "cards.transcription")):
        for ln in (speech.POCKETSPHINX / sub / f).read_text().splitlines():
            m = re.match(r"<s>(.*)</s>\s*\((.+)\)", ln.strip())
            src[m.group(2)] = " ".join(m.group(1).split())
    en_dialogs = speech.fillets_dialogs("en")
    for row, text in zip(rows, words):
        stem = row.split("\t")[0].split("/")[-1][len("00000_"):-len(".wav")]
        if stem in src:  # pocketsphinx-testdata first
            assert speech.normalize(src[stem], "en") == text
        else:  # then the Fish Fillets English lines
            assert row.split("\t")[0] > rows[9].split("\t")[0] and speech.normalize(en_dialogs[stem], "en") == text
        seconds = int(row.split("\t")[1]) / 16000
        assert 0.15 <= seconds / len(text.split()) <= 1.5, (stem, seconds, text)  # plausible speaking rate
    nl = tiny / "nl"
    dialogs = speech.fillets_dialogs("nl")
    for row, text in zip(nl.joinpath("real.tsv").read_text().splitlines()[1:], nl.joinpath("real.wrd").read_text().splitlines()):
        stem = row.split("\t")[0].split("/")[-1][len("00000_"):-len(".wav")]
        assert speech.normalize(dialogs[stem], "nl") == text
        audio, sr = sf.read(tiny / row.split("\t")[0])
        assert sr == 16000 and audio.ndim == 1 and np.abs(audio).max() > 0.05  # real, audible speech


def _digest(root: Path) -> dict:
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.name != "corpus.json":
            data = p.read_bytes()
            if p.suffix == ".tsv":  # the root line is the absolute folder
                data = data.split(b"\n", 1)[1]
            out[str(p.relative_to(root))] = hashlib.sha256(data).hexdigest()
    return out


def test_same_seed_gives_identical_files(tmp_path):
    a = speech.prepare(tmp_path / "a", "tiny", ["en", "zh"], seed=3, real=False, log=lambda *x: None)
    b = speech.prepare(tmp_path / "b", "tiny", ["en", "zh"], seed=3, real=False, jobs=1, log=lambda *x: None)
    c = speech.prepare(tmp_path / "c", "tiny", ["en", "zh"], seed=4, real=False, log=lambda *x: None)
    da, db, dc = _digest(a), _digest(b), _digest(c)
    assert da == db and len(da) > 40
    assert da != dc


def test_interrupted_build_leaves_nothing_and_resumes(tmp_path, monkeypatch):
    out = tmp_path / "c"
    real = speech.phonemize

    def fail_on_es(texts, lang):
        if lang == "es":
            raise KeyboardInterrupt  # as if the user pressed Ctrl-C in the middle of Spanish
        return real(texts, lang)

    monkeypatch.setattr(speech, "phonemize", fail_on_es)
    with pytest.raises(KeyboardInterrupt):
        speech.prepare(out, "tiny", ["en", "es"], real=False, log=lambda *a: None)
    assert (out / "en" / "dict.phn.txt").exists()
    assert not (out / "es").exists() and not list(out.glob(".tmp-*"))
    monkeypatch.setattr(speech, "phonemize", real)
    msgs = []
    speech.prepare(out, "tiny", ["en", "es"], real=False, log=msgs.append)
    assert "[corpus] en: done before" in msgs and (out / "es" / "dict.phn.txt").exists()


def test_bad_input(tmp_path, monkeypatch, capsys):
    with pytest.raises(speech.CorpusError, match="unknown language.*'xx'"):
        speech.prepare(tmp_path / "x", "tiny", ["xx"])
    with pytest.raises(speech.CorpusError, match="unknown tier"):
        speech.prepare(tmp_path / "x", "huge")
    f = tmp_path / "file"
    f.write_text("")
    with pytest.raises(speech.CorpusError, match="cannot write to"):
        speech.prepare(f / "sub", "tiny", ["en"])
    monkeypatch.setenv("PATH", str(tmp_path))  # no espeak-ng, no sox
    with pytest.raises(speech.CorpusError, match="apt-get install espeak-ng sox"):
        speech.prepare(tmp_path / "y", "tiny", ["en"])
    assert corpus_cli.main(["build", "--out", str(tmp_path / "z"), "--tier", "tiny", "--langs", "en"]) == 2
    assert "espeak-ng is not installed" in capsys.readouterr().err
    assert not (tmp_path / "y").exists() and not (tmp_path / "z").exists()


def test_bad_manifests_are_refused(tiny, tmp_path):
    from helpers import make_task

    d = tmp_path / "m"
    d.mkdir()
    for f in ("dict.ltr.txt", "test.ltr", "test.wrd"):
        (d / f).write_bytes((tiny / "en" / f).read_bytes())
    rows = (tiny / "en" / "test.tsv").read_text().splitlines()
    (d / "test.tsv").write_text("\n".join(rows[:2] + ["en/wav/test/missing.wav\t16000"] + rows[3:]) + "\n")
    with pytest.raises(speech.CorpusError, match=r"test.tsv:3: audio file .*missing.wav is missing"):
        make_task(d).load_dataset("test")  # the task checks before fairseq would fail mid-epoch
    wav = d / "8k.wav"
    sf.write(wav, np.zeros(8000, dtype=np.float32), 8000)
    (d / "test.tsv").write_text(f"{d}\n8k.wav\t8000\n")
    with pytest.raises(speech.CorpusError, match="8000 Hz with 1 channel.*16 kHz mono"):
        speech.check_manifest(d / "test.tsv")
    sf.write(wav, np.zeros((16000, 2), dtype=np.float32), 16000)
    with pytest.raises(speech.CorpusError, match="2 channel"):
        speech.check_manifest(d / "test.tsv")
    (d / "test.tsv").write_text(f"{d}\n8k.wav 16000\n")
    with pytest.raises(speech.CorpusError, match="expected '<relative path>"):
        speech.check_manifest(d / "test.tsv")
    assert corpus_cli.main(["check", str(d), "--splits", "test"]) == 2
    assert os.listdir(d)  # nothing removed

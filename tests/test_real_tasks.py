"""Real-speech ASR tasks (nl_real, cs_real from the Fish Fillets recordings), the flite / festival
speakers and the errors for missing Debian packages."""

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from parp_fairseq.cli import corpus as corpus_cli
from parp_fairseq.data import engines, real_tasks, recorded, speech, tools
from parp_fairseq.data.real_tasks import assign_splits
from parp_fairseq.data.recorded import Recording

HAVE_CS = any(speech.FILLETS.glob("sound/*/cs/*.ogg"))
needs_cs = pytest.mark.skipif(not (HAVE_CS and shutil.which("sox") and shutil.which("espeak-ng")),
                              reason="fillets-ng-data-cs / sox / espeak-ng missing (scripts/setup.sh installs them)")


@pytest.fixture(scope="module")
def cs_task(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("real")
    return real_tasks.build_real_task(out, "cs", seed=1, train_hours=None, jobs=2, limit=40, log=lambda *a: None)


def _rows(d: Path, split: str):
    return d.joinpath(f"{split}.tsv").read_text(encoding="utf-8").splitlines()[1:]


@needs_cs
def test_real_task_transcripts_aligned_with_their_audio(cs_task):
    root = cs_task.parent
    utt = {ln.split("\t")[0]: ln.split("\t") for ln in (cs_task / "utterances.tsv").read_text().splitlines()[1:]}
    dialogs = speech.fillets_dialogs("cs")
    n = 0
    for split in real_tasks.LABELED_SPLITS:
        if not (cs_task / f"{split}.tsv").exists():
            continue
        assert corpus_cli.main(["check", str(cs_task), "--splits", split, "--labels", "ltr"]) == 0
        rows, words = _rows(cs_task, split), (cs_task / f"{split}.wrd").read_text(encoding="utf-8").splitlines()
        ltr = (cs_task / f"{split}.ltr").read_text(encoding="utf-8").splitlines()
        phn = (cs_task / f"{split}.phn").read_text(encoding="utf-8").splitlines()
        assert len(rows) == len(words) == len(ltr) == len(phn) > 0
        for row, text, letters in zip(rows, words, ltr):
            uid = Path(row.split("\t")[0]).stem
            _, speaker, where, source = utt[uid]
            assert where == split and Path(source).stem in uid
            assert speech.normalize(dialogs[Path(source).stem], "cs") == text  # the line's own transcript
            assert letters == speech.letters(text)
            audio, sr = sf.read(root / row.split("\t")[0])
            assert sr == 16000 and audio.ndim == 1 and len(audio) == int(row.split("\t")[1])
            assert np.abs(audio).max() > 0.05  # real, audible speech
            n += 1
    assert n == 40


@needs_cs
def test_held_out_sentences_and_speakers(cs_task):
    text = {s: set((cs_task / f"{s}.wrd").read_text(encoding="utf-8").splitlines())
            for s in real_tasks.LABELED_SPLITS}
    assert not text["test"] & text["train"] and not text["valid"] & text["train"]
    assert not text["test_spk"] & text["train"]
    spk = {}
    for ln in (cs_task / "utterances.tsv").read_text().splitlines()[1:]:
        uid, speaker, split, _ = ln.split("\t")
        spk.setdefault(split, set()).add(speaker)
    assert spk["train"] <= set(real_tasks.FISH_SPEAKERS)
    assert spk["test_spk"] and not spk["test_spk"] & spk["train"]  # speakers never heard in training
    table = (cs_task / "speakers.tsv").read_text().splitlines()
    assert table[0].split("\t") == ["speaker", "utterances", "hours", "splits"]
    assert {ln.split("\t")[0] for ln in table[1:]} == set().union(*spk.values())
    # the LM text never holds a test transcript; the lexicon spells every word in letters
    lm = set((cs_task / "lm.txt").read_text(encoding="utf-8").splitlines())
    assert len(lm) > 500 and not lm & (text["test"] | text["test_spk"])
    for ln in (cs_task / "lexicon.txt").read_text(encoding="utf-8").splitlines():
        w, spelled = ln.split("\t")
        assert spelled == speech.letters(w)


def test_assign_splits_caps_training_hours_and_groups_sentences():
    recs = [Recording(f"u{i}", Path(f"/x/u{i}.ogg"), f"sentence {i % 30}", ["small_fish", "big_fish"][i % 2])
            for i in range(120)] + [Recording("o1", Path("/x/o1.ogg"), "hello", "other:parrot")]
    frames = [16000 * 3] * 121
    split = assign_splits(recs, frames, seed=1, train_hours=60 * 3 / 3600)  # room for 60 recordings
    assert split == assign_splits(recs, frames, seed=1, train_hours=60 * 3 / 3600)
    assert split[-1] == "test_spk"
    by_text = {}
    for r, s in zip(recs, split):
        by_text.setdefault(r.text, set()).add(s)
    assert all(len(v) == 1 for v in by_text.values())  # a sentence never crosses splits
    assert sum(s == "train" for s in split) == 60 and "extra" in split
    assert 0 < sum(s == "test" for s in split) <= 20 and sum(s == "valid" for s in split) > 0
    assert split != assign_splits(recs, frames, seed=2, train_hours=60 * 3 / 3600)
    with pytest.raises(ValueError, match="121 recordings but 3 frame counts"):
        assign_splits(recs, frames[:3], seed=1, train_hours=None)


@pytest.mark.skipif(not (shutil.which("flite") and shutil.which("text2wave") and shutil.which("sox")),
                    reason="flite / festival missing (scripts/setup.sh installs them)")
def test_flite_and_festival_speakers_are_deterministic(tmp_path):
    extra = engines.check_extra_voices("en")
    assert ("flite", "slt") in extra and ("festival", "ked_diphone") in extra
    train, test = engines.make_speakers("en", 4, 2, 1, engines.voice_variants(), extra)
    assert (train[:4], test[:2]) == engines.make_speakers("en", 4, 2, 1, engines.voice_variants())  # espeak-ng unchanged
    spk = train + test
    made = {}
    for s in spk:
        if s.engine == "espeak":
            continue
        a, b = tmp_path / f"{s.id}_a.wav", tmp_path / f"{s.id}_b.wav"
        for p in (a, b):
            n = engines.synthesize("the small fish swims home", "en-us", s, s.rate, p)
            assert n > 8000
        assert a.read_bytes() == b.read_bytes()  # byte-identical
        audio, sr = sf.read(a)
        assert sr == 16000 and np.abs(audio).max() > 0.05
        made[s.variant] = a.read_bytes()
        assert not list(tmp_path.glob(".*"))  # no temporaries left behind
    assert len(set(made.values())) == len(made) == len(extra)  # every voice sounds different
    held_out = {s.variant for s in spk if s.engine != "espeak"} - {s.variant for s in train if s.engine != "espeak"}
    assert held_out and {s.variant for s in test if s.engine != "espeak"} == held_out  # unseen voices in test


def test_missing_debian_packages_give_the_apt_line(tmp_path, monkeypatch, capsys):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("espeak-ng", "sox"):  # the base tools are there, flite / festival are not
        if shutil.which(tool):
            os.symlink(shutil.which(tool), bin_dir / tool)
    monkeypatch.setenv("PATH", str(bin_dir))
    with pytest.raises(tools.CorpusError, match=r"flite is not installed.*`sudo apt-get install flite`"):
        engines.check_extra_voices("en")
    with pytest.raises(tools.CorpusError, match=r"text2wave is not installed.*apt-get install festival festvox-ru"):
        engines.check_extra_voices("ru")
    monkeypatch.undo()
    # the Czech recordings package: one line naming it, before anything is written
    empty = tmp_path / "fillets"
    (empty / "sound").mkdir(parents=True)
    with pytest.raises(tools.CorpusError, match=r"sudo apt-get install fillets-ng-data fillets-ng-data-cs"):
        recorded.fillets_recordings("cs", root=empty)
    monkeypatch.setenv(tools.FILLETS_ENV, str(empty))
    out = tmp_path / "corpus"
    assert corpus_cli.main(["build", "--out", str(out), "--tier", "tiny"]) == 2
    err = capsys.readouterr().err
    assert "apt-get install fillets-ng-data" in err and len(err.strip().splitlines()) == 1
    assert not out.exists() or not any(out.iterdir())  # nothing half-written


@pytest.mark.skipif(not (shutil.which("flite") and shutil.which("text2wave") and shutil.which("espeak-ng")),
                    reason="flite / festival / espeak-ng missing (scripts/setup.sh installs them)")
def test_a_tier_with_extra_voices_holds_their_speakers_out_in_test(tmp_path):
    tier = speech.Tier("x", (40, 4, 12), (4, 2, 2), 2, 1, None, 0, extra_voices=True)
    d = speech.build_language(tmp_path, "en", tier, 1, engines.voice_variants(), jobs=2)
    rows = [ln.split("\t") for ln in (d / "speakers.tsv").read_text().splitlines()]
    assert rows[0][:3] == ["speaker", "engine", "voice"]
    eng = {r[0]: (r[1], r[3], r[6]) for r in rows[1:]}
    assert {e for e, _, _ in eng.values()} == {"espeak", "flite", "festival"}
    test_voices = {v for e, v, sp in eng.values() if sp == "test" and e != "espeak"}
    train_voices = {v for e, v, sp in eng.values() if sp != "test" and e != "espeak"}
    assert test_voices and not test_voices & train_voices
    used = {split: {Path(r.split("\t")[0]).name.split("_")[0] for r in _rows(d, split)} for split in ("train", "test")}
    assert not used["train"] & used["test"]
    assert all(spk in eng for spk in used["train"] | used["test"])
    assert corpus_cli.main(["check", str(d), "--labels", "ltr", "phn"]) == 0


@pytest.mark.skipif(not (shutil.which("flite") and shutil.which("text2wave") and shutil.which("sox")),
                    reason="flite / festival missing (scripts/setup.sh installs them)")
@pytest.mark.parametrize("lang,text", [("it", "perché è già città"), ("ru", "привет, как дела")])
def test_festival_voices_speak_their_languages_accented_letters(tmp_path, lang, text):
    # the Italian diphone voices read ISO-8859-1: UTF-8 input made them write an empty file, and the
    # pretrain tier died on the first Italian sentence with an accent (a UnicodeDecodeError of its stderr)
    for engine, voice in engines.check_extra_voices(lang):
        s = engines.Speaker(f"{lang}{voice}", voice, 0, engines.BASE_RATE, engine)
        n = engines.synthesize(text, lang, s, s.rate, tmp_path / f"{voice}.wav")
        assert n > 8000, (voice, n)

"""Reliability: nothing lost, nothing executed, crash-safe resume, locks, one clear error per bad input.

Every case of the safety review is reproduced here against the real commands (in-process where the
command is ours, as subprocesses where fairseq's CLI or process handling is the point)."""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import soundfile as sf
import torch

from conftest import REPO, hydra_train
from parp_fairseq import fsutil
from parp_fairseq.cli import analyze as analyze_cli
from parp_fairseq.cli import corpus as corpus_cli
from parp_fairseq.cli import decode as decode_cli
from parp_fairseq.cli import export as export_cli
from parp_fairseq.cli import imp as imp_cli
from parp_fairseq.cli import mask as mask_cli
from parp_fairseq.cli import sweep as sweep_cli
from parp_fairseq.data.speech import CorpusError
from parp_fairseq.decoding import lm as lm_cli
from parp_fairseq.errors import OutputError
from parp_fairseq.safe_load import safe_literal, torch_load


class Evil:
    """A pickle payload: loading it (without weights_only) creates a folder."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (os.mkdir, (self.path,))


def _run(main, args, capsys):
    rc = main(args)
    cap = capsys.readouterr()
    return rc, cap.err


def _one_line_error(err: str) -> bool:
    """No traceback, and exactly one ``...error: ...`` line (tools may log progress lines before it)."""
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    return "Traceback" not in err and sum(": error: " in ln for ln in lines) == 1 and ": error: " in lines[-1]


@pytest.fixture(scope="module")
def mask_file(pretrained, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("masks") / "mpi.pt"
    assert mask_cli.main(["mpi", "--checkpoint", str(pretrained), "--sparsity", "0.5", "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def payloads(pretrained, finetuned, tmp_path_factory):
    """Malicious files: a pickle whose __reduce__ makes a folder, and checkpoints that pass
    weights_only but carry code in a config string fairseq eval()s (pretrained and finetuned)."""
    d = tmp_path_factory.mktemp("payloads")
    marker = d / "PWNED"
    torch.save({"model": {}, "cfg": None, "payload": Evil(marker)}, d / "pickle.pt")
    code = f"__import__('os').mkdir({str(marker)!r}) or [(32, 10, 5)]"
    pre = torch_load(pretrained)
    pre["cfg"]["model"]["conv_feature_layers"] = code
    torch.save(pre, d / "eval_pretrained.pt")
    ft = torch_load(finetuned)
    ft["cfg"]["model"]["w2v_args"]["model"]["conv_feature_layers"] = code
    torch.save(ft, d / "eval_finetuned.pt")
    return {"dir": d, "marker": marker, "pickle": d / "pickle.pt", "eval_pretrained": d / "eval_pretrained.pt",
            "eval_finetuned": d / "eval_finetuned.pt"}


# ---------------------------------------------------------------------------------------------
# data loss
def test_lm_never_deletes_the_users_folder(corpus, tmp_path, capsys, monkeypatch):
    data = tmp_path / "DATA"
    data.mkdir()
    (data / "precious.txt").write_text("mine")
    args = ["--text", str(corpus / "train.wrd"), "--order", "2"]
    rc, err = _run(lm_cli.main, [*args, "--out-dir", str(data)], capsys)
    assert rc == 1 and "precious.txt" in err and "nothing was changed" in err and _one_line_error(err)
    assert (data / "precious.txt").read_text() == "mine" and sorted(p.name for p in data.iterdir()) == ["precious.txt"]
    monkeypatch.chdir(data)  # --out-dir . : the current folder
    rc, err = _run(lm_cli.main, [*args, "--out-dir", "."], capsys)
    assert rc == 1 and (data / "precious.txt").exists()
    # a fresh folder works; a rerun with other options replaces only the command's own files
    out = tmp_path / "lm"
    assert lm_cli.main([*args, "--out-dir", str(out)]) == 0
    (out / "notes.txt").write_text("added by the user")
    assert lm_cli.main(["--text", str(corpus / "train.wrd"), "--order", "3", "--out-dir", str(out)]) == 0
    assert json.loads((out / "lm.json").read_text())["order"] == 3
    assert (out / "notes.txt").read_text() == "added by the user"
    assert not [p for p in tmp_path.iterdir() if fsutil.TMP_TAG in p.name]


def test_analyze_never_deletes_its_inputs(mask_file, tmp_path, capsys):
    exp = tmp_path / "EXP"
    exp.mkdir()
    a, b = exp / "a.pt", exp / "b.pt"
    shutil.copy(mask_file, a)
    shutil.copy(mask_file, b)
    rc, err = _run(analyze_cli.main, ["--masks", f"a={a}", f"b={b}", "--out", str(exp)], capsys)
    assert rc == 1 and "did not write" in err and a.exists() and b.exists()
    out = exp / "analysis"
    assert analyze_cli.main(["--masks", f"a={a}", f"b={b}", "--out", str(out)]) == 0
    assert analyze_cli.main(["--masks", f"a={a}", f"b={b}", "--out", str(out)]) == 0  # own output: replaced
    assert (out / "iou.tsv").exists() and a.exists()


def test_corpus_never_replaces_a_foreign_pretrain_folder(tmp_path, capsys):
    out = tmp_path / "DIR"
    (out / "pretrain").mkdir(parents=True)
    (out / "pretrain" / "my_audio.tsv").write_text("mine")
    rc, err = _run(corpus_cli.main, ["build", "--out", str(out), "--tier", "tiny", "--langs", "en", "--no-real"], capsys)
    assert rc == 1 and "my_audio.tsv" in err and _one_line_error(err)
    assert (out / "pretrain" / "my_audio.tsv").read_text() == "mine"
    assert not (out / "en").exists(), "refused before synthesizing anything"


def test_output_dir_replaces_only_its_own_files(tmp_path):
    out = tmp_path / "o"
    with fsutil.output_dir(out, "tool-a") as t:
        (t / "x.txt").write_text("1")
        (t / "old.txt").write_text("1")
    (out / "user.txt").write_text("u")
    with fsutil.output_dir(out, "tool-a") as t:
        (t / "x.txt").write_text("2")
    assert (out / "x.txt").read_text() == "2" and not (out / "old.txt").exists() and (out / "user.txt").exists()
    with pytest.raises(OutputError, match="output of tool-a"):  # another command's folder
        with fsutil.output_dir(out, "tool-b"):
            pass
    with pytest.raises(OutputError, match="user.txt.*did not write"):  # would replace a user's file
        with fsutil.output_dir(out, "tool-a") as t:
            (t / "user.txt").write_text("mine now")
    assert (out / "user.txt").read_text() == "u" and (out / "x.txt").read_text() == "2"
    with pytest.raises(RuntimeError):  # an error inside: the old output stays, no temporary left
        with fsutil.output_dir(out, "tool-a") as t:
            (t / "x.txt").write_text("3")
            raise RuntimeError("boom")
    assert (out / "x.txt").read_text() == "2"
    assert not [p for p in tmp_path.iterdir() if fsutil.TMP_TAG in p.name]


def test_leftovers_of_killed_runs_are_cleaned(mask_file, pretrained, tmp_path):
    out = tmp_path / "m.pt"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale_file = tmp_path / f".m.pt{fsutil.TMP_TAG}{dead.pid}-abc123"
    stale_file.write_bytes(b"\0" * 1000)
    alive = tmp_path / f".m.pt{fsutil.TMP_TAG}{os.getpid()}-def456"  # a run still in progress: kept
    alive.write_bytes(b"x")
    assert mask_cli.main(["mpi", "--checkpoint", str(pretrained), "--sparsity", "0.3", "--out", str(out)]) == 0
    assert not stale_file.exists() and alive.exists() and out.exists()
    stale_dir = tmp_path / f".lmdir{fsutil.TMP_TAG}{dead.pid}-0a0a0a"
    stale_dir.mkdir()
    (stale_dir / "lm.arpa").write_text("partial")
    with fsutil.output_dir(tmp_path / "lmdir", "parp-fairseq-lm") as t:
        (t / "lm.arpa").write_text("complete")
    assert not stale_dir.exists()


def test_outputs_follow_the_umask(pretrained, finetuned, tmp_path):
    mask = tmp_path / "m.pt"
    assert mask_cli.main(["mpi", "--checkpoint", str(pretrained), "--sparsity", "0.3", "--out", str(mask)]) == 0
    exp = tmp_path / "stock.pt"
    assert export_cli.main([str(finetuned), str(exp)]) == 0
    um = fsutil.umask()
    assert mask.stat().st_mode & 0o777 == 0o666 & ~um  # not mkstemp's 0600
    assert exp.stat().st_mode & 0o777 == 0o666 & ~um
    with fsutil.output_dir(tmp_path / "d", "t") as t:
        (t / "f").write_text("x")
    assert (tmp_path / "d").stat().st_mode & 0o777 == 0o777 & ~um


# ---------------------------------------------------------------------------------------------
# crash-safe checkpoints and resume
def test_corrupt_checkpoint_last_resumes_from_the_newest_readable(corpus, pretrained, tmp_path):
    d = tmp_path / "run"
    common = [f"task.data={corpus}", f"model.w2v_path={pretrained}", "checkpoint.save_interval_updates=4",
              "dataset.validate_interval_updates=4"]
    hydra_train("configs/finetune", "tiny", d, *common, "optimization.max_update=8")
    assert not [p for p in d.iterdir() if p.name.endswith(".tmp") or fsutil.TMP_TAG in p.name]
    last = d / "checkpoint_last.pt"
    last.write_bytes(last.read_bytes()[:1000])  # a save killed half-way (older fairseq copy, full disk)
    leftover = d / f".checkpoint_last.pt{fsutil.TMP_TAG}999999999-abcdef"
    leftover.write_bytes(b"\0" * 100)
    r = hydra_train("configs/finetune", "tiny", d, *common, "optimization.max_update=12")
    log = r.stdout + r.stderr
    assert "is corrupt" in log and "resuming from" in log, log[-3000:]
    state = torch_load(last)
    assert state["optimizer_history"][-1]["num_updates"] == 12
    assert not leftover.exists()
    # nothing readable left: one line with the command that fixes it
    for p in d.glob("checkpoint*.pt"):
        p.write_bytes(b"garbage")
    r = hydra_train("configs/finetune", "tiny", d, *common, "optimization.max_update=16", check=False)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert f"mv {last} {last}.corrupt" in r.stderr, r.stderr[-2000:]


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path):
    target = tmp_path / "t.pt"
    fsutil.atomic_torch_save({"v": 1}, target)

    def fail(tmp):
        Path(tmp).write_bytes(b"partial")
        raise OSError(28, "No space left on device")

    with pytest.raises(OutputError, match="No space left on device"):
        fsutil.atomic_write(target, fail)
    assert torch.load(target)["v"] == 1 and len(list(tmp_path.iterdir())) == 1


def _limited_fsize(limit: int):
    def setup():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return setup


def test_full_disk_gives_one_line_and_no_partial_file(pretrained, finetuned, tmp_path):
    """RLIMIT_FSIZE makes every write past 20 kB fail (EFBIG), as a full disk would (ENOSPC)."""
    cases = [(["parp-fairseq-mask", "mpi", "--checkpoint", str(pretrained), "--sparsity", "0.5", "--out",
               str(tmp_path / "m.pt")], tmp_path / "m.pt"),
             (["parp-fairseq-export", str(finetuned), str(tmp_path / "e.pt")], tmp_path / "e.pt")]
    for cmd, out in cases:
        r = subprocess.run(cmd, capture_output=True, text=True, preexec_fn=_limited_fsize(20_000))
        assert r.returncode in (1, 2) and "Traceback" not in r.stderr, r.stderr[-2000:]
        assert "cannot write" in r.stderr or "error" in r.stderr
        assert not out.exists() and not [p for p in tmp_path.iterdir() if fsutil.TMP_TAG in p.name]


# ---------------------------------------------------------------------------------------------
# nothing executed from a file
def test_safe_literal_accepts_fairseq_defaults_and_refuses_code():
    assert safe_literal("[(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512,2,2)] + [(512,2,2)]")[-1] == (512, 2, 2)
    assert safe_literal("(0.9, 0.98)") == (0.9, 0.98) and safe_literal("-1e-8") == -1e-8
    for bad in ("__import__('os').system('x')", "[x for x in ()]", "open('f')", "(1).__class__",
                "[(1,2,3)] * 10**9", "lambda: 0"):
        with pytest.raises(ValueError):
            safe_literal(bad)


@pytest.mark.parametrize("kind", ["pickle", "eval"])
def test_no_payload_runs_in_any_command(kind, payloads, mask_file, tmp_path, capsys, corpus):
    marker = payloads["marker"]
    ft = payloads["pickle" if kind == "pickle" else "eval_finetuned"]
    pre = payloads["pickle" if kind == "pickle" else "eval_pretrained"]
    expect = "PARP_FAIRSEQ_TRUSTED_GLOBALS" if kind == "pickle" else "not a plain literal"
    o = tmp_path / "out"
    calls = [
        (decode_cli.main, ["--checkpoint", str(ft), "--data", str(corpus), "--split", "test", "--results-dir", str(o)]),
        (export_cli.main, [str(ft), str(o / "x.pt")]),
        (mask_cli.main, ["omp", "--checkpoint", str(ft), "--sparsity", "0.5", "--out", str(o / "m.pt")]),
        (mask_cli.main, ["mpi", "--checkpoint", str(pre), "--sparsity", "0.5", "--out", str(o / "m.pt")]),
        (mask_cli.main, ["random", "--checkpoint", str(pre), "--sparsity", "0.5", "--out", str(o / "m.pt")]),
        (mask_cli.main, ["extract", "--checkpoint", str(ft), "--out", str(o / "m.pt")]),
        (analyze_cli.main, ["--masks", f"a={ft}", f"b={mask_file}", "--out", str(o / "an")]),
        (imp_cli.main, ["--config-dir", str(REPO / "configs/finetune"), "--config-name", "tiny", "--workdir",
                        str(o / "imp"), "--sparsity", "0.5", "--start-checkpoint", str(ft)]),
    ]
    if kind == "pickle":
        calls.append((mask_cli.main, ["info", str(ft)]))
    # sweep collect over a workdir holding the file as a finished point
    w = tmp_path / "sweep"
    (w / "tones" / "dense_seed1").mkdir(parents=True)
    shutil.copy(ft, w / "tones" / "dense_seed1" / "checkpoint_last.pt")
    (w / "tones" / "dense_seed1" / "DONE").touch()
    (w / "sweep.json").write_text(json.dumps({"data_root": str(corpus.parent), "commands": []}))
    calls.append((sweep_cli.main, ["collect", "--workdir", str(w)]))
    for main, args in calls:
        rc, err = _run(main, args, capsys)
        assert rc == 2 and expect in err and _one_line_error(err), (main.__module__, args, err)
        assert not marker.exists(), f"payload executed by {main.__module__}"
    assert not o.exists() or not any(o.rglob("*.pt"))


@pytest.mark.parametrize("case", ["pickle_w2v", "eval_w2v", "eval_init_from", "pickle_mask_path", "truncated_w2v",
                                  "text_w2v", "bad_regex", "short_labels", "reprune_metric_mpi"])
def test_fairseq_hydra_train_refuses_with_one_line(case, payloads, pretrained, corpus, tmp_path):
    over = {"pickle_w2v": [f"model.w2v_path={payloads['pickle']}"],
            "eval_w2v": [f"model.w2v_path={payloads['eval_pretrained']}"],
            "eval_init_from": ["pruning=mpi", "model.pruning.sparsity=0.5",
                               f"model.pruning.init_from={payloads['eval_finetuned']}"],
            "pickle_mask_path": ["pruning=omp", f"model.pruning.mask_path={payloads['pickle']}"],
            "truncated_w2v": None, "text_w2v": None, "short_labels": [],
            "bad_regex": ["pruning=mpi", "model.pruning.sparsity=0.5", "model.pruning.pattern='enc(oder'"],
            # fairseq's own error would be a KeyError after the first epoch's training
            "reprune_metric_mpi": ["pruning=mpi", "model.pruning.sparsity=0.5",
                                   "checkpoint.best_checkpoint_metric=wer_after_reprune"]}[case]
    if case == "truncated_w2v":
        bad = tmp_path / "trunc.pt"
        bad.write_bytes(Path(pretrained).read_bytes()[:5000])
        over = [f"model.w2v_path={bad}"]
    elif case == "text_w2v":
        bad = tmp_path / "notes.pt"
        bad.write_text("not a checkpoint\n")
        over = [f"model.w2v_path={bad}"]
    data = corpus
    if case == "short_labels":  # a label file one line short of its manifest
        data = tmp_path / "data"
        data.mkdir()
        for f in corpus.iterdir():
            if f.is_file():
                shutil.copy(f, data)
        (data / "valid.ltr").write_text("\n".join((corpus / "valid.ltr").read_text().splitlines()[:-1]) + "\n")
    if "model.w2v_path" not in " ".join(over):
        over.append(f"model.w2v_path={pretrained}")
    r = hydra_train("configs/finetune", "tiny", tmp_path / "run", f"task.data={data}", *over, check=False)
    assert r.returncode != 0
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    # hydra prints "Error executing job ...", our one line, then its HYDRA_FULL_ERROR hint
    err = r.stderr.split("Error executing job with overrides", 1)[-1].split("Set the environment variable HYDRA_FULL")[0]
    lines = [ln for ln in err.strip().splitlines()[1:] if ln.strip()]
    assert len(lines) == 1, r.stderr[-3000:]
    last = lines[0]
    expect = {"pickle_w2v": "PARP_FAIRSEQ_TRUSTED_GLOBALS", "eval_w2v": "not a plain literal",
              "eval_init_from": "not a plain literal", "pickle_mask_path": "PARP_FAIRSEQ_TRUSTED_GLOBALS",
              "truncated_w2v": "corrupt or truncated", "text_w2v": "checkpoint", "bad_regex": "regular expression",
              "short_labels": "valid.ltr has", "reprune_metric_mpi": "PARP runs only"}[case]
    assert expect in last, r.stderr[-2000:]
    assert not payloads["marker"].exists()
    assert not list((tmp_path / "run").glob("checkpoint*.pt"))  # refused before any training


class Harmless:
    """A custom class a user may pickle into a checkpoint they trust."""

    def __init__(self, v=1):
        self.v = v


def test_trusted_globals_opt_in(payloads, monkeypatch):
    path = payloads["dir"] / "custom.pt"
    torch.save({"x": Harmless(7)}, path)
    with pytest.raises(ValueError, match="test_reliability.Harmless.*PARP_FAIRSEQ_TRUSTED_GLOBALS=test_reliability.Harmless"):
        torch_load(path)
    monkeypatch.setenv("PARP_FAIRSEQ_TRUSTED_GLOBALS", "test_reliability.Harmless")
    assert torch_load(path)["x"].v == 7  # the user vouched for this class
    monkeypatch.setenv("PARP_FAIRSEQ_TRUSTED_GLOBALS", "posix.mkdir")  # torch blocks os functions regardless
    with pytest.raises(ValueError, match="posix.mkdir"):
        torch_load(payloads["pickle"])
    assert not payloads["marker"].exists()


# ---------------------------------------------------------------------------------------------
# concurrency and stale results
def _procs_with(text: str):
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                cmd = (p / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if text in cmd:
                out.append((int(p.name), cmd))
    return out


def test_sweep_lock_and_children_die_with_the_sweep(corpus, pretrained, tmp_path):
    w = tmp_path / "sweep"
    args = [sys.executable, "-m", "parp_fairseq.cli.sweep", "run", "--workdir", str(w), "--data-root",
            str(corpus.parent), "--pretrained", str(pretrained), "--langs", corpus.name, "--labels", "ltr",
            "--methods", "dense", "--config-name", "tiny", "--", "optimization.max_update=100000"]
    a = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO)
    try:
        deadline = time.time() + 60
        while time.time() < deadline and not _procs_with(f"checkpoint.save_dir={w}"):
            time.sleep(0.5)
        assert _procs_with(f"checkpoint.save_dir={w}"), "the sweep never started its training child"
        b = subprocess.run(args, capture_output=True, text=True, cwd=REPO)
        assert b.returncode == 2 and "is in use by parp-fairseq-sweep run" in b.stderr and "Traceback" not in b.stderr
        a.send_signal(signal.SIGKILL)
        a.wait()
        deadline = time.time() + 30
        while time.time() < deadline and _procs_with(f"checkpoint.save_dir={w}"):
            time.sleep(0.5)
        assert not _procs_with(f"checkpoint.save_dir={w}"), "training child outlived its sweep"
        c = subprocess.run([sys.executable, "-m", "parp_fairseq.cli.sweep", "collect", "--workdir", str(w)],
                           capture_output=True, text=True, cwd=REPO)
        assert "in use" not in c.stderr  # the kernel released the dead sweep's lock
    finally:
        if a.poll() is None:
            a.kill()
        for pid, _ in _procs_with(f"checkpoint.save_dir={w}"):
            os.kill(pid, signal.SIGKILL)


def test_decode_results_are_tied_to_their_checkpoint(finetuned, corpus, tmp_path):
    ck = tmp_path / "ck.pt"
    shutil.copy(finetuned, ck)
    out = tmp_path / "dec"
    assert decode_cli.main(["--checkpoint", str(ck), "--data", str(corpus), "--split", "test", "--results-dir",
                            str(out)]) == 0
    assert decode_cli.results_are_current(out, ck)
    st = ck.stat()
    os.utime(ck, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # retrained: a new checkpoint file
    assert not decode_cli.results_are_current(out, ck)
    # KenLM results are tied to the LM and lexicon too: a rebuilt LM gets new results
    lm = tmp_path / "lm"
    assert lm_cli.main(["--text", str(corpus / "train.wrd"), "--order", "2", "--out-dir", str(lm)]) == 0
    kout, files = tmp_path / "dec_kenlm", (lm / "lm.bin", lm / "lexicon.txt")
    assert decode_cli.main(["--checkpoint", str(ck), "--data", str(corpus), "--split", "test", "--results-dir",
                            str(kout), "--decoder", "kenlm", "--lm", str(files[0]), "--lexicon", str(files[1])]) == 0
    assert decode_cli.results_are_current(kout, ck, *files)
    assert not decode_cli.results_are_current(kout, ck)  # asked as Viterbi results: not these
    assert lm_cli.main(["--text", str(corpus / "train.wrd"), "--order", "3", "--out-dir", str(lm)]) == 0
    assert not decode_cli.results_are_current(kout, ck, *files)


# ---------------------------------------------------------------------------------------------
# silent wrong results
def _subset(corpus: Path, dst: Path, split: str, n: int) -> Path:
    dst.mkdir()
    for f in corpus.glob("dict.*"):
        shutil.copy(f, dst)
    tsv = (corpus / f"{split}.tsv").read_text().splitlines()
    (dst / f"{split}.tsv").write_text("\n".join(tsv[: n + 1]) + "\n")
    for ext in ("ltr", "wrd"):
        (dst / f"{split}.{ext}").write_text("\n".join((corpus / f"{split}.{ext}").read_text().splitlines()[:n]) + "\n")
    return dst


def test_fairseq_generate_scores_every_utterance_by_default(finetuned, corpus, tmp_path):
    import parp_fairseq

    sub = _subset(corpus, tmp_path / "thirteen", "test", 13)
    r = subprocess.run(["fairseq-generate", str(sub), "--user-dir", parp_fairseq.USER_DIR, "--task",
                        "parp_audio_finetuning", "--labels", "ltr", "--path", str(finetuned), "--gen-subset", "test",
                        "--scoring", "wer", "--post-process", "letter", "--batch-size", "8", "--cpu"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    hyps = [ln for ln in r.stdout.splitlines() if ln.startswith("H-")]
    assert len(hyps) == 13, f"{len(hyps)} of 13 utterances scored"


def test_bad_training_data_is_refused(corpus, tmp_path):
    from helpers import make_task

    def copy(name):
        d = tmp_path / name
        d.mkdir()
        for f in corpus.iterdir():
            if f.is_file():
                shutil.copy(f, d)
        return d

    d = copy("unknown_symbol")
    lines = (d / "train.ltr").read_text().splitlines()
    (d / "train.ltr").write_text("\n".join([lines[0] + " @"] + lines[1:]) + "\n")
    with pytest.raises(CorpusError, match=r"train.ltr uses 1 symbol.*'@'.*<unk>"):
        make_task(d).load_dataset("train")
    d = copy("short_labels")
    (d / "train.ltr").write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(CorpusError, match=r"train.ltr has \d+ lines for the \d+ audio files"):
        make_task(d).load_dataset("train")
    d = copy("latin1")
    (d / "train.ltr").write_bytes("caf\xe9\n".encode("latin-1") * len(lines))
    with pytest.raises(CorpusError, match=r"train.ltr is not UTF-8"):
        make_task(d).load_dataset("train")
    d = copy("zero_length")
    wav = tmp_path / "empty.wav"
    sf.write(wav, torch.zeros(0).numpy(), 16000)
    tsv = (d / "train.tsv").read_text().splitlines()
    (d / "train.tsv").write_text("\n".join([str(tmp_path), "empty.wav\t0", *tsv[2:]]) + "\n")
    with pytest.raises(CorpusError, match="0 samples"):
        make_task(d).load_dataset("train")
    d = copy("not_audio")
    (tmp_path / "text.wav").write_text("hello, I am not audio\n" * 10)
    (d / "train.tsv").write_text("\n".join([str(tmp_path), "text.wav\t220", *tsv[2:]]) + "\n")
    with pytest.raises(CorpusError, match="text.wav is not readable audio"):
        make_task(d).load_dataset("train")


def test_decode_refuses_bad_input_before_the_forward(finetuned, corpus, tmp_path, capsys):
    base = ["--checkpoint", str(finetuned), "--data", str(corpus), "--split", "test"]
    with pytest.raises(SystemExit) as e:
        decode_cli.main([*base, "--results-dir", str(tmp_path / "o"), "--batch-size", "0"])
    assert e.value.code == 2 and "must be >= 1" in capsys.readouterr().err
    bad_lm = tmp_path / "lm.bin"
    bad_lm.write_text("not a language model")
    t0 = time.perf_counter()
    rc, err = _run(decode_cli.main, [*base, "--results-dir", str(tmp_path / "o"), "--decoder", "kenlm", "--lm",
                                     str(bad_lm)], capsys)
    assert rc == 2 and "lm.bin" in err and _one_line_error(err) and "forward" not in err
    assert not (tmp_path / "o").exists()
    parent = tmp_path / "file"
    parent.write_text("x")
    rc, err = _run(decode_cli.main, [*base, "--results-dir", str(parent / "o")], capsys)
    assert rc == 1 and "is a file, not a folder" in err and _one_line_error(err)
    assert time.perf_counter() - t0 < 60


def test_outputs_under_a_file_and_bad_patterns_are_one_line(pretrained, finetuned, tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    for main, args in [
        (mask_cli.main, ["mpi", "--checkpoint", str(pretrained), "--sparsity", "0.5", "--out", str(f / "m.pt")]),
        (export_cli.main, [str(finetuned), str(f / "e.pt")]),
        (corpus_cli.main, ["build", "--out", str(f / "c"), "--tier", "tiny", "--langs", "en"]),
    ]:
        rc, err = _run(main, args, capsys)
        assert rc in (1, 2) and ("is a file" in err or "not a folder" in err or "Not a directory" in err), err
        assert _one_line_error(err)
    rc, err = _run(mask_cli.main, ["mpi", "--checkpoint", str(pretrained), "--sparsity", "0.5", "--pattern", "enc(",
                                   "--out", str(tmp_path / "m.pt")], capsys)
    assert rc == 2 and "not a valid regular expression" in err
    rc, err = _run(export_cli.main, [str(finetuned), str(finetuned)], capsys)
    assert rc == 1 and "is the CHECKPOINT itself" in err

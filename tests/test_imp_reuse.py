"""IMP runs to several sparsities share their leading rounds; a work folder remembers its settings."""

import json
import os

import pytest

from parp_fairseq.cli import imp as imp_cli


def _args(workdir, sparsity, rate=0.1, schedule="original", reuse=(), overrides=("task.data=/d",)):
    return imp_cli.build_parser().parse_args(
        ["--config-dir", "configs/finetune", "--config-name", "tiny", "--workdir", str(workdir), "--sparsity",
         str(sparsity), "--rate", str(rate), "--schedule", schedule, *(f"--reuse-from={r}" for r in reuse),
         "--", *overrides])


def _fake_run(workdir, args, done_rounds):
    """A work folder as parp-fairseq-imp leaves it after ``done_rounds`` finished rounds (files are stand-ins)."""
    from parp_fairseq.pruning.schedule import imp_schedule

    workdir.mkdir(parents=True)
    sched = imp_schedule(args.sparsity, args.rate, args.schedule)
    (workdir / "imp.json").write_text(json.dumps({"settings": imp_cli.settings(args), "sparsity": args.sparsity,
                                                  "rounds": sched}))
    for r in range(1, done_rounds + 1):
        (workdir / f"round{r}").mkdir()
        (workdir / f"round{r}" / "checkpoint_last.pt").write_bytes(b"ckpt%d" % r)
        (workdir / f"mask_round{r}.pt").write_bytes(b"mask%d" % r)
        (workdir / f"round{r}" / "DONE").touch()
    return sched


def test_shared_rounds_count_the_finished_leading_rounds_of_the_same_schedule(tmp_path):
    src = tmp_path / "imp_s0.3"
    _fake_run(src, _args(src, 0.3), done_rounds=3)
    sched = [0.1, 0.2, 0.3, 0.4, 0.5]
    assert imp_cli.shared_rounds(imp_cli.settings(_args(tmp_path / "x", 0.5)), sched, str(src)) == 3
    os.unlink(src / "round3" / "DONE")  # an unfinished round is not shared, nor anything after it
    assert imp_cli.shared_rounds(imp_cli.settings(_args(tmp_path / "x", 0.5)), sched, str(src)) == 2
    # the geometric schedule's clipped last round (0.5) is not the 0.6 run's fourth round (0.5904)
    geo = tmp_path / "geo_s0.5"
    _fake_run(geo, _args(geo, 0.5, rate=0.2, schedule="remaining"), done_rounds=4)
    mine = imp_cli.settings(_args(tmp_path / "y", 0.6, rate=0.2, schedule="remaining"))
    assert imp_cli.shared_rounds(mine, [0.2, 0.36, 0.488, 0.5904, 0.6], str(geo)) == 3
    # other settings (another seed / data / rate) are refused, naming the difference
    other = imp_cli.settings(_args(tmp_path / "z", 0.5, overrides=("task.data=/other",)))
    with pytest.raises(ValueError, match="task.data=/other"):
        imp_cli.shared_rounds(other, sched, str(src))


def test_a_work_folder_refuses_other_settings_and_other_round_sparsities(tmp_path, capsys):
    work = tmp_path / "imp"
    _fake_run(work, _args(work, 0.5, rate=0.2, schedule="remaining"), done_rounds=4)
    before = (work / "imp.json").read_text()
    # the same folder with another rate: one line, exit 2, nothing changed
    with pytest.raises(ValueError, match="rate 0.2 vs 0.3"):
        imp_cli._record_settings(_args(work, 0.5, rate=0.3, schedule="remaining"), imp_cli.settings(_args(work, 0.5, rate=0.3, schedule="remaining")), [0.3, 0.5])
    # a longer run in the same folder would take the clipped 0.5 round as its 0.5904 round
    with pytest.raises(ValueError, match="round 4 was made at sparsity 0.5"):
        imp_cli._record_settings(_args(work, 0.6, rate=0.2, schedule="remaining"), imp_cli.settings(_args(work, 0.6, rate=0.2, schedule="remaining")), [0.2, 0.36, 0.488, 0.5904, 0.6])
    assert (work / "imp.json").read_text() == before
    # a shorter run of the same settings is fine, and the rounds made here stay on record
    imp_cli._record_settings(_args(work, 0.36, rate=0.2, schedule="remaining"), imp_cli.settings(_args(work, 0.36, rate=0.2, schedule="remaining")), [0.2, 0.36])
    assert json.loads((work / "imp.json").read_text())["rounds"] == [0.2, 0.36, 0.488, 0.5]
    (work / "imp.json").write_text("{\"settings\": 1}")
    with pytest.raises(ValueError, match="lacks settings"):
        imp_cli.read_settings(str(work))


def test_reuse_from_bad_folders_is_one_line(tmp_path, capsys):
    legacy = tmp_path / "legacy"  # rounds, but no imp.json: can't be checked, so not reused
    (legacy / "round1").mkdir(parents=True)
    for reuse, msg in ((tmp_path / "none", "no such folder"), (legacy, "no imp.json there")):
        work = tmp_path / f"w_{reuse.name}"
        rc = imp_cli.main(["--config-dir", "configs/finetune", "--config-name", "tiny", "--workdir", str(work),
                           "--sparsity", "0.3", "--schedule", "original", f"--reuse-from={reuse}"])
        err = capsys.readouterr().err
        assert rc == 2 and msg in err and len(err.strip().splitlines()) == 1, err
        assert not work.exists()  # nothing written


def test_threads_go_to_every_round_and_a_bad_count_is_one_line(tmp_path, capsys, monkeypatch):
    """``--threads`` sets the rounds' OMP_NUM_THREADS (else the environment's, else torch's default) and is
    recorded in the work folder; 0 is refused before anything is written."""
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert imp_cli.thread_env(None) == {"OMP_NUM_THREADS": "3"}
    assert imp_cli.thread_env(2) == {"OMP_NUM_THREADS": "2"}
    assert imp_cli.thread_env(None, environ={}) is None
    work = tmp_path / "w"
    rc = imp_cli.main(["--config-dir", "configs/finetune", "--config-name", "tiny", "--workdir", str(work),
                       "--sparsity", "0.3", "--threads", "0"])
    err = capsys.readouterr().err
    assert rc == 2 and "--threads 0" in err and len(err.strip().splitlines()) == 1, err
    assert not work.exists()

"""scripts/study.sh: every claim's commands are ones our CLIs accept (DRY=1 prints them without running)."""

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from parp_fairseq.cli import sweep as sweep_cli

REPO = Path(__file__).resolve().parents[1]
CLAIMS = ("data", "claim1", "claim2", "claim4", "claim5", "claim6", "claim6p", "claim7")


def _dry(claim, tmp_path, **env):
    env = {**os.environ, "DRY": "1", "EXP": str(tmp_path / "exp"), "FULL": str(tmp_path / "full"),
           "PRE": str(tmp_path / "pre"), "BIN": str(Path(sys.executable).parent), **env}
    out = subprocess.run(["bash", str(REPO / "scripts" / "study.sh"), claim], env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return [shlex.split(ln[2:]) for ln in out.stdout.splitlines() if ln.startswith("+ ")]


@pytest.mark.parametrize("claim", CLAIMS)
def test_study_commands_parse(claim, tmp_path):
    cmds = _dry(claim, tmp_path)
    assert cmds, claim
    runs = [c[2:] for c in cmds if Path(c[0]).name == "parp-fairseq-sweep" and c[1] == "run"]
    for argv in [c[1:] for c in cmds if Path(c[0]).name == "parp-fairseq-sweep"]:
        args = sweep_cli.build_parser().parse_args(argv)  # SystemExit on a flag or choice it does not take
        if args.cmd == "run":
            assert set(args.methods) <= set(sweep_cli.METHODS) and all(0 < s < 1 for s in args.sparsities)
            assert args.config_name == "study" and args.seeds == [1, 2, 3]
    assert runs or claim == "data"
    if claim == "data":  # nothing built yet: the corpora, the 10-min subset and a KenLM per task
        names = [Path(c[0]).name for c in cmds]
        assert names.count("parp-fairseq-corpus") == 3 and names.count("parp-fairseq-lm") == 4
    if claim == "claim5":  # S3-Router masks alone (no dense references), analysed over seeds
        from parp_fairseq.cli import analyze as analyze_cli

        assert "--no-dense-reference" in runs[0] and runs[0][runs[0].index("--methods") + 1] == "s3router"
        a = [c for c in cmds if Path(c[0]).name == "parp-fairseq-analyze"][0]
        assert "--by-seed" in a
        names = [m.split("=")[0] for m in a[a.index("--masks") + 1:a.index("--phones")]]
        groups = analyze_cli.split_seeds(names)
        assert len(groups) == 6 and all(sorted(g) == [1, 2, 3] for g in groups.values())
    if claim == "claim6":  # three S3-Router inits, S3-Router-P's own and a random one
        inits = [(a[a.index("--methods") + 1], a[a.index("--score-init") + 1]) for a in runs if "--score-init" in a]
        assert inits == [("s3router", "ori"), ("s3router", "magnitude"), ("s3router", "kaiming"),
                         ("s3router_p", "magnitude_scale"), ("s3router_p", "kaiming")]
    if claim in ("claim6", "claim6p"):  # S3-Router-P vs PARP vs OMP: over the sparsities, into one work folder
        tail = [a for a in runs if a[a.index("--methods") + 1] != "s3router"]
        assert [a[a.index("--methods") + 1:a.index("--methods") + 3] for a in tail] == [
            ["s3router_p", "--sparsities"], ["s3router_p", "--sparsities"], ["omp", "parp"]]
        assert all(a[a.index("--sparsities") + 1:a.index("--sparsities") + 6] == ["0.1", "0.3", "0.5", "0.7", "0.9"]
                   for a in tail)
        assert len({a[a.index("--workdir") + 1] for a in runs}) == 1


def test_study_script_env_and_usage(tmp_path):
    cmds = _dry("claim1", tmp_path, SEEDS="4", SPARSITIES="0.2 0.8")
    argv = cmds[0][1:]
    assert argv[argv.index("--seeds") + 1:argv.index("--seeds") + 2] == ["4"]
    assert argv[argv.index("--sparsities") + 1:argv.index("--sparsities") + 3] == ["0.2", "0.8"]
    assert "--jobs" not in argv  # one run at a time unless JOBS says otherwise
    runs = [c[1:] for c in _dry("claim1", tmp_path, JOBS="3") if c[1] == "run"]
    assert runs and all(sweep_cli.build_parser().parse_args(a).jobs == 3 for a in runs)
    for claim, default in (("claim1", ["en_10min", "en"]), ("claim2", ["nl_real", "cs_real"])):
        argv = _dry(claim, tmp_path)[0]
        assert argv[argv.index("--langs") + 1:argv.index("--langs") + 3] == default
        argv = _dry(claim, tmp_path, LANGS="en_10min", METHODS="omp parp")[0]
        assert argv[argv.index("--langs") + 1:argv.index("--methods")] == ["en_10min"]
        assert argv[argv.index("--methods") + 1:argv.index("--sparsities")] == ["omp", "parp"]
    cmds = _dry("claim6p", tmp_path, SPARSITIES="0.7", P_INITS="magnitude_scale")
    runs = [c[2:] for c in cmds if c[1] == "run"]
    assert len(runs) == 2 and all(a[a.index("--sparsities") + 1] == "0.7" for a in runs)
    assert runs[0][runs[0].index("--score-init") + 1] == "magnitude_scale"
    out = subprocess.run(["bash", str(REPO / "scripts" / "study.sh"), "claim9"], capture_output=True, text=True)
    assert out.returncode == 2 and "usage" in out.stderr

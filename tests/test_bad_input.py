"""Bad input: one clear error naming the problem and the fix, and nothing written."""

import subprocess

import pytest
import torch

from helpers import build_parp
from parp_fairseq.cli import export as export_cli
from parp_fairseq.cli import mask as mask_cli
from parp_fairseq.pruning import MaskFile, load_mask_file, save_mask_file


def _run(main, args, capsys):
    rc = main(args)
    return rc, capsys.readouterr().err


def test_mask_cli_refuses_wrong_checkpoint_kinds(pretrained, finetuned, tmp_path, capsys):
    out = tmp_path / "m.pt"
    rc, err = _run(mask_cli.main, ["omp", "--checkpoint", str(pretrained), "--sparsity", "0.5", "--out", str(out)], capsys)
    assert rc == 2 and "pretrained" in err and "use `mpi`" in err
    rc, err = _run(mask_cli.main, ["mpi", "--checkpoint", str(finetuned), "--sparsity", "0.5", "--out", str(out)], capsys)
    assert rc == 2 and "finetuned" in err and "use `omp`" in err
    rc, err = _run(mask_cli.main, ["extract", "--checkpoint", str(finetuned), "--out", str(out)], capsys)
    assert rc == 2 and "holds no masks" in err
    rc, err = _run(mask_cli.main, ["mpi", "--checkpoint", str(pretrained), "--sparsity", "1.2", "--out", str(out)], capsys)
    assert rc == 2 and "out of range" in err
    rc, err = _run(mask_cli.main, ["mpi", "--checkpoint", str(tmp_path / "nope.pt"), "--sparsity", "0.5", "--out", str(out)], capsys)
    assert rc == 2 and "does not exist" in err
    assert not out.exists()
    assert not list(tmp_path.glob(".tmp-*")), "half-written file left behind"


def test_mask_cli_writes_and_info(pretrained, tmp_path, capsys):
    out = tmp_path / "rnd.pt"
    assert mask_cli.main(["random", "--checkpoint", str(pretrained), "--sparsity", "0.3", "--seed", "2",
                          "--ranking", "tensor", "--out", str(out), "--meta", "lang=tone"]) == 0
    mf = load_mask_file(out)
    assert mf.method == "random" and mf.ranking == "tensor" and mf.meta["lang"] == "tone"
    assert all(abs((~m).float().mean().item() - 0.3) < 1e-3 for m in mf.masks.values())
    capsys.readouterr()
    assert mask_cli.main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "global\t0.3000" in text and "layers.1\t" in text


def test_mask_file_errors(finetuned, tmp_path):
    with pytest.raises(FileNotFoundError, match="compute one with"):
        load_mask_file(tmp_path / "missing.pt")
    with pytest.raises(ValueError, match="not a parp_fairseq mask file"):
        load_mask_file(finetuned)
    torch.save({"format": "something"}, tmp_path / "x.pt")
    with pytest.raises(ValueError, match="not a parp_fairseq mask file"):
        load_mask_file(tmp_path / "x.pt")


def test_mask_of_another_architecture_is_refused(task, pretrained, tmp_path):
    ref = build_parp(task, pretrained, method="mpi", sparsity=0.5)
    masks = dict(ref.masker.masks())
    name = "encoder.layers.0.fc1.weight"
    masks[name] = torch.ones(256, 64, dtype=torch.bool)  # a wider FFN
    masks["encoder.layers.7.fc1.weight"] = torch.ones(4, 4, dtype=torch.bool)  # a deeper model
    save_mask_file(tmp_path / "other.pt", MaskFile(masks, 0.5, "omp", "global"))
    with pytest.raises(ValueError, match=r"another architecture(.|\n)*fc1.weight: mask file .*\[256, 64\] vs model \[128, 64\]"):
        build_parp(task, pretrained, method="omp", mask_path=str(tmp_path / "other.pt"))
    # and a mask at another sparsity than asked for
    save_mask_file(tmp_path / "m50.pt", MaskFile(dict(ref.masker.masks()), 0.5, "omp", "global"))
    with pytest.raises(ValueError, match="drop pruning.sparsity or recompute"):
        build_parp(task, pretrained, method="omp", sparsity=0.7, mask_path=str(tmp_path / "m50.pt"))


def test_export_refuses_non_parp_checkpoints(pretrained, tmp_path, capsys):
    out = tmp_path / "o.pt"
    rc, err = _run(export_cli.main, [str(pretrained), str(out)], capsys)
    assert rc == 2 and "pretrained" in err and not out.exists()
    rc, err = _run(export_cli.main, [str(tmp_path / "nope.pt"), str(out)], capsys)
    assert rc == 2 and "does not exist" in err


def test_hydra_run_with_bad_sparsity_fails_clearly(corpus, pretrained, tmp_path):
    from conftest import hydra_train

    r = hydra_train("configs/finetune", "tiny", tmp_path / "run", f"task.data={corpus}",
                    f"model.w2v_path={pretrained}", "pruning=mpi", "model.pruning.sparsity=1.5", check=False)
    assert r.returncode != 0
    assert "pruning.sparsity=1.5 is out of range" in r.stdout + r.stderr
    assert not list((tmp_path / "run").glob("*.pt"))


def test_user_dir_command_points_at_the_package():
    out = subprocess.run(["parp-fairseq-user-dir"], capture_output=True, text=True, check=True).stdout.strip()
    import parp_fairseq

    assert out == parp_fairseq.USER_DIR

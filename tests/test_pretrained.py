"""The shipped default pretrained wav2vec 2.0: hash verified on every load, the recorded
architecture, one clear error for a corrupt / modified / missing file; ``pack`` (fp16, no optimizer
state) gives a checkpoint that fairseq finetunes like the fp32 one."""

import shutil

import pytest
import torch

from parp_fairseq import pretrained
from parp_fairseq.checkpoints import load_checkpoint
from parp_fairseq.cli import pretrained as pretrained_cli
from parp_fairseq.errors import CheckpointError

needs_shipped = pytest.mark.skipif(pretrained.DEFAULT not in pretrained.SHIPPED, reason="no shipped model registered")


@needs_shipped
def test_shipped_model_loads_verified_with_its_recorded_architecture(capsys):
    from fairseq.models.wav2vec.wav2vec2 import Wav2Vec2Config, Wav2Vec2Model
    from omegaconf import OmegaConf

    entry = pretrained.SHIPPED[pretrained.DEFAULT]
    path = pretrained.default_model_path()
    assert path.stat().st_size == entry["bytes"] <= 25 * 2**20
    assert pretrained.sha256(path) == entry["sha256"]
    state = load_checkpoint(path)  # through fairseq's loader as wrapped by the plugin
    assert state["last_optimizer_state"] is None
    assert pretrained.architecture(state) == entry["architecture"]
    assert state["optimizer_history"][-1]["num_updates"] == entry["updates"] > 0
    assert all(v.dtype == torch.float16 for v in state["model"].values() if v.is_floating_point())
    cfg = OmegaConf.merge(OmegaConf.structured(Wav2Vec2Config), {k: v for k, v in state["cfg"]["model"].items()
                                                                 if k in Wav2Vec2Config.__dataclass_fields__})
    model = Wav2Vec2Model.build_model(cfg)
    model.load_state_dict(state["model"], strict=True)  # fp16 storage into the fp32 model
    assert next(model.parameters()).dtype == torch.float32
    n = sum(p.numel() for p in model.parameters()) + sum(b.numel() for b in model.buffers() if b.is_floating_point())
    assert n == entry["parameters"]
    assert model.cfg.encoder_layers == entry["architecture"]["encoder_layers"]
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(1, 16000), mask=False, features_only=True)
    assert out["x"].shape == (1, 49, entry["architecture"]["encoder_embed_dim"]) and torch.isfinite(out["x"]).all()
    assert pretrained_cli.main(["info"]) == 0
    assert entry["sha256"] in capsys.readouterr().out
    assert pretrained_cli.main(["path"]) == 0
    assert capsys.readouterr().out.strip() == str(path)


def _copy_package(tmp_path, monkeypatch):
    here = tmp_path / "pretrained"
    shutil.copytree(pretrained.HERE, here, ignore=shutil.ignore_patterns("__pycache__", "*.py"))
    monkeypatch.setattr(pretrained, "HERE", here)
    monkeypatch.setattr(pretrained, "_verified", {})
    return here / pretrained.SHIPPED[pretrained.DEFAULT]["file"]


@needs_shipped
def test_corrupt_modified_or_missing_model_is_one_clear_error(tmp_path, monkeypatch, capsys):
    f = _copy_package(tmp_path, monkeypatch)
    assert pretrained.default_model_path() == f
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte
    f.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"corrupt or modified \(sha256 .*expected.*git checkout"):
        pretrained.default_model_path()
    with pytest.raises(CheckpointError, match="corrupt or modified"):
        load_checkpoint(f)  # any load of the shipped file is checked (model.w2v_path too)
    assert pretrained_cli.main(["path"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "corrupt or modified" in err[0]
    f.unlink()
    with pytest.raises(CheckpointError, match="is missing.*git checkout"):
        pretrained.default_model_path()
    with pytest.raises(CheckpointError, match="no shipped pretrained model 'nope'"):
        pretrained.verify("nope")


def test_pack_writes_fp16_without_optimizer_state_and_finetunes_alike(pretrained, finetuned, task, sample, tmp_path,
                                                                      capsys):
    from helpers import build_parp, logits

    out = tmp_path / "packed.pt"
    assert pretrained_cli.main(["pack", str(pretrained), str(out)]) == 0
    assert '"dtype": "float16"' in capsys.readouterr().out
    src, packed = load_checkpoint(pretrained), load_checkpoint(out)
    assert src["last_optimizer_state"] is not None and packed["last_optimizer_state"] is None
    assert out.stat().st_size < 0.5 * pretrained.stat().st_size
    for k, v in src["model"].items():
        if v.is_floating_point():
            assert packed["model"][k].dtype == torch.float16
            torch.testing.assert_close(packed["model"][k].float(), v, rtol=2e-3, atol=1e-4)
    torch.manual_seed(0)
    a = logits(build_parp(task, pretrained), sample)
    torch.manual_seed(0)
    b = logits(build_parp(task, out), sample)  # fairseq builds the fp32 model from the fp16 file
    ok = torch.isfinite(a)  # padded frames are -inf in both
    assert torch.equal(ok, torch.isfinite(b)) and ok.any()
    assert (a[ok] - b[ok]).abs().max() < 0.05 * a[ok].abs().max()
    assert pretrained_cli.main(["pack", str(finetuned), str(tmp_path / "x.pt")]) == 2
    assert "pack a PRETRAINING checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "x.pt").exists()
    assert pretrained_cli.main(["pack", str(pretrained), str(tmp_path / "y.pt"), "--register", "mine"]) == 2
    assert "--register ships the file with the package" in capsys.readouterr().err
    assert not (tmp_path / "y.pt").exists()

"""Other pretrained families through the same plugin: data2vec (audio), registered by the plugin
(no second user_dir), finetuned with pruning, exported to a stock wav2vec_ctc with identical logits."""

import subprocess

import pytest
import torch

from conftest import hydra_train
from parp_fairseq.safe_load import torch_load
from test_train_e2e import SHORT, _assert_exact


@pytest.fixture(scope="module")
def d2v_pretrained(corpus, tmp_path_factory):
    """A 2-layer 64-dim data2vec_audio, pretrained with stock audio_pretraining + `model` criterion."""
    d = tmp_path_factory.mktemp("d2v")
    hydra_train("configs/pretrain", "data2vec_tiny", d, f"task.data={corpus}", "optimization.max_update=20")
    return d / "checkpoint_last.pt"


def _logits(path, data):
    from fairseq import checkpoint_utils

    models, _, task = checkpoint_utils.load_model_ensemble_and_task([str(path)], arg_overrides={"data": str(data)})
    task.load_dataset("valid")
    ds = task.datasets["valid"]
    s = ds.collater([ds[i] for i in range(4)])
    m = models[0].eval()
    with torch.no_grad():
        return m, m.get_logits(m(**s["net_input"]))


@pytest.mark.parametrize("granularity", ["weight", pytest.param("neuron+head", marks=pytest.mark.slow)])
def test_data2vec_audio_finetunes_with_parp_and_exports(corpus, d2v_pretrained, tmp_path, granularity):
    assert torch_load(d2v_pretrained)["cfg"]["model"]["_name"] == "data2vec_audio"
    run = tmp_path / "parp"
    extra = [f"model.pruning.granularity={granularity}", "model.pruning.ranking=tensor"] \
        if granularity != "weight" else []
    hydra_train("configs/finetune", "tiny", run, f"task.data={corpus}", f"model.w2v_path={d2v_pretrained}",
                "pruning=parp", "model.pruning.sparsity=0.5", "model.pruning.reprune_interval=4", *extra, *SHORT)
    ckpt = run / "checkpoint_last.pt"
    state = _assert_exact(torch_load(ckpt), 0.5)
    assert state and torch_load(ckpt)["cfg"]["model"]["w2v_args"]["model"]["_name"] == "data2vec_audio"
    ours_model, ours = _logits(ckpt, corpus)
    assert type(ours_model.w2v_encoder.w2v_model).__name__ == "Data2VecAudioModel"
    out = tmp_path / "export.pt"
    args = ["--slice"] if granularity != "weight" else []
    r = subprocess.run(["parp-fairseq-export", str(ckpt), str(out), *args], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    exported = torch_load(out)
    assert exported["cfg"]["model"]["_name"] == ("wav2vec_ctc" if granularity == "weight" else "parp_wav2vec_ctc_sliced")
    _, stock = _logits(out, corpus)
    torch.testing.assert_close(stock, ours, rtol=1e-5, atol=1e-5)
    # MPI straight from the data2vec checkpoint
    mask = tmp_path / "mpi.pt"
    r = subprocess.run(["parp-fairseq-mask", "mpi", "--checkpoint", str(d2v_pretrained), "--sparsity", "0.5",
                        "--out", str(mask)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "global\t0.5000" in r.stdout


@pytest.fixture(scope="module")
def large_shaped_pretrained(corpus, tmp_path_factory):
    """A tiny wav2vec 2.0 of the LARGE / XLS-R shape: pre-layer-norm transformer, layer-norm CNN,
    normalized waveforms (what libri960_big.pt and xlsr_53_56k.pt are)."""
    d = tmp_path_factory.mktemp("large_shaped")
    hydra_train("configs/pretrain", "tiny", d, f"task.data={corpus}", "++model.layer_norm_first=true",
                "++model.extractor_mode=layer_norm", "task.normalize=true", "optimization.max_update=20")
    return d / "checkpoint_last.pt"


@pytest.mark.parametrize("config", ["large_10h", pytest.param("xlsr", marks=pytest.mark.slow)])
def test_large_and_xlsr_mirrors_prune_a_large_shaped_model(corpus, large_shaped_pretrained, tmp_path, config):
    run = tmp_path / "run"
    hydra_train("configs/finetune", config, run, f"task.data={corpus}", f"model.w2v_path={large_shaped_pretrained}",
                "pruning=parp", "model.pruning.sparsity=0.4", "model.pruning.reprune_interval=2", "common.cpu=true",
                "common.fp16=false", "distributed_training.distributed_world_size=1", "dataset.num_workers=0",
                "model.mask_channel_prob=0", "optimization.max_update=4", "optimization.update_freq=[1]",
                "dataset.valid_subset=valid", "dataset.validate_after_updates=0", "dataset.validate_interval_updates=4",
                "checkpoint.save_interval_updates=4")
    state = torch_load(run / "checkpoint_last.pt")
    assert state["cfg"]["model"]["w2v_args"]["model"]["layer_norm_first"] is True
    assert state["cfg"]["task"]["normalize"] is True
    _assert_exact(state, 0.4)
    out = tmp_path / "stock.pt"
    r = subprocess.run(["parp-fairseq-export", str(run / "checkpoint_last.pt"), str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    _, ours = _logits(run / "checkpoint_last.pt", corpus)
    _, stock = _logits(out, corpus)
    assert torch.equal(ours, stock)


def test_mask_of_another_family_is_one_clear_error(corpus, pretrained, d2v_pretrained, tmp_path):
    """wav2vec 2.0 and data2vec tiny models have the same shapes: only the recorded family tells them apart."""
    from parp_fairseq.pruning import load_mask_file

    for name, ckpt in (("w2v", pretrained), ("d2v", d2v_pretrained)):
        r = subprocess.run(["parp-fairseq-mask", "mpi", "--checkpoint", str(ckpt), "--sparsity", "0.5",
                            "--out", str(tmp_path / f"{name}.pt")], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
    assert load_mask_file(tmp_path / "w2v.pt").family == "wav2vec2"
    assert load_mask_file(tmp_path / "d2v.pt").family == "data2vec_audio"
    p = hydra_train("configs/finetune", "tiny", tmp_path / "run", f"task.data={corpus}",
                    f"model.w2v_path={d2v_pretrained}", "pruning=parp", f"model.pruning.mask_path={tmp_path / 'w2v.pt'}",
                    "optimization.max_update=2", check=False)
    err = p.stdout + p.stderr
    assert p.returncode != 0 and "masks of a wav2vec2 model but this model finetunes a data2vec_audio" in err
    assert "Traceback" not in err and not (tmp_path / "run" / "checkpoint_last.pt").exists()
    # the same family is fine
    hydra_train("configs/finetune", "tiny", tmp_path / "ok", f"task.data={corpus}", f"model.w2v_path={d2v_pretrained}",
                "pruning=parp", f"model.pruning.mask_path={tmp_path / 'd2v.pt'}", "optimization.max_update=2")


def test_old_args_layout_checkpoints_load_through_w2v_path(corpus, pretrained, tmp_path):
    """Released checkpoints come in two layouts: an argparse ``args`` Namespace (older releases) or a
    ``cfg``; both give the same masks and train."""
    from helpers import to_args_layout
    from parp_fairseq.pruning import load_mask_file

    old = tmp_path / "old_layout.pt"
    to_args_layout(pretrained, old)
    state = torch.load(old, weights_only=True)  # what our allow-list admits: the Namespace included
    assert "cfg" not in state and type(state["args"]).__name__ == "Namespace"
    for name, ckpt in (("new", pretrained), ("old", old)):
        r = subprocess.run(["parp-fairseq-mask", "mpi", "--checkpoint", str(ckpt), "--sparsity", "0.5",
                            "--granularity", "head", "--out", str(tmp_path / f"{name}.pt")], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
    a, b = load_mask_file(tmp_path / "new.pt"), load_mask_file(tmp_path / "old.pt")
    assert b.family == "wav2vec2" and b.num_heads == 4
    assert all(torch.equal(a.masks[n], b.masks[n]) for n in a.masks)
    run = tmp_path / "run"
    hydra_train("configs/finetune", "tiny", run, f"task.data={corpus}", f"model.w2v_path={old}", "pruning=parp",
                "model.pruning.sparsity=0.5", *SHORT)
    _assert_exact(torch_load(run / "checkpoint_last.pt"), 0.5)


def test_data2vec_span_masks_are_seeded(corpus, d2v_pretrained):
    from helpers import assert_span_masks_seeded, batch, build_parp, make_task
    from test_span_masks import SPAN

    task = make_task(corpus)
    model = build_parp(task, d2v_pretrained, model=SPAN)
    assert type(model.w2v_encoder.w2v_model).__name__ == "Data2VecAudioModel"
    assert_span_masks_seeded(model, batch(task))

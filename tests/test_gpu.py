"""CUDA runs of the real fairseq loop (skipped without a GPU; run them on a GPU machine with
``pytest tests/test_gpu.py``): fp16 training keeps masks exact, 2:4 models decode on 2:4 kernels."""

import pytest
import torch

from conftest import hydra_train

from parp_fairseq.checkpoints import checkpoint_masks, load_checkpoint, target_weights
from parp_fairseq.models.parp_wav2vec2 import PruningConfig
from parp_fairseq.cli import decode as decode_cli

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

GPU = ["common.cpu=false", "common.fp16=true", "optimization.max_update=40", "checkpoint.save_interval_updates=40",
       "dataset.validate_interval_updates=20"]


def _check_pruned(ckpt, sparsity, weights_zeroed=True, per_tensor=False):
    sd = load_checkpoint(str(ckpt))["model"]
    masks = checkpoint_masks(sd)
    if per_tensor:  # every tensor loses exactly round(s * n)
        assert all(int((~m).sum()) == round(sparsity * m.numel()) for m in masks.values())
    else:
        removed = sum(int((~m).sum()) for m in masks.values())
        assert removed == round(sparsity * sum(m.numel() for m in masks.values()))
    if weights_zeroed:  # PARP: the fp32 master weights behind fp16 were zeroed at every re-prune too
        weights = target_weights(sd, PruningConfig().pattern)
        assert set(weights) == set(masks)
        for key, m in masks.items():
            assert bool((weights[key][~m] == 0).all()), key
    return sd, masks


def test_parp_fp16_on_gpu(corpus, pretrained, tmp_path):
    d = tmp_path / "parp"
    hydra_train("configs/finetune", "tiny", d, f"task.data={corpus}", f"model.w2v_path={pretrained}",
                "pruning=parp", "model.pruning.sparsity=0.5", "model.pruning.reprune_interval=10", *GPU)
    _check_pruned(d / "checkpoint_last.pt", 0.5)


def test_s3router_fp16_on_gpu(corpus, pretrained, tmp_path):
    d = tmp_path / "s3"
    hydra_train("configs/finetune", "tiny", d, f"task.data={corpus}", f"model.w2v_path={pretrained}",
                "pruning=s3router", "model.pruning.sparsity=0.2", *GPU)
    _check_pruned(d / "checkpoint_last.pt", 0.2, weights_zeroed=False, per_tensor=True)


def test_2to4_model_decodes_identically_on_2to4_kernels(corpus, pretrained, tmp_path):
    d = tmp_path / "p24"
    hydra_train("configs/finetune", "tiny", d, f"task.data={corpus}", f"model.w2v_path={pretrained}",
                "pruning=parp", "model.pruning.sparsity=0.5", "model.pruning.ranking=2:4", *GPU)
    _, masks = _check_pruned(d / "checkpoint_last.pt", 0.5, per_tensor=True)
    assert all(bool((m.reshape(-1, 4).sum(1) == 2).all()) for m in masks.values())
    outs = []
    for extra in ([], ["--sparse-kernels", "2:4"]):
        out = tmp_path / f"dec{len(extra)}"
        assert decode_cli.main(["--checkpoint", str(d / "checkpoint_last.pt"), "--data", str(corpus), "--split",
                                "test", "--results-dir", str(out), "--fp16", *extra]) == 0
        outs.append((out / "summary.tsv").read_text().splitlines()[1].split("\t")[3:5])
    assert outs[0] == outs[1]  # same WER and CER through the sparse tensor cores

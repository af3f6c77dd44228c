"""Diagnostics the methods need (PARP flips / IoU with the first mask / validation loss around a
re-prune, S3-Router mask changes) and PARP's epoch interval and validate-then-re-prune order."""

import pytest
import torch

from conftest import hydra_train
from helpers import build_parp, train_step
from parp_fairseq.pruning.analysis import flip_fraction, iou
from parp_fairseq.safe_load import torch_load


def test_flip_fraction_hand_made():
    a = {"w": torch.tensor([[1, 1, 0, 0], [1, 0, 1, 0]], dtype=torch.bool)}
    b = {"w": torch.tensor([[1, 0, 1, 0], [1, 0, 1, 0]], dtype=torch.bool)}
    assert flip_fraction(a, b) == pytest.approx(2 / 8)  # two entries changed state
    assert flip_fraction(a, a) == 0.0
    assert iou(a, b) == pytest.approx(3 / 5)


def _criterion(task):
    from fairseq.criterions.ctc import CtcCriterionConfig

    from parp_fairseq.criterions.parp_ctc import ParpCtcCriterion

    return ParpCtcCriterion(CtcCriterionConfig(zero_infinity=True, sentence_avg=True), task)


def test_parp_reprune_records_flips_and_iou_with_the_first_mask(task, pretrained, sample):
    m = build_parp(task, pretrained, method="parp", sparsity=0.5, reprune_interval=2)
    first = {n: x.clone() for n, x in m.masker.masks().items()}
    assert m.pruning_diagnostics() == {}
    opt = torch.optim.Adam(m.parameters(), lr=5e-2)
    train_step(m, task, sample, opt, 0)
    before = {n: x.clone() for n, x in m.masker.masks().items()}
    train_step(m, task, sample, opt, 1)  # update 2: re-prune
    d = m.pruning_diagnostics()
    after = m.masker.masks()
    assert d["mask_flip"] == pytest.approx(flip_fraction(before, after)) and d["mask_flip"] > 0
    assert d["mask_iou_init"] == pytest.approx(iou(after, first)) and d["mask_iou_init"] < 1
    # logged through the criterion (fairseq metrics)
    _, _, log = _criterion(task)(m, sample)
    assert log["mask_flip"] == d["mask_flip"] and log["mask_iou_init"] == d["mask_iou_init"]


def test_s3router_mask_changed_since_init(task, pretrained, sample):
    from fairseq.optim.adam import Adam as FairseqAdamImpl

    m = build_parp(task, pretrained, method="s3router", sparsity=0.5, ranking="tensor")
    first = {n: x.clone() for n, x in m.masker.masks().items()}
    assert m.pruning_diagnostics()["mask_changed"] == 0.0
    opt = FairseqAdamImpl([p for p in m.parameters() if p.requires_grad], lr=5e-3)
    for _ in range(8):
        train_step(m, task, sample, opt, m.num_updates)
    d = m.pruning_diagnostics()
    assert d["mask_changed"] == pytest.approx(flip_fraction(m.masker.masks(), first)) and d["mask_changed"] > 0


def test_epoch_interval_and_validate_before_reprune(task, pretrained, sample):
    m = build_parp(task, pretrained, method="parp", sparsity=0.5, reprune_interval=0, reprune_interval_epochs=2,
                   validate_before_reprune=True)
    opt = torch.optim.Adam(m.parameters(), lr=5e-2)
    for u in range(3):  # updates never re-prune in epoch mode: weights regrow
        train_step(m, task, sample, opt, u)
    zeros = sum(int((p == 0).sum()) for p in m.masker.params().values())
    assert zeros < sum(int((~x).sum()) for x in m.masker.masks().values())
    masks = {n: x.clone() for n, x in m.masker.masks().items()}
    # validation sees the regrown weights; the re-pruned side is computed beside it
    crit = _criterion(task)
    m.prepare_for_evaluation()
    assert all(torch.equal(masks[n], x) for n, x in m.masker.masks().items()) and m.pending_reprune
    _, _, log = task.valid_step(sample, m, crit)
    assert log["loss_before_reprune"] == log["loss"] and log["loss_after_reprune"] != log["loss"]
    assert m.before_train_step()  # the put-off re-prune, before the next training step
    assert m.pruning_diagnostics()["mask_flip"] > 0 and not m.pending_reprune
    for n, p in m.masker.params().items():
        assert bool((p[~m.masker.masks()[n]] == 0).all())
    # epoch interval: epochs 3, 5, ... start with a re-prune
    for epoch, expect in ((2, False), (3, True), (4, False), (5, True)):
        m.pending_reprune = False
        m.begin_epoch(epoch)
        assert m.pending_reprune == expect, epoch


def test_reprune_metric_problem(task, pretrained):
    """Which ``best_checkpoint_metric`` a run can use: ``*_after_reprune`` only where every validation logs it."""
    from parp_fairseq.tasks.parp_audio_finetuning import reprune_metric_problem

    parp = build_parp(task, pretrained, method="parp", sparsity=0.5)
    assert reprune_metric_problem("wer_after_reprune", parp) is None
    assert reprune_metric_problem("loss_after_reprune", parp) is None
    assert reprune_metric_problem("wer", parp) is None and reprune_metric_problem(None, parp) is None
    assert "use wer_after_reprune" in reprune_metric_problem("wer_before_reprune", parp)
    assert "not a metric PARP logs" in reprune_metric_problem("acc_after_reprune", parp)
    first = build_parp(task, pretrained, method="parp", sparsity=0.5, validate_before_reprune=True)
    assert reprune_metric_problem("uer_after_reprune", first) is None
    silent = build_parp(task, pretrained, method="parp", sparsity=0.5, validate_before_reprune=True,
                        log_reprune_loss=False)
    assert "log_reprune_loss=true" in reprune_metric_problem("uer_after_reprune", silent)
    assert reprune_metric_problem("uer", silent) is None
    for method in ("none", "mpi", "s3router"):
        msg = reprune_metric_problem("wer_after_reprune", build_parp(task, pretrained, method=method, sparsity=0.5))
        assert "PARP runs only" in msg and "best_checkpoint_metric=wer" in msg, (method, msg)


def test_diagnostics_in_fairseq_logs_and_checkpoints(corpus, pretrained, tmp_path):
    out = hydra_train("configs/finetune", "tiny", tmp_path, f"task.data={corpus}", f"model.w2v_path={pretrained}",
                      "pruning=parp", "model.pruning.sparsity=0.5", "model.pruning.reprune_interval=0",
                      "model.pruning.reprune_interval_epochs=1", "optimization.max_update=100",
                      "optimization.max_epoch=3", "optimization.lr=[0.005]", "dataset.validate_interval=1",
                      "dataset.validate_interval_updates=0", "checkpoint.save_interval_updates=0",
                      "checkpoint.save_interval=1")
    log = out.stdout + out.stderr
    valid = [ln for ln in log.splitlines() if "| valid on" in ln]
    assert len(valid) == 3 and all("loss_before_reprune" in ln and "loss_after_reprune" in ln for ln in valid)
    assert "mask_flip" in log and "mask_iou_init" in log
    diag = torch_load(tmp_path / "checkpoint_last.pt")["task_state"]["parp_pruning"]["diagnostics"]
    assert {"mask_flip", "mask_iou_init", "loss_before_reprune", "loss_after_reprune"} <= set(diag)
    assert 0 <= diag["mask_flip"] <= 1 and 0 < diag["mask_iou_init"] <= 1


def _valid_metrics(log: str) -> list:
    """``{name: value}`` of every fairseq ``valid on 'valid' subset`` line (simple log format)."""
    import re

    return [{k: float(v) for k, v in re.findall(r"\| (\w+) ([-0-9.]+)", ln)}
            for ln in log.splitlines() if "| valid on 'valid' subset" in ln]


def test_after_reprune_metrics_are_those_of_the_saved_checkpoint(corpus, pretrained, tmp_path):
    """validate-then-re-prune (the official order): fairseq's own valid metrics are the regrown
    weights', ``*_after_reprune`` those of the re-pruned model every checkpoint holds, so
    ``checkpoint.best_checkpoint_metric=loss_after_reprune`` picks checkpoint_best by what it keeps."""
    import subprocess

    import parp_fairseq

    out = hydra_train("configs/finetune", "tiny", tmp_path, f"task.data={corpus}", f"model.w2v_path={pretrained}",
                      "pruning=parp", "model.pruning.sparsity=0.7", "model.pruning.reprune_interval=0",
                      "model.pruning.reprune_interval_epochs=1", "model.pruning.validate_before_reprune=true",
                      "optimization.max_update=100", "optimization.max_epoch=3", "optimization.lr=[0.005]",
                      "dataset.validate_interval=1", "dataset.validate_interval_updates=0",
                      "checkpoint.save_interval_updates=0", "checkpoint.save_interval=1",
                      "checkpoint.best_checkpoint_metric=loss_after_reprune")
    valid = _valid_metrics(out.stdout + out.stderr)
    assert len(valid) == 3, (out.stdout + out.stderr)[-3000:]
    for v in valid:
        assert {"uer_after_reprune", "uer_before_reprune", "wer_after_reprune", "wer_before_reprune"} <= set(v), v
        # the live (validated) weights are the regrown ones: fairseq's loss / uer are the "before" side
        assert v["loss"] == v["loss_before_reprune"] and v["uer"] == v["uer_before_reprune"], v
        assert v["loss_after_reprune"] != v["loss_before_reprune"], v
    # fairseq's checkpoint_best bookkeeping follows the re-pruned side
    best = torch_load(tmp_path / "checkpoint_best.pt")["extra_state"]["best"]
    assert best == pytest.approx(min(v["loss_after_reprune"] for v in valid), abs=1e-3)
    diag = torch_load(tmp_path / "checkpoint_last.pt")["task_state"]["parp_pruning"]["diagnostics"]
    assert diag["uer_after_reprune"] == pytest.approx(valid[-1]["uer_after_reprune"], abs=1e-3)
    # stock fairseq-validate on the saved checkpoint measures the "after" side, not fairseq's own line
    r = subprocess.run(["fairseq-validate", str(corpus), "--user-dir", parp_fairseq.USER_DIR,
                        "--task", "parp_audio_finetuning", "--labels", "ltr",
                        "--path", str(tmp_path / "checkpoint_last.pt"), "--valid-subset", "valid", "--cpu",
                        "--max-tokens", "200000", "--required-batch-size-multiple", "1"],  # tiny.yaml's batching
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    (again,) = _valid_metrics(r.stdout + r.stderr)
    assert again["loss"] == pytest.approx(valid[-1]["loss_after_reprune"], abs=2e-3), (again, valid[-1])
    assert again["uer"] == pytest.approx(valid[-1]["uer_after_reprune"], abs=1e-3), (again, valid[-1])

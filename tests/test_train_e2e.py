"""End to end through the real ``fairseq-hydra-train`` (CPU): each method, resume, IMP, export."""

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from conftest import REPO, hydra_train
from parp_fairseq.checkpoints import checkpoint_masks
from parp_fairseq.cli import mask as mask_cli
from parp_fairseq.pruning import load_mask_file, magnitude_masks, num_to_prune
from parp_fairseq.safe_load import torch_load

SHORT = ["optimization.max_update=30", "checkpoint.save_interval_updates=10",
         "dataset.validate_interval_updates=10"]
# a schedule that does not depend on max_update: resumable bit-exact (span masks on: tiny.yaml masks
# with mask_prob 0.3, drawn from the seeded torch RNG)
RESUMABLE = ["lr_scheduler.phase_ratio=null", "+lr_scheduler.warmup_steps=5", "+lr_scheduler.hold_steps=10",
             "+lr_scheduler.decay_steps=15"]


def _load(path):
    return torch_load(path)


def _assert_exact(state, sparsity):
    masks = checkpoint_masks(state["model"])
    assert masks, "checkpoint holds no masks"
    removed = sum(int((~m).sum()) for m in masks.values())
    total = sum(m.numel() for m in masks.values())
    assert removed == num_to_prune(sparsity, total), (removed, total)
    s3router = any(k.endswith("_scores") for k in state["model"])  # S3-Router keeps its weights frozen
    for k, v in state["model"].items():  # and the saved weights are zero there
        if k.endswith("_mask") and not s3router:
            assert bool((state["model"][k[:-5]][~v] == 0).all()), k
    rep = state["task_state"]["parp_pruning"]["sparsity"]
    assert rep["global"] == pytest.approx(sparsity, abs=1 / total)  # exact up to the rounding of counts
    return masks


def test_dense_finetuning_has_no_masks(finetuned):
    state = _load(finetuned)
    assert state["cfg"]["model"]["_name"] == "parp_wav2vec_ctc"
    assert not checkpoint_masks(state["model"])


@pytest.mark.parametrize("method", ["mpi", "random"])
def test_fixed_mask_methods(corpus, pretrained, tmp_path, method):
    hydra_train("configs/finetune", "tiny", tmp_path, f"task.data={corpus}", f"model.w2v_path={pretrained}",
                f"pruning={method}", "model.pruning.sparsity=0.6", *SHORT)
    masks20 = checkpoint_masks(_load(tmp_path / "checkpoint_2_20.pt")["model"]) \
        if (tmp_path / "checkpoint_2_20.pt").exists() else None
    masks = _assert_exact(_load(tmp_path / "checkpoint_last.pt"), 0.6)
    if masks20 is not None:
        assert all(torch.equal(masks20[n], masks[n]) for n in masks)


def test_omp_mask_from_finetuned_applied_at_pretrained_init(corpus, pretrained, finetuned, tmp_path):
    mpath = tmp_path / "omp.pt"
    assert mask_cli.main(["omp", "--checkpoint", str(finetuned), "--sparsity", "0.5", "--out", str(mpath)]) == 0
    mf = load_mask_file(mpath)
    assert mf.method == "omp" and mf.report()["global"] == 0.5
    save = tmp_path / "run"
    out = hydra_train("configs/finetune", "tiny", save, f"task.data={corpus}", f"model.w2v_path={pretrained}",
                      "pruning=omp", f"model.pruning.mask_path={mpath}", *SHORT)
    assert "mask from" in out.stdout + out.stderr
    masks = _assert_exact(_load(save / "checkpoint_last.pt"), 0.5)
    assert all(torch.equal(masks[n], mf.masks[n]) for n in mf.masks)


METHOD_ARGS = {
    "parp": ["pruning=parp", "model.pruning.sparsity=0.5", "model.pruning.reprune_interval=7"],
    "s3router": ["pruning=s3router", "model.pruning.sparsity=0.5"],
    # whole neurons and heads, each set ranked alone: every set loses exactly half its groups
    "parp_structured": ["pruning=parp", "model.pruning.sparsity=0.5", "model.pruning.reprune_interval=7",
                        "model.pruning.granularity=neuron+head", "model.pruning.ranking=tensor"],
    "s3router_structured": ["pruning=s3router", "model.pruning.sparsity=0.5", "model.pruning.granularity=neuron"],
}
STRUCTURED = {"parp_structured": "neuron+head", "s3router_structured": "neuron"}


def _start_masks(method, pretrained, names):
    """The initial mask of a run: magnitude of the pretrained weights at the method's granularity."""
    from parp_fairseq.checkpoints import encoder_arch
    from parp_fairseq.pruning.structured import Granularity

    state = torch_load(pretrained)
    pre = state["model"]
    ranking = "tensor" if method.startswith("s3router") or method in STRUCTURED else "global"
    cut = Granularity(STRUCTURED.get(method, "weight"), encoder_arch(state)["heads"])
    return cut.magnitude({n: pre[n] for n in names}, 0.5, ranking)


@pytest.mark.parametrize("method", ["parp", "s3router", "parp_structured", "s3router_structured"])
def test_resume_is_exact(corpus, pretrained, tmp_path, method):
    """Interrupted at update 20 and resumed from checkpoint_last.pt == one straight run to 30."""
    common = [f"task.data={corpus}", f"model.w2v_path={pretrained}", *METHOD_ARGS[method],
              "optimization.lr=[0.005]", *SHORT, *RESUMABLE]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    log = hydra_train("configs/finetune", "tiny", straight, *common).stdout
    assert "sparsity=0.5" in log  # logged every log interval through fairseq metrics
    hydra_train("configs/finetune", "tiny", resumed, *common, "optimization.max_update=20")
    mid = _load(resumed / "checkpoint_last.pt")
    mid_masks = _assert_exact(mid, 0.5)
    out = hydra_train("configs/finetune", "tiny", resumed, *common)  # picks up checkpoint_last.pt
    assert "@ 20 updates" in out.stdout + out.stderr
    a, b = _load(straight / "checkpoint_last.pt"), _load(resumed / "checkpoint_last.pt")
    _assert_exact(b, 0.5)
    pre = torch_load(pretrained)["model"]
    start = _start_masks(method, pretrained, mid_masks)  # the initial mask of both
    if method != "parp_structured":  # whole zeroed neurons / heads regrow too slowly to swap in 20 updates
        assert any(not torch.equal(mid_masks[n], start[n]) for n in start), "masks never moved"
    if method in STRUCTURED:  # every neuron / head fully kept or fully removed, at every save
        from parp_fairseq.pruning.structured import Granularity
        for state in (mid, b):
            Granularity(STRUCTURED[method], 4).check_masks(checkpoint_masks(state["model"]))
    assert set(a["model"]) == set(b["model"])
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), f"resumed run differs at {k}"
    if method.startswith("s3router"):  # frozen weights stayed the pretrained ones
        for n in mid_masks:
            assert torch.equal(b["model"]["w2v_encoder.w2v_model." + n], pre[n])


@pytest.mark.parametrize("method", ["parp", "s3router", "s3router_p"])
def test_export_loads_in_stock_fairseq_with_identical_logits(corpus, pretrained, finetuned, tmp_path, method):
    run = tmp_path / "run"
    args = {"parp": ["pruning=parp", "model.pruning.reprune_interval=4"],
            "s3router": ["pruning=s3router"],
            "s3router_p": ["pruning=s3router_p", f"model.pruning.init_from={finetuned}"]}[method]
    hydra_train("configs/finetune", "tiny", run, f"task.data={corpus}", f"model.w2v_path={pretrained}",
                *args, "model.pruning.sparsity=0.7", *SHORT)
    ckpt, stock = run / "checkpoint_last.pt", tmp_path / "stock.pt"
    masked = {k.split(".")[-2] if ".self_attn." not in k else "attn" for k in _load(ckpt)["model"] if k.endswith("_mask")}
    # official recipes: S3-Router finetuning masks the FFN only (fix_attn); S3-Router-P and PARP mask attention too
    assert masked == ({"fc1", "fc2"} if method == "s3router" else {"attn", "fc1", "fc2"}), masked
    r = subprocess.run(["parp-fairseq-export", str(ckpt), str(stock)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    script = textwrap.dedent(f"""
        import sys, torch
        from fairseq import checkpoint_utils
        models, cfg, task = checkpoint_utils.load_model_ensemble_and_task(
            [{str(stock)!r}], arg_overrides={{"data": {str(corpus)!r}}})
        assert "parp_fairseq" not in sys.modules, "the plugin was imported"
        assert type(models[0]).__name__ == "Wav2VecCtc", type(models[0])
        task.load_dataset("valid")
        ds = task.datasets["valid"]
        s = ds.collater([ds[i] for i in range(4)])
        m = models[0].eval()
        with torch.no_grad():
            torch.save(m.get_logits(m(**s["net_input"])), sys.argv[1])
    """)
    out = tmp_path / "stock_logits.pt"
    r = subprocess.run([sys.executable, "-c", script, str(out)], capture_output=True, text=True,
                       cwd=tmp_path, env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert r.returncode == 0, r.stderr[-3000:]
    from fairseq import checkpoint_utils
    models, _, task = checkpoint_utils.load_model_ensemble_and_task([str(ckpt)])
    assert type(models[0]).__name__ == "ParpWav2VecCtc"
    assert models[0].sparsity_stats()["global"] == pytest.approx(0.7, abs=1e-4)
    task.load_dataset("valid")
    ds = task.datasets["valid"]
    s = ds.collater([ds[i] for i in range(4)])
    m = models[0].eval()
    with torch.no_grad():
        ours = m.get_logits(m(**s["net_input"]))
    assert torch.equal(ours, torch.load(out))
    exported = _load(stock)
    assert not any(k.endswith(("_mask", "_scores")) for k in exported["model"])
    assert exported["cfg"]["model"]["_name"] == "wav2vec_ctc" and "pruning" not in exported["cfg"]["model"]


def test_imp_rounds_nest_and_reach_target(corpus, pretrained, finetuned, tmp_path):
    work = tmp_path / "imp"
    cmd = ["parp-fairseq-imp", "--config-dir", str(REPO / "configs/finetune"), "--config-name", "tiny",
           "--workdir", str(work), "--sparsity", "0.5", "--rate", "0.3", "--start-checkpoint", str(finetuned),
           "--", f"task.data={corpus}", f"model.w2v_path={pretrained}", "optimization.max_update=20",
           "checkpoint.save_interval_updates=10", "dataset.validate_interval_updates=10"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    m1, m2 = load_mask_file(work / "mask_round1.pt"), load_mask_file(work / "mask_round2.pt")
    assert m1.report()["global"] == pytest.approx(0.3, abs=1e-4) and m2.report()["global"] == pytest.approx(0.5, abs=1e-4)
    for n in m1.masks:
        assert not bool((m2.masks[n] & ~m1.masks[n]).any()), "IMP masks must nest"
    final = _assert_exact(_load(work / "final_checkpoint.pt"), 0.5)
    assert all(torch.equal(final[n], m2.masks[n]) for n in final)
    rows = (work / "imp_rounds.tsv").read_text().splitlines()
    assert len(rows) == 4 and rows[0].startswith("round\t")
    # finished rounds are skipped on a rerun
    r2 = subprocess.run(cmd, capture_output=True, text=True)
    assert r2.returncode == 0 and "running: fairseq-hydra-train" not in r2.stdout


def test_imp_of_one_round_is_omp(corpus, pretrained, finetuned, tmp_path):
    """The official IMP schedule at sparsity = rate (10 % at 10 points a round) is one round: the OMP mask of
    the dense model, rewound to the pretrained init and finetuned with it held fixed - OMP itself. With seeded
    span masks the two commands give the same checkpoint, weight for weight (so a sweep's IMP point at the
    first round's sparsity repeats its OMP point)."""
    mpath = tmp_path / "omp.pt"
    assert mask_cli.main(["omp", "--checkpoint", str(finetuned), "--sparsity", "0.3", "--out", str(mpath)]) == 0
    common = [f"task.data={corpus}", f"model.w2v_path={pretrained}", *SHORT]
    hydra_train("configs/finetune", "tiny", tmp_path / "omp", *common, "pruning=omp", f"model.pruning.mask_path={mpath}")
    work = tmp_path / "imp"
    r = subprocess.run(["parp-fairseq-imp", "--config-dir", str(REPO / "configs/finetune"), "--config-name", "tiny",
                        "--workdir", str(work), "--sparsity", "0.3", "--rate", "0.3", "--schedule", "original",
                        "--start-checkpoint", str(finetuned), "--", *common], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert len((work / "imp_rounds.tsv").read_text().splitlines()) == 3  # header, round 0 (the dense), round 1
    omp, imp = _load(tmp_path / "omp" / "checkpoint_last.pt")["model"], _load(work / "final_checkpoint.pt")["model"]
    assert omp.keys() == imp.keys()
    diff = {k: float((omp[k].float() - imp[k].float()).abs().max()) for k in omp if omp[k].numel()}
    assert max(diff.values()) == 0.0, sorted(diff.items(), key=lambda kv: -kv[1])[:3]
    _assert_exact({"model": imp, "task_state": _load(work / "final_checkpoint.pt")["task_state"]}, 0.3)


@pytest.mark.parametrize("config", ["base_10m", "base_1h", "base_10h", "study"])
def test_stock_mirror_configs_compose_and_train(corpus, pretrained, tmp_path, config):
    """The base_* mirrors and the study recipe run as they are, with only the CPU / tiny-model overrides."""
    hydra_train("configs/finetune", config, tmp_path, f"task.data={corpus}", f"model.w2v_path={pretrained}",
                "pruning=parp", "model.pruning.sparsity=0.3", "common.cpu=true", "common.fp16=false",
                "distributed_training.distributed_world_size=1", "dataset.num_workers=0",
                "model.mask_channel_prob=0", "optimization.max_update=3", "optimization.update_freq=[1]",
                "dataset.valid_subset=valid", "dataset.validate_after_updates=0",
                "checkpoint.save_interval_updates=3")
    state = _load(tmp_path / "checkpoint_last.pt")
    assert state["cfg"]["model"]["freeze_finetune_updates"] == 0  # set by the parp overlay
    assert state["cfg"]["task"]["_name"] == "parp_audio_finetuning"
    _assert_exact(state, 0.3)


@pytest.mark.slow
def test_imp_from_scratch_with_rewind_to_an_early_checkpoint(corpus, pretrained, tmp_path):
    """Round 0 dense finetuning inside the command, then rounds that rewind to an early checkpoint."""
    early = tmp_path / "early"
    hydra_train("configs/finetune", "tiny", early, f"task.data={corpus}", f"model.w2v_path={pretrained}",
                "optimization.max_update=5", "checkpoint.save_interval_updates=5")
    work = tmp_path / "imp"
    cmd = ["parp-fairseq-imp", "--config-dir", str(REPO / "configs/finetune"), "--config-name", "tiny",
           "--workdir", str(work), "--sparsity", "0.4", "--rate", "0.25", "--rewind", str(early / "checkpoint_last.pt"),
           "--", f"task.data={corpus}", f"model.w2v_path={pretrained}", "optimization.max_update=10",
           "checkpoint.save_interval_updates=10", "dataset.validate_interval_updates=10"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert (work / "round0" / "DONE").exists() and (work / "round2" / "DONE").exists()
    final = _assert_exact(_load(work / "final_checkpoint.pt"), 0.4)
    cfg = _load(work / "final_checkpoint.pt")["cfg"]["model"]["pruning"]
    assert cfg["init_from"] == str(early / "checkpoint_last.pt") and cfg["method"] == "imp"
    assert all(torch.equal(final[n], load_mask_file(work / "final_mask.pt").masks[n]) for n in final)

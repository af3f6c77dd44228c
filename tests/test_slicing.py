"""``parp-fairseq-export --slice``: structured checkpoints become smaller dense models with the
masked model's logits; decoding and fairseq-generate take them; bad input is one clear error."""

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from conftest import fairseq_generate, hydra_train
from test_reliability import _one_line_error
from parp_fairseq.safe_load import torch_load

SHORT = ["optimization.max_update=12", "checkpoint.save_interval_updates=6",
         "dataset.validate_interval_updates=6"]


def _train(corpus, pretrained, run, *overrides):
    hydra_train("configs/finetune", "tiny", run, f"task.data={corpus}", f"model.w2v_path={pretrained}",
                "optimization.lr=[0.005]", *SHORT, *overrides)
    return run / "checkpoint_last.pt"


def _export(*args):
    return subprocess.run(["parp-fairseq-export", *map(str, args)], capture_output=True, text=True)


def _logits(path, data, n=6):
    from fairseq import checkpoint_utils

    models, _, task = checkpoint_utils.load_model_ensemble_and_task([str(path)], arg_overrides={"data": str(data)})
    task.load_dataset("valid")
    ds = task.datasets["valid"]
    s = ds.collater([ds[i] for i in range(n)])  # utterances of different lengths: padding masks in play
    m = models[0].eval()
    with torch.no_grad():
        return m, m.get_logits(m(**s["net_input"]))


@pytest.fixture(scope="module")
def parp_neuron_head(corpus, pretrained, tmp_path_factory):
    """PARP with whole neurons and heads removed, layer ranking: unequal widths across layers."""
    return _train(corpus, pretrained, tmp_path_factory.mktemp("parp_nh"), "pruning=parp",
                  "model.pruning.reprune_interval=4", "model.pruning.sparsity=0.5",
                  "model.pruning.granularity=neuron+head", "model.pruning.ranking=global")


def test_sliced_model_has_the_masked_logits_and_fewer_parameters(corpus, parp_neuron_head, tmp_path):
    out = tmp_path / "sliced.pt"
    r = _export(parp_neuron_head, out, "--slice")
    assert r.returncode == 0, r.stderr
    assert "encoder parameters" in r.stdout
    state = torch_load(out)
    sl = state["parp_sliced"]
    assert state["cfg"]["model"]["_name"] == "parp_wav2vec_ctc_sliced"
    assert sl["ffn_dims"] == state["cfg"]["model"]["ffn_dims"] and len(sl["ffn_dims"]) == 2
    assert not any(k.endswith(("_mask", "_scores")) for k in state["model"])
    masked_model, masked = _logits(parp_neuron_head, corpus)
    sliced_model, sliced = _logits(out, corpus)
    assert type(sliced_model).__name__ == "SlicedWav2VecCtc"
    torch.testing.assert_close(sliced, masked, rtol=1e-5, atol=1e-5)
    # the kept neurons / heads are what the masks kept
    masks = {k: v for k, v in torch_load(parp_neuron_head)["model"].items() if k.endswith("_mask")}
    for i in range(2):
        p = f"w2v_encoder.w2v_model.encoder.layers.{i}."
        kept_neurons = int(masks[p + "fc1.weight_mask"].any(1).sum())
        kept_heads = int(masks[p + "self_attn.q_proj.weight_mask"].any(1).sum()) // 16
        assert sl["ffn_dims"][i] == kept_neurons and sl["attention_heads"][i] == kept_heads
        assert state["model"][p + "fc1.weight"].shape == (kept_neurons, 64)
        assert state["model"][p + "self_attn.out_proj.weight"].shape == (64, 16 * kept_heads)
    n_sliced = sum(p.numel() for p in sliced_model.w2v_encoder.w2v_model.encoder.layers.parameters())
    n_masked = sum(p.numel() for n, p in masked_model.w2v_encoder.w2v_model.encoder.layers.named_parameters())
    assert n_sliced < 0.6 * n_masked
    # decoding takes the sliced model
    res = tmp_path / "dec"
    r = subprocess.run(["parp-fairseq-decode", "--checkpoint", str(out), "--data", str(corpus), "--split",
                        "valid", "--decoder", "viterbi", "--results-dir", str(res)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (res / "summary.tsv").is_file()


def test_fairseq_generate_on_a_sliced_model(corpus, parp_neuron_head, tmp_path):
    out = tmp_path / "sliced.pt"
    assert _export(parp_neuron_head, out, "--slice").returncode == 0
    _, stdout = fairseq_generate(corpus, out, "valid", batch_size=8)
    n = sum(1 for _ in open(corpus / "valid.tsv")) - 1
    assert sum(ln.startswith("H-") for ln in stdout.splitlines()) == n


def test_equal_widths_slice_to_a_stock_checkpoint_loadable_without_the_plugin(corpus, pretrained, tmp_path):
    ckpt = _train(corpus, pretrained, tmp_path / "mpi", "pruning=mpi", "model.pruning.sparsity=0.25",
                  "model.pruning.granularity=neuron", "model.pruning.ranking=layer")
    out = tmp_path / "stock.pt"
    r = _export(ckpt, out, "--slice")
    assert r.returncode == 0, r.stderr
    state = torch_load(out)
    assert state["cfg"]["model"]["_name"] == "wav2vec_ctc"
    assert state["cfg"]["model"]["w2v_args"]["model"]["encoder_ffn_embed_dim"] == 96  # 128 - 25 %
    script = textwrap.dedent(f"""
        import sys, torch
        from fairseq import checkpoint_utils
        models, cfg, task = checkpoint_utils.load_model_ensemble_and_task(
            [{str(out)!r}], arg_overrides={{"data": {str(corpus)!r}}})
        assert "parp_fairseq" not in sys.modules, "the plugin was imported"
        task.load_dataset("valid")
        ds = task.datasets["valid"]
        s = ds.collater([ds[i] for i in range(6)])
        m = models[0].eval()
        assert m.w2v_encoder.w2v_model.encoder.layers[0].fc1.out_features == 96
        with torch.no_grad():
            torch.save(m.get_logits(m(**s["net_input"])), sys.argv[1])
    """)
    lg = tmp_path / "stock_logits.pt"
    r = subprocess.run([sys.executable, "-c", script, str(lg)], capture_output=True, text=True, cwd=tmp_path,
                       env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert r.returncode == 0, r.stderr[-3000:]
    _, masked = _logits(ckpt, corpus)
    torch.testing.assert_close(torch.load(lg), masked, rtol=1e-5, atol=1e-5)


def test_whole_layer_removal_slices_to_width_zero(corpus, pretrained, tmp_path):
    """With remove_whole_layers, a layer may lose all its heads: the sliced layer adds only biases."""
    from helpers import build_parp, make_task

    task = make_task(corpus)
    m = build_parp(task, pretrained, method="mpi", sparsity=0.0, granularity="head", ranking="global")
    for x in "qkv":  # layer 1's heads: the smallest by far
        getattr(m.w2v_encoder.w2v_model.encoder.layers[1].self_attn, f"{x}_proj").weight.data.mul_(1e-4)
    m.w2v_encoder.w2v_model.encoder.layers[1].self_attn.out_proj.weight.data.mul_(1e-4)
    m.cut = type(m.cut)("head", 4, "l1", remove_whole_layers=True)
    m.masker.set_masks(m.cut.magnitude(m.masker.params(), 0.5, "global"))
    from parp_fairseq.cli.export import slice_state
    from parp_fairseq.models.sliced import SlicedWav2VecCtc
    from omegaconf import OmegaConf
    state = {"model": m.state_dict(),
             "cfg": OmegaConf.create({"model": OmegaConf.to_container(m.cfg), "task": {}, "criterion": {}})}
    out = slice_state(state)
    assert out["parp_sliced"]["attention_heads"] == [4, 0]
    cfg = OmegaConf.create(out["cfg"]["model"])
    sliced = SlicedWav2VecCtc.build_model(cfg, task)
    sliced.load_state_dict(out["model"])
    from helpers import batch, logits
    s = batch(task, "valid", 4)
    torch.testing.assert_close(logits(sliced, s), logits(m, s), rtol=1e-5, atol=1e-5)


def test_bad_slices_are_one_line_errors(corpus, pretrained, finetuned, tmp_path):
    ckpt = _train(corpus, pretrained, tmp_path / "unstructured", "pruning=mpi", "model.pruning.sparsity=0.5",
                  "optimization.max_update=2")
    r = _export(ckpt, tmp_path / "x.pt", "--slice")
    assert r.returncode == 2 and "STRUCTURED" in r.stderr and _one_line_error(r.stderr)
    assert not (tmp_path / "x.pt").exists()
    r = _export(finetuned, tmp_path / "x.pt", "--slice")  # dense
    assert r.returncode == 2 and "STRUCTURED" in r.stderr
    # a granularity that would empty a layer, without the flag
    p = hydra_train("configs/finetune", "tiny", tmp_path / "empty", f"task.data={corpus}",
                    f"model.w2v_path={pretrained}", "pruning=mpi", "model.pruning.sparsity=0.9",
                    "model.pruning.granularity=head", "model.pruning.ranking=layer", check=False)
    assert p.returncode != 0
    err = p.stderr + p.stdout
    assert "remove_whole_layers" in err and "Traceback" not in err
    assert not (tmp_path / "empty" / "checkpoint_last.pt").exists()


def test_omp_and_imp_at_neuron_granularity(corpus, pretrained, finetuned, tmp_path):
    from conftest import REPO
    from parp_fairseq.pruning import load_mask_file
    from parp_fairseq.pruning.structured import Granularity

    mask = tmp_path / "omp_neuron.pt"
    r = subprocess.run(["parp-fairseq-mask", "omp", "--checkpoint", str(finetuned), "--sparsity", "0.5",
                        "--granularity", "neuron", "--ranking", "layer", "--out", str(mask)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    mf = load_mask_file(mask)
    assert mf.granularity == "neuron" and mf.num_heads == 4 and "granularity=neuron" in r.stdout
    assert all("fc" in n for n in mf.masks) and any(n.endswith("fc1.bias") for n in mf.masks)
    Granularity("neuron", 4).check_masks(mf.masks)
    info = subprocess.run(["parp-fairseq-mask", "info", str(mask)], capture_output=True, text=True).stdout
    assert "encoder.layers.0\tneuron\t64\t128" in info and "encoder.layers.1\tneuron\t64\t128" in info
    # OMP training at the granularity; a mask of another granularity is one clear error
    ckpt = _train(corpus, pretrained, tmp_path / "omp", "pruning=omp", f"model.pruning.mask_path={mask}",
                  "model.pruning.granularity=neuron", "optimization.max_update=4")
    saved = {k: v for k, v in torch_load(ckpt)["model"].items() if k.endswith("_mask")}
    assert all(torch.equal(saved["w2v_encoder.w2v_model." + n + "_mask"], m) for n, m in mf.masks.items())
    p = hydra_train("configs/finetune", "tiny", tmp_path / "wrong", f"task.data={corpus}",
                    f"model.w2v_path={pretrained}", "pruning=omp", f"model.pruning.mask_path={mask}",
                    "model.pruning.granularity=head", check=False)
    assert p.returncode != 0 and "granularity=neuron masks" in p.stdout + p.stderr
    # IMP rounds nest whole neurons
    work = tmp_path / "imp"
    r = subprocess.run(["parp-fairseq-imp", "--config-dir", str(REPO / "configs/finetune"), "--config-name", "tiny",
                        "--workdir", str(work), "--sparsity", "0.5", "--rate", "0.3", "--start-checkpoint",
                        str(finetuned), "--granularity", "neuron", "--", f"task.data={corpus}",
                        f"model.w2v_path={pretrained}", "optimization.max_update=4"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    m1, m2 = load_mask_file(work / "mask_round1.pt"), load_mask_file(work / "mask_round2.pt")
    assert m1.granularity == m2.granularity == "neuron"
    for n in m1.masks:
        assert not bool((m2.masks[n] & ~m1.masks[n]).any())
    assert m2.report()["global"] == pytest.approx(0.5, abs=1e-9)
    out = tmp_path / "imp_sliced.pt"
    assert _export(work / "final_checkpoint.pt", out, "--slice").returncode == 0
    assert torch_load(out)["parp_sliced"]["ffn_dims"] and sum(torch_load(out)["parp_sliced"]["ffn_dims"]) == 128

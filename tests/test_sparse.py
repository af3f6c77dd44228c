"""Turning sparsity into speed and size: 2:4 semi-structured masks, sparse-kernel inference, compressed
exports (CPU parts; the GPU 2:4 kernels are measured by scripts/bench_sparse_inference.py)."""

import pytest
import torch

from conftest import hydra_train
from helpers import build_parp, logits, train_step

from parp_fairseq.checkpoints import compress_state_dict, decompress_state_dict, load_checkpoint
from parp_fairseq.cli import decode as decode_cli
from parp_fairseq.cli import export as export_cli
from parp_fairseq.pruning import magnitude_masks, masks_from_scores, nm_masks, random_masks
from parp_fairseq.pruning.magnitude import _tensorwise_masks_batched, kth_smallest_rows
from parp_fairseq.sparse_kernels import SparseLinear, sparsify_linears


def _is_24(mask: torch.Tensor) -> bool:
    return bool((mask.reshape(-1, 4).sum(1) == 2).all())


def test_nm_masks_keep_the_largest_two_of_four():
    w = torch.tensor([[0.1, -3.0, 2.0, 0.5, 4.0, 3.0, -2.0, 1.0]])
    m = magnitude_masks({"w": w}, 0.5, "2:4")["w"]
    assert m.tolist() == [[False, True, True, False, True, True, False, False]]
    g = torch.Generator().manual_seed(0)
    ws = {f"encoder.layers.{i}.fc1.weight": torch.randn(16, 32, generator=g) for i in range(3)}
    for masks in (magnitude_masks(ws, 0.5, "2:4"), random_masks({n: t.shape for n, t in ws.items()}, 0.5, "2:4")):
        assert all(_is_24(m) for m in masks.values())
    # IMP-style: entries already removed stay removed
    keep = {n: torch.ones_like(t, dtype=torch.bool) for n, t in ws.items()}
    n0 = next(iter(ws))
    keep[n0][0, :2] = False
    assert not nm_masks(ws, 2, 4, keep=keep, absolute=True)[n0][0, :2].any()
    with pytest.raises(ValueError, match="keeps 2 of every 4 weights, so sparsity must be 0.5; got sparsity=0.7"):
        magnitude_masks(ws, 0.7, "2:4")
    with pytest.raises(ValueError, match=r"shape \(4, 6\) cannot be pruned 2:4"):
        magnitude_masks({"x": torch.randn(4, 6)}, 0.5, "2:4")


def test_batched_per_tensor_ranking_equals_the_per_tensor_path():
    """The GPU path (one kthvalue per shape) gives the same masks, ties included."""
    g = torch.Generator().manual_seed(1)
    sc = {f"l{i}.q": torch.randn(24, 16, generator=g) for i in range(4)}
    sc["l0.fc"] = torch.randn(48, 16, generator=g)
    sc["ties"] = torch.randint(0, 3, (24, 16), generator=g).float()
    for s in (0.0, 0.1, 0.5, 0.93):
        a = _tensorwise_masks_batched(sc, s, absolute=True)
        b = masks_from_scores(sc, s, "tensor", absolute=True)
        assert all(torch.equal(a[k], b[k]) for k in sc), s


def test_kth_smallest_rows_is_exact_on_large_rows_with_ties():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 100_000, generator=g).abs()  # > 4 x the sample: the bracketed path
    x[2] = torch.randint(0, 50, (100_000,), generator=g).float()  # heavy ties
    for k in (1, 10, 50_000, 99_999, 100_000):
        assert torch.equal(kth_smallest_rows(x, k), torch.kthvalue(x, k, dim=1).values), k
    sc = {f"w{i}": x[i].view(200, 500) for i in range(4)}
    for s in (0.1, 0.9):
        a, b = _tensorwise_masks_batched(sc, s, False), masks_from_scores(sc, s, "tensor")
        assert all(torch.equal(a[n], b[n]) for n in sc)


def test_parp_with_2to4_ranking_stays_2to4(task, pretrained, sample):
    model = build_parp(task, pretrained, method="parp", sparsity=0.5, ranking="2:4", reprune_interval=2)
    assert all(_is_24(m) for m in model.masker.masks().values())
    from fairseq.optim.adam import Adam

    opt = Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    before = {n: m.clone() for n, m in model.masker.masks().items()}
    for u in range(4):
        train_step(model, task, sample, opt, u)
    after = model.masker.masks()
    assert all(_is_24(m) for m in after.values())
    assert any(not torch.equal(before[n], after[n]) for n in after)  # re-pruned, still 2:4
    model.eval()
    model.prepare_for_evaluation()
    for n, p in model.masker.params().items():  # evaluated weights follow the 2:4 pattern
        assert bool(((p.detach() != 0).reshape(-1, 4).sum(1) <= 2).all()), n
    with pytest.raises(ValueError, match="sparsity must be 0.5"):
        build_parp(task, pretrained, method="mpi", sparsity=0.7, ranking="2:4")


def test_sparse_kernels_give_the_masked_model_logits(task, pretrained, sample):
    model = build_parp(task, pretrained, method="mpi", sparsity=0.7).eval()
    ref = logits(model, sample)
    done = sparsify_linears(model, "csr")
    assert len(done) == 12 and all(abs(s - 0.7) < 0.2 for s in done.values())
    assert all(isinstance(model.get_submodule(n), SparseLinear) for n in done)
    out = logits(model, sample)
    assert torch.allclose(out, ref, atol=1e-4), (out - ref).abs().max()
    lin = torch.nn.Linear(8, 4)
    with pytest.raises(ValueError, match="CUDA fp16/bf16"):
        SparseLinear(lin, "2:4")
    with pytest.raises(ValueError, match="model.eval"):
        sparsify_linears(torch.nn.Sequential(lin).train(), "csr")


def test_compress_roundtrip_is_exact():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(64, 32, generator=g) * (torch.rand(64, 32, generator=g) > 0.7)
    sd = {"a.weight": w, "a.bias": torch.randn(64, generator=g), "n": torch.tensor(3), "dense": torch.randn(8, 8)}
    c = compress_state_dict(sd)
    assert isinstance(c["a.weight"], dict) and torch.is_tensor(c["a.bias"]) and torch.is_tensor(c["dense"])
    back = decompress_state_dict(c)
    assert all(torch.equal(back[k], sd[k]) for k in sd)
    half = decompress_state_dict(compress_state_dict(sd, torch.float16))
    assert back["a.weight"].dtype == half["a.weight"].dtype == torch.float32
    assert torch.allclose(half["a.weight"], w, atol=1e-2) and torch.equal(half["a.weight"] == 0, w == 0)


def test_compressed_export_decodes_identically(corpus, pretrained, tmp_path, capsys):
    d = tmp_path / "mpi"
    hydra_train("configs/finetune", "tiny", d, f"task.data={corpus}", f"model.w2v_path={pretrained}",
                "pruning=mpi", "model.pruning.sparsity=0.8", "optimization.max_update=20",
                "checkpoint.save_interval_updates=20", "dataset.validate_interval_updates=20")
    ckpt = d / "checkpoint_last.pt"
    plain, comp, back = tmp_path / "stock.pt", tmp_path / "small.pt", tmp_path / "back.pt"
    assert export_cli.main([str(ckpt), str(plain)]) == 0
    assert export_cli.main([str(ckpt), str(comp), "--compress"]) == 0
    assert "compressed to" in capsys.readouterr().out
    assert comp.stat().st_size < 0.75 * plain.stat().st_size
    a, b = load_checkpoint(str(plain))["model"], load_checkpoint(str(comp))["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    outs = []
    for name, path in (("plain", plain), ("comp", comp)):
        out = tmp_path / f"dec_{name}"
        assert decode_cli.main(["--checkpoint", str(path), "--data", str(corpus), "--split", "test",
                                "--results-dir", str(out)]) == 0
        outs.append((out / "hypo.units").read_text())
    assert outs[0] == outs[1]
    out = tmp_path / "dec_csr"
    assert decode_cli.main(["--checkpoint", str(comp), "--data", str(corpus), "--split", "test",
                            "--results-dir", str(out), "--sparse-kernels", "csr"]) == 0
    assert (out / "hypo.units").read_text() == outs[0]
    assert export_cli.main([str(comp), str(back), "--decompress"]) == 0
    from fairseq import checkpoint_utils

    state = checkpoint_utils.load_checkpoint_to_cpu(str(back))  # plain fairseq reads it
    assert "parp_compressed" not in state and all(torch.equal(state["model"][k], a[k]) for k in a)
    assert export_cli.main([str(ckpt), str(tmp_path / "x.pt"), "--values-dtype", "fp16"]) == 2
    assert "only applies with --compress" in capsys.readouterr().err
    assert not (tmp_path / "x.pt").exists()

"""fairseq's own distributed training (2 CPU processes, gloo): masks stay identical on every rank.

fairseq never broadcasts buffers: masks agree only because each rank computes them from the same
weights. The model checks that at every validation (all-reduce of per-tensor kept counts and
masked-weight sums) and raises if ranks disagree; these runs must log the check and finish.
"""

import socket
import subprocess

import pytest

from conftest import REPO
from parp_fairseq._compat import hydra_train_cmd
from test_train_e2e import _assert_exact, _load


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_ddp(save_dir, *overrides):
    port = _free_port()
    procs = []
    for rank in (0, 1):
        cmd = hydra_train_cmd(REPO / "configs/finetune", "tiny", save_dir, "distributed_training.distributed_world_size=2",
                              "distributed_training.distributed_backend=gloo",
                              f"distributed_training.distributed_init_method=tcp://127.0.0.1:{port}",
                              f"distributed_training.distributed_rank={rank}",
                              "distributed_training.distributed_no_spawn=true", *overrides,
                              run_dir=f"{save_dir}/hydra{rank}")
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outs = []
    for p in procs:
        try:
            outs.append(p.communicate(timeout=300)[0])
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
    for rank, (p, out) in enumerate(zip(procs, outs)):
        assert p.returncode == 0, f"rank {rank} failed:\n" + "\n\n".join(o[-3000:] for o in outs)
    return outs


@pytest.mark.parametrize("method", ["parp", "mpi", "s3router", "parp_structured"])
def test_two_process_gloo_masks_identical_after_reprunes_and_resume(corpus, pretrained, tmp_path, method):
    args = [f"task.data={corpus}", f"model.w2v_path={pretrained}", f"pruning={method.split('_')[0]}",
            "model.pruning.sparsity=0.5", "optimization.lr=[0.005]", "dataset.validate_interval_updates=5",
            "checkpoint.save_interval_updates=5"]
    if method == "parp_structured":  # whole neurons and heads, half of each layer's
        args += ["model.pruning.granularity=neuron+head", "model.pruning.ranking=tensor"]
    if method.startswith("parp"):  # checkpoint_best chosen by the re-pruned side, summed over both ranks
        args += ["model.pruning.reprune_interval=3", "checkpoint.best_checkpoint_metric=uer_after_reprune"]
    out0, _ = _run_ddp(tmp_path, *args, "optimization.max_update=10")
    assert out0.count("masks identical on all 2 ranks") >= 2  # at updates 5 and 10
    if method.startswith("parp"):
        assert out0.count("uer_after_reprune") >= 2 and "best_uer_after_reprune" in out0
    assert "sparsity=0.5" in out0
    mid = _load(tmp_path / "checkpoint_last.pt")
    _assert_exact(mid, 0.5)
    out0, _ = _run_ddp(tmp_path, *args, "optimization.max_update=15")  # resume on both ranks
    assert "@ 10 updates" in out0 and "masks identical on all 2 ranks" in out0
    final = _assert_exact(_load(tmp_path / "checkpoint_last.pt"), 0.5)
    if method == "parp_structured":
        from parp_fairseq.pruning.structured import Granularity
        Granularity("neuron+head", 4).check_masks(final)

"""Shared fixtures: a real tone-speech corpus, a tiny wav2vec 2.0 pretrained here with stock
``audio_pretraining``, and a dense finetuned CTC model, all built once per test session."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import parp_fairseq  # noqa: E402  (registers the plugin, allow-lists fairseq globals)
from parp_fairseq._compat import hydra_train_cmd  # noqa: E402
from parp_fairseq.data.tones import make_tone_corpus  # noqa: E402

# console scripts of this interpreter first, for `.venv/bin/python -m pytest` without activation
os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def hydra_train(config_dir: str, config_name: str, save_dir: Path, *overrides: str,
                check: bool = True) -> subprocess.CompletedProcess:
    """Run the real ``fairseq-hydra-train`` with our user_dir; output kept for failure messages."""
    cmd = hydra_train_cmd(REPO / config_dir, config_name, save_dir, *overrides)
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


def fairseq_generate(data: Path, checkpoint: Path, subset: str, batch_size: int):
    """Stock ``fairseq-generate`` with this plugin's user_dir on a CTC checkpoint (letters, WER scoring,
    every utterance: required_batch_size_multiple 1). Returns ``(WER, stdout)``."""
    import re

    r = subprocess.run(["fairseq-generate", str(data), "--user-dir", parp_fairseq.USER_DIR,
                        "--task", "parp_audio_finetuning", "--labels", "ltr", "--path", str(checkpoint),
                        "--gen-subset", subset, "--scoring", "wer", "--post-process", "letter",
                        "--batch-size", str(batch_size), "--required-batch-size-multiple", "1", "--cpu"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    m = re.search(r"WER: ([0-9.]+)", r.stdout + r.stderr)
    assert m, (r.stdout + r.stderr)[-2000:]
    return float(m.group(1)), r.stdout


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> Path:
    return make_tone_corpus(tmp_path_factory.mktemp("data") / "tones")


@pytest.fixture(scope="session")
def pretrained(corpus, tmp_path_factory) -> Path:
    """A 2-layer 64-dim wav2vec 2.0, pretrained with stock audio_pretraining on the corpus."""
    d = tmp_path_factory.mktemp("pretrain")
    hydra_train("configs/pretrain", "tiny", d, f"task.data={corpus}")
    return d / "checkpoint_last.pt"


@pytest.fixture(scope="session")
def finetuned(corpus, pretrained, tmp_path_factory) -> Path:
    """Dense CTC finetuning of ``pretrained`` through parp_wav2vec_ctc (method none)."""
    d = tmp_path_factory.mktemp("ft_dense")
    hydra_train("configs/finetune", "tiny", d, f"task.data={corpus}", f"model.w2v_path={pretrained}")
    return d / "checkpoint_last.pt"


@pytest.fixture(scope="session")
def task(corpus):
    """An in-process ``parp_audio_finetuning`` task on the corpus (train and valid loaded)."""
    from helpers import make_task

    t = make_task(corpus)
    t.load_dataset("valid")
    t.load_dataset("train")
    return t


@pytest.fixture(scope="session")
def sample(task):
    from helpers import batch

    return batch(task, "valid", 4)

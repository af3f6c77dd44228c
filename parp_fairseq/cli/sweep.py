"""``parp-fairseq-sweep``: methods x sparsities x languages x seeds, mask transfer, one tidy table.

    parp-fairseq-sweep run --workdir exp/sweep --data-root data/small --pretrained PT.pt \
        --langs nl es --methods omp parp imp s3router_p --sparsities 0.5 0.8 --seeds 1 \
        --transfer nl:es es:nl -- optimization.max_update=400
    parp-fairseq-sweep collect --workdir exp/sweep [--results-md RESULTS.md] [--lm LM.bin --lexicon LEX]
    parp-fairseq-sweep curves lr1e-3=exp/lr1e-3 lr2e-3=exp/lr2e-3 --out exp/lr_curves.png
    parp-fairseq-sweep merge exp/a/results.tsv exp/b/results.tsv --out docs/results/study.tsv

``run`` trains every point with ``fairseq-hydra-train`` (``configs/finetune/<config-name>``), one run
folder per point named by its settings (``<lang>/<method>_s<sparsity>_seed<seed>``; the dense model of
a language is ``<lang>/dense_seed<seed>``). Finished points (``DONE``) are skipped, so an interrupted
sweep resumes. Points that need another are ordered after it: OMP, IMP and S3-Router-P start from the
dense model of their language (every language gets one as its reference; ``--no-dense-reference``: only
where a point needs it); ``--transfer A:B`` finetunes language B with PARP starting from the OMP mask of
language A (the cross-lingual mask transfer of the PARP paper; ``B:B`` is run too, as the
same-language reference). With CUDA the world size is every visible GPU (``WORLD_SIZE`` or
``--world-size`` override it) through fairseq's own distributed training; without, one CPU process.
``--dense-from A`` takes the dense references from work folder A instead (linked once finished there,
waited for while A's sweep trains them, refused when trained with another recipe): a second stream of one
study on another core. ``--jobs N`` trains N seeds at once (each on one GPU, round-robin, or as CPU
processes). On CPU every run uses ``--threads`` torch threads (default 1, whatever ``--jobs``): the thread
count changes the float sums, and so does the CPU kind (both recorded per run: ``threads``, ``cpu``).

``collect`` decodes every finished point (Viterbi; test split, and where the language has them the
``test_spk`` split of a real task's held-out speakers and the ``real`` recorded split; ``--splits test valid``
adds the dev numbers), then writes ``results.tsv`` (one row per point x split x decoder), ``results.md``,
``transfer.tsv/md`` (the transfer matrix, mean +- std over seeds: Viterbi unit error and, with an LM, KenLM
WER, one matrix each), ``<lang>_vs_sparsity.png`` (error vs sparsity per method, mean +- std error bars
over seeds, dense as a reference line with its std band), ``layer_sparsity.png`` (which layers each
method prunes most), ``dense_curve.{png,tsv}`` (the dense baselines' validation UER over updates: has
the reference converged?) and, with ``--results-md``, a section of that file with the exact commands
that produced them. With ``--lm`` and ``--lexicon`` (letter sweeps) every point is also decoded by the
KenLM lexicon beam search: ``decoder=kenlm`` rows, a WER table of both decoders and
``<lang>_wer_kenlm_vs_sparsity.png``. ``curves`` puts the dense curves of several work folders in one
plot (a learning-rate sweep), or those of other runs (``--runs 'parp_s0.9_seed*'``) and several metrics
(``--metric uer_before_reprune uer_after_reprune``: PARP's regrown vs re-pruned weights). ``cost`` pools the ``results.tsv`` of several sweeps (slices of a study run in
different sessions): each pruned point minus the dense model of its own file and seed, mean +- std per
method and sparsity, as a plot, TSV and markdown table (``--versus omp``: each method minus OMP's point of
the same file, seed and sparsity instead, PARP - OMP per seed). ``merge`` puts the rows of several ``results.tsv``
(parallel work folders, sessions) in one table: a point met twice must repeat its numbers (a shared
dense reference, a rerun), else nothing is written unless ``--on-conflict first|last`` says which to
keep. ``collect`` may run while ``run`` trains the same folder: it tables the points finished so far.

Methods: dense omp mpi random parp imp s3router s3router_p (see configs/finetune/pruning/).
"""

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from .._compat import console_script, hydra_train_cmd
from ..errors import run_cli
from ..fsutil import atomic_write_text
from ..procutil import lock_holder, record_cpu_run, torch_threads, workdir_lock
from ..reporting import blank_phase, mean_std

METHODS = ("dense", "omp", "mpi", "random", "parp", "imp", "s3router", "s3router_p")
NEEDS_DENSE = ("omp", "imp", "s3router_p")  # start from the finetuned dense model of their language
SCORED = ("s3router", "s3router_p")  # the methods that learn scores (their init: --score-init)
# decoded where the language folder has them: held-out synthetic speakers / a real task's held-out
# sentences, a real task's held-out speakers, recorded speech beside a synthesized language
SPLITS = ("test", "test_spk", "real")  # what collect reports by default (each where the language has it)
SPLIT_ORDER = (*SPLITS, "valid")  # row and column order of the tables; `valid` only when asked (--splits)
REPO = Path(__file__).resolve().parents[2]


def point_dir(work: Path, lang: str, method: str, sparsity: Optional[float], seed: int, src: str = "",
              ranking: str = "", granularity: str = "", score_init: str = "") -> Path:
    """``WORK/LANG/METHOD[-RANKING][-GRANULARITY][-SCORE_INIT]_sSPARSITY_seedSEED``; the suffixes name the
    settings that differ from the defaults (global ranking, weight granularity, the method's own score
    init: ``score_init`` is given only when it differs), so variants of one method sit side by side in
    one work folder and get their own rows in ``collect``."""
    if method == "dense":
        return work / lang / f"dense_seed{seed}"
    tag = (f"parp_from_{src}" if src else method) + (f"-{ranking.replace(':', 'of')}" if ranking else "")
    if granularity and granularity != "weight":
        tag += f"-{granularity}"
    if score_init and method in SCORED:
        tag += f"-{score_init}"
    return work / lang / f"{tag}_s{sparsity:g}_seed{seed}"


def world_size_overrides(requested: Optional[int], n_gpus: Optional[int] = None) -> List[str]:
    """fairseq distributed settings for this machine: all GPUs (or WORLD_SIZE), else one CPU process.
    ``n_gpus``: the visible GPUs (default: this machine's)."""
    if n_gpus is None:
        import torch

        n_gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    n = requested or int(os.environ.get("WORLD_SIZE", 0) or 0)
    if n_gpus:
        n = n or n_gpus
        return ["common.cpu=false", f"distributed_training.distributed_world_size={n}"]
    if n > 1:
        raise ValueError(f"world size {n} asked for but no CUDA device is visible; CPU sweeps run one process")
    return ["common.cpu=true", "distributed_training.distributed_world_size=1"]


def job_settings(jobs: int, requested: Optional[int] = None, n_gpus: Optional[int] = None,
                 environ: Optional[Dict[str, str]] = None, cpu_count: Optional[int] = None,
                 threads: Optional[int] = None) -> Tuple[List[str], List[Dict[str, str]]]:
    """fairseq distributed overrides and each job slot's extra environment for ``run --jobs``.

    ``jobs == 1``: one run at a time on every visible GPU (or ``--world-size`` / ``WORLD_SIZE``) through
    fairseq's distributed training, else one CPU process (:func:`world_size_overrides`). ``jobs > 1``
    (several seeds at once): every run trains alone (world size 1), job slot ``i`` on visible GPU
    ``i % n_gpus`` (``CUDA_VISIBLE_DEVICES``). On CPU every run, whatever ``jobs``, gets the same torch
    thread count (``OMP_NUM_THREADS``): ``threads`` (``--threads``), else the environment's, else 1, since
    the float sums and so a seed's numbers depend on it. GPU slots get ``cpu_count // jobs`` threads
    unless ``threads`` or the environment set them. ``n_gpus`` / ``environ`` / ``cpu_count`` default to
    this machine's."""
    if jobs < 1:
        raise ValueError(f"--jobs {jobs}: the number of seeds trained at once is at least 1")
    environ = os.environ if environ is None else environ
    cpu = {"OMP_NUM_THREADS": torch_threads(threads, environ, default=1)}
    if jobs == 1:
        dist = world_size_overrides(requested, n_gpus)
        return dist, [cpu if "common.cpu=true" in dist else {}]
    if requested and requested > 1:
        raise ValueError(f"--jobs {jobs} trains each job on one GPU; --world-size {requested} spreads one run "
                         "over several: use one of the two")
    if n_gpus is None:
        import torch

        n_gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if not n_gpus:
        return ["common.cpu=true", "distributed_training.distributed_world_size=1"], [dict(cpu)] * jobs
    share = {} if not threads and environ.get("OMP_NUM_THREADS") else {
        "OMP_NUM_THREADS": str(threads or max(1, (cpu_count or os.cpu_count() or 1) // jobs))}
    visible = [v for v in environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()] or \
        [str(i) for i in range(n_gpus)]
    return (["common.cpu=false", "distributed_training.distributed_world_size=1"],
            [{**share, "CUDA_VISIBLE_DEVICES": visible[i % len(visible)]} for i in range(jobs)])


def _in_parallel(items: Sequence, fn: Callable, envs: List[Dict[str, str]], slot, group) -> None:
    """``fn(item)`` for every item, ``len(envs)`` at a time, each call holding one job slot (its
    environment in ``slot.env``, a ``threading.local``). The first failure (or Ctrl-C / SIGTERM here)
    stops every running child of ``group`` and is raised; items not yet started never start."""
    import queue
    import signal
    import threading
    from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait

    free: "queue.SimpleQueue[Dict[str, str]]" = queue.SimpleQueue()
    for e in envs:
        free.put(e)

    failed = threading.Event()  # set before a failed job frees its slot: the next item sees it

    def job(item) -> None:
        if failed.is_set():
            return
        env = free.get()
        slot.env = env
        try:
            fn(item)
        except BaseException:
            failed.set()
            raise
        finally:
            free.put(env)

    def terminate(signum, frame):
        raise SystemExit(128 + signum)

    main = threading.current_thread() is threading.main_thread()
    prev = signal.signal(signal.SIGTERM, terminate) if main else None
    ex = ThreadPoolExecutor(max_workers=len(envs), thread_name_prefix="sweep-job")
    futures = [ex.submit(job, it) for it in items]
    try:
        wait(futures, return_when=FIRST_EXCEPTION)
        for f in futures:
            if f.done() and f.exception() is not None:
                raise f.exception()
    except BaseException:
        group.stop()
        for f in futures:
            f.cancel()
        raise
    finally:
        ex.shutdown(wait=True)
        if main:
            signal.signal(signal.SIGTERM, prev)


def _final_checkpoint(d: Path) -> Path:
    return d / ("final_checkpoint.pt" if (d / "final_checkpoint.pt").exists() else "checkpoint_last.pt")


def _run(cmd: List[str], d: Path, log, env: Optional[Dict[str, str]] = None, group=None) -> None:
    """One training command; it dies with the sweep (own process group + parent-death signal).
    ``env`` / ``group``: a ``--jobs`` slot's environment and the children of all jobs (then the
    progress lines name their run, as several train at once)."""
    from ..procutil import run_child

    log("  $ " + " ".join(shlex.quote(c) for c in cmd))
    d.mkdir(parents=True, exist_ok=True)
    record_cpu_run(d, env, log)
    pre = f"    [{d.name}] " if group is not None else "    "

    def progress(line: str) -> None:
        if "][valid]" in line:  # fairseq's own validation lines as progress
            log(pre + line.split("] - ", 1)[-1].strip()[:150])

    with open(d / "train.log", "a") as f:
        rc = run_child(cmd, log_file=f, on_line=progress, env=env, group=group)
    if rc != 0:
        raise RuntimeError(f"{d.name} failed (exit {rc}); see {d / 'train.log'}")


def check_pruned_sparsities(values: Sequence[float], name: str = "sparsity", note: str = "") -> None:
    """Every value a pruned point's sparsity, in (0, 1): the dense model (0) is not a point of a sweep."""
    for s in values:
        if not 0.0 < s < 1.0:
            raise ValueError(f"{name} {s:g} is out of range: it is the fraction REMOVED, in (0, 1){note}")


def run(args, log=print) -> int:

    work = Path(args.workdir).resolve()
    data_root = Path(args.data_root).resolve()
    bad = [m for m in args.methods if m not in METHODS]
    if bad:
        raise ValueError(f"unknown method(s) {bad}; choose from {METHODS}")
    check_pruned_sparsities(args.sparsities)
    transfers = []
    for t in args.transfer or []:
        a, sep, b = t.partition(":")
        if not sep or not a or not b:
            raise ValueError(f"--transfer takes SRC:TGT language pairs, got {t!r}")
        transfers.append((a, b))
    langs = list(dict.fromkeys(list(args.langs) + [x for ab in transfers for x in ab]))
    for lang in langs:
        if not (data_root / lang / f"dict.{args.labels}.txt").exists():
            raise FileNotFoundError(f"{data_root / lang}/dict.{args.labels}.txt missing: build the corpus with "
                                    f"parp-fairseq-corpus build --out {data_root} --langs {lang}")
    if args.pretrained is None:
        from .. import pretrained

        args.pretrained = str(pretrained.default_model_path())  # the shipped model, sha256 checked
    if not Path(args.pretrained).is_file():
        raise FileNotFoundError(f"pretrained checkpoint {args.pretrained} does not exist")
    if args.dense_from is not None:
        src = Path(args.dense_from).resolve()
        if not src.is_dir():
            raise FileNotFoundError(f"--dense-from {args.dense_from} is not a folder: give the work folder of the "
                                    "parp-fairseq-sweep run that trains (or trained) the dense references")
        if src == work:
            raise ValueError(f"--dense-from {args.dense_from} is --workdir itself; give another work folder")
    jobs = min(args.jobs, len(args.seeds))  # one seed: the plain run (every GPU)
    # a bad --jobs / --world-size / --threads is refused before anything is written
    settings = job_settings(jobs, args.world_size, threads=args.threads)
    work.mkdir(parents=True, exist_ok=True)
    with workdir_lock(work, "parp-fairseq-sweep run"):
        return _run_points(args, work, data_root, transfers, langs, log, settings)


# overrides that say where and on what hardware a run trains, not what it learns: a dense reference
# trained on GPU in another folder serves a CPU sweep as well
PLACE_OVERRIDES = ("common.user_dir=", "checkpoint.save_dir=", "hydra.run.dir=", "common.cpu=",
                   "distributed_training.")


def recipe_overrides(overrides: Sequence[str]) -> List[str]:
    """The overrides of a run that decide what it learns (sorted; :data:`PLACE_OVERRIDES` left out)."""
    return sorted(o for o in overrides if not o.startswith(PLACE_OVERRIDES))


def run_recipe(run_dir: Path) -> Tuple[str, List[str]]:
    """``(config name, recipe overrides)`` of a finished run folder, as hydra recorded them
    (``RUN/hydra/.hydra/{hydra,overrides}.yaml``)."""
    from omegaconf import OmegaConf

    h = run_dir / "hydra" / ".hydra"
    try:
        name = str(OmegaConf.load(h / "hydra.yaml").hydra.job.config_name)
        overrides = [str(o) for o in OmegaConf.load(h / "overrides.yaml")]
    except (OSError, AttributeError, ValueError) as e:
        raise ValueError(f"{run_dir} has no readable hydra record of its run ({h}: {e}); it is not a run "
                         "folder of parp-fairseq-sweep run") from None
    return name, recipe_overrides(overrides)


def link_dense_reference(src_work: Path, dst: Path, want: Tuple[str, List[str]], log: Callable[[str], None],
                         poll: float = 30.0) -> None:
    """Link ``dst`` (``WORK/LANG/dense_seedN``) to the same point of the work folder ``src_work``.

    Waits while that point is unfinished and a ``parp-fairseq-sweep run`` holds ``src_work`` (it may be
    training it or about to); refuses a point nobody will finish, and one trained with another recipe
    than ``want`` (``(config name, recipe_overrides(...))`` of the run this sweep would train), so a
    linked reference is the model this sweep would have trained itself."""
    src = src_work / dst.parent.name / dst.name
    where = f"{dst.parent.name}/{dst.name}"
    waited = False
    while not (src / "DONE").exists():
        holder = lock_holder(src_work)
        if holder is None and not (src / "DONE").exists():
            raise RuntimeError(f"--dense-from: {src} is not a finished dense run (no DONE) and nothing is training "
                               f"{src_work}: finish it there (rerun its parp-fairseq-sweep run) or leave out "
                               "--dense-from to train it here")
        if not waited:
            log(f"[sweep] {where}: waiting for {src} ({holder} trains {src_work})")
            waited = True
        time.sleep(poll)
    got = run_recipe(src)
    if got != want:
        diff = sorted(set(got[1]) ^ set(want[1]))
        raise ValueError(f"--dense-from: {src} was trained with another recipe (config {got[0]!r}, this sweep "
                         f"{want[0]!r}; overrides that differ: {' '.join(diff) or 'none'}); its pruned points "
                         "would not start from the model this sweep trains. Use the same --config-name, data, "
                         "pretrained model and overrides, or leave out --dense-from")
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.parent / f".parp_fairseq.link.{os.getpid()}"  # (not a point name: collect never sees it)
    os.symlink(src, tmp, target_is_directory=True)
    os.replace(tmp, dst)
    log(f"[sweep] {where}: the finished dense reference of {src_work} (linked, not retrained)")


def _ctc_model_override(pretrained: str, overrides: Sequence[str]) -> List[str]:
    """``["model._name=parp_hubert_ctc"]`` when the pretrained checkpoint is a HuBERT (its family's plugin
    CTC model), ``[]`` for wav2vec 2.0 / data2vec or when the overrides name a model themselves."""
    from ..checkpoints import encoder_family, load_checkpoint
    from ..models.families import DEFAULT_CTC, ctc_models

    if any(o.lstrip("+").startswith("model._name=") for o in overrides):
        return []
    name = ctc_models(encoder_family(load_checkpoint(pretrained)))[0]
    return [f"model._name={name}"] if name != DEFAULT_CTC[0] else []


def _run_points(args, work: Path, data_root: Path, transfers, langs, log,
                settings: Tuple[List[str], List[Dict[str, str]]]) -> int:
    import threading

    from ..procutil import ChildGroup
    from . import mask as mask_cli

    dist, envs = settings  # job_settings(): the distributed overrides and one environment per job slot
    dense_from = Path(args.dense_from).resolve() if args.dense_from else None
    parallel = len(envs) > 1
    group = ChildGroup() if parallel else None
    slot = threading.local()  # the job slot's environment (CUDA_VISIBLE_DEVICES, OMP_NUM_THREADS)
    slot.env = envs[0]
    log_lock = threading.Lock()
    plain_log = log

    def log(msg: str) -> None:  # one line at a time when several jobs print
        with log_lock:
            plain_log(msg)

    config_dir = Path(args.config_dir).resolve()
    old = json.loads((work / "sweep.json").read_text()) if (work / "sweep.json").exists() else {}
    cmd = "parp-fairseq-sweep " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    commands = [c for c in old.get("commands", []) if c != cmd] + ([cmd] if args.record else [])
    meta = {"commands": commands, "labels": args.labels, "data_root": str(data_root),
            "pretrained": str(Path(args.pretrained).resolve())}
    atomic_write_text(work / "sweep.json", json.dumps(meta, indent=1) + "\n")

    model_name = _ctc_model_override(meta["pretrained"], args.overrides)

    def common(lang: str, seed: int) -> List[str]:
        return [f"task.data={data_root / lang}", f"task.labels={args.labels}", f"model.w2v_path={meta['pretrained']}",
                f"common.seed={seed}", *model_name, *dist, *args.overrides]

    rank = [f"model.pruning.ranking={args.ranking}"] if args.ranking else []
    gran = args.granularity if args.granularity != "weight" else ""
    if gran:
        rank.append(f"model.pruning.granularity={gran}")

    def own_init(method: str) -> str:
        """The score init of the method's own overlay (configs/finetune/pruning/METHOD.yaml)."""
        from omegaconf import OmegaConf

        return str(OmegaConf.load(config_dir / "pruning" / f"{method}.yaml").model.pruning.score_init)

    # --score-init per method: None = the overlay's own (no override); a folder suffix only where it differs
    inits = {m: args.score_init if m in SCORED else None for m in args.methods}
    init_suffix = {m: "" if i is None or i == own_init(m) else i for m, i in inits.items()}

    reported = set()

    def train(d: Path, lang: str, seed: int, *extra: str) -> Path:
        if (d / "DONE").exists():
            if d not in reported:
                log(f"[sweep] {d.relative_to(work)}: done before")
                reported.add(d)
            return _final_checkpoint(d)
        log(f"[sweep] {d.relative_to(work)}")
        _run(hydra_train_cmd(config_dir, args.config_name, d, *common(lang, seed), *extra), d, log,
             env=slot.env, group=group)
        (d / "DONE").touch()
        return _final_checkpoint(d)

    checked = set()  # dense references whose train.log was read for the blank-phase check (once each)

    def dense_point(lang: str, seed: int) -> Path:
        """The final checkpoint of the language's dense reference: trained here, or with --dense-from the
        finished one of another work folder, linked in (waiting while that folder's sweep trains it).
        A reference that recognizes nothing (``blank_phase``) is used all the same, with a warning once; its
        log is read once per sweep."""
        d = point_dir(work, lang, "dense", None, seed)
        if dense_from is not None and not os.path.lexists(d):
            link_dense_reference(dense_from, d, (args.config_name, recipe_overrides(common(lang, seed))), log)
        ckpt = train(d, lang, seed)
        why = None if d in checked else blank_phase(d / "train.log")
        checked.add(d)
        if why:
            log(f"[sweep] WARNING: {d.relative_to(work)} recognizes nothing ({why}): a finetune that has not learned "
                f"to emit units (only CTC blanks, or garbage), so the dense line of seed {seed} and its "
                f"{' / '.join(NEEDS_DENSE)} points (which "
                "start from it) measure a failed run; move the folder aside and rerun it with another seed or "
                "more updates (optimization.max_update)")
        return ckpt

    def omp_mask(lang: str, seed: int, s: float, ranking: str = "") -> Path:
        dense = dense_point(lang, seed)
        suffix = (f"-{ranking.replace(':', 'of')}" if ranking else "") + (f"-{gran}" if gran else "")
        path = work / lang / f"omp_mask{suffix}_s{s:g}_seed{seed}.pt"
        extra = (["--ranking", ranking] if ranking else []) + (["--granularity", gran] if gran else [])
        if not path.exists() and mask_cli.main(["omp", "--checkpoint", str(dense), "--sparsity", str(s),
                                                 "--out", str(path), "--meta", f"lang={lang}", *extra]) != 0:
            raise RuntimeError(f"computing the OMP mask of {dense} failed")
        return path

    def one_seed(seed: int) -> None:
        """Every point of one seed, in order (dense before the points that start from it)."""
        for lang in args.langs:
            if args.dense_reference or "dense" in args.methods:  # every language's reference
                dense_point(lang, seed)
            for method in (m for m in args.methods if m != "dense"):
                for s in args.sparsities:
                    d = point_dir(work, lang, method, s, seed, ranking=args.ranking or "", granularity=gran,
                                  score_init=init_suffix[method])
                    scores = [f"model.pruning.score_init={inits[method]}"] if inits[method] else []
                    if method in NEEDS_DENSE:  # (trained here when --no-dense-reference skipped it above)
                        dense = dense_point(lang, seed)
                    if method == "omp":
                        train(d, lang, seed, "pruning=omp", *rank,
                              f"model.pruning.mask_path={omp_mask(lang, seed, s, args.ranking or '')}")
                    elif method == "imp":
                        if (d / "DONE").exists():
                            log(f"[sweep] {d.relative_to(work)}: done before")
                            continue
                        log(f"[sweep] {d.relative_to(work)} (rounds of {args.imp_rate:g})")
                        # the IMP runs of this seed to other sparsities share their first rounds
                        siblings = [str(o) for o in sorted(d.parent.glob(d.name.replace(f"_s{s:g}_", "_s*_")))
                                    if o != d and (o / "imp.json").exists()]
                        _run([console_script("parp-fairseq-imp"), "--config-dir", str(config_dir), "--config-name",
                              args.config_name, "--workdir", str(d), "--sparsity", str(s), "--rate", str(args.imp_rate),
                              "--schedule", args.imp_schedule, *(f"--reuse-from={o}" for o in siblings),
                              "--start-checkpoint", str(dense), *(["--ranking", args.ranking] if args.ranking else []),
                              *(["--granularity", gran] if gran else []),
                              "--", *common(lang, seed)], d, log, env=slot.env, group=group)
                        (d / "DONE").touch()
                    elif method == "s3router_p":
                        train(d, lang, seed, "pruning=s3router_p", f"model.pruning.sparsity={s}",
                              f"model.pruning.init_from={dense}", *rank, *scores)
                    else:
                        train(d, lang, seed, f"pruning={method}", f"model.pruning.sparsity={s}", *rank, *scores)
        for a, b in transfers:
            for s in args.sparsities:
                d = point_dir(work, b, "parp", s, seed, src=a, granularity=gran)
                train(d, b, seed, "pruning=parp", f"model.pruning.mask_path={omp_mask(a, seed, s)}",
                      f"model.pruning.sparsity={s}", *rank[1 if args.ranking else 0:])
            if (b, b) not in transfers:  # the same-language reference of the transfer matrix
                for s in args.sparsities:
                    train(point_dir(work, b, "parp", s, seed, src=b, granularity=gran), b, seed, "pruning=parp",
                          f"model.pruning.mask_path={omp_mask(b, seed, s)}", f"model.pruning.sparsity={s}",
                          *rank[1 if args.ranking else 0:])

    t0 = time.time()
    if "common.cpu=true" in dist:
        log(f"[sweep] CPU: {envs[0].get('OMP_NUM_THREADS')} torch thread(s) per run (--threads)")
    if parallel:
        log(f"[sweep] seeds {' '.join(map(str, args.seeds))}, {len(envs)} at a time")
        _in_parallel(args.seeds, one_seed, envs, slot, group)
    else:
        for seed in args.seeds:
            one_seed(seed)
    log(f"[sweep] all points trained ({time.time() - t0:.0f} s); next: parp-fairseq-sweep collect --workdir {work}")
    return 0


# ----------------------------------------------------------------------------------------------
def _points(work: Path) -> List[Dict]:
    out = []
    for d in sorted(work.glob("*/*_seed*")):
        if not (d / "DONE").exists() or not d.is_dir():
            continue
        name = d.name
        body, seed = name.rsplit("_seed", 1)
        if body == "dense":
            method, s, src = "dense", 0.0, ""
        else:
            tag, s = body.rsplit("_s", 1)
            src = tag.split("parp_from_", 1)[1] if tag.startswith("parp_from_") else ""
            method = "parp_transfer" if src else tag
            s = float(s)
        out.append({"dir": d, "lang": d.parent.name, "method": method, "target_sparsity": s, "seed": int(seed),
                    "src": src, "checkpoint": _final_checkpoint(d)})
    return out


_LAYERS = "w2v_encoder.w2v_model.encoder.layers."


def _point_stats(p: Dict, slice_: bool, log) -> None:
    """Per-layer sparsity (``"all"`` overall; None for a dense point) and the nonzero transformer
    parameters of a point's checkpoint, read once, and what its training log says (``mask_iou_init``,
    ``recognizes_nothing``: :func:`blank_phase`); with ``slice_``, a structured checkpoint is
    exported sliced (``sliced.pt`` beside it) and that smaller model is what gets decoded."""
    import torch

    from ..checkpoints import checkpoint_masks, effective_weights, load_checkpoint, pruning_cfg
    from ..fsutil import atomic_torch_save
    from ..pruning.analysis import layer_sparsity
    from .export import slice_state

    state = load_checkpoint(p["checkpoint"])  # safe load (weights_only, literal configs)
    masks = checkpoint_masks(state["model"])
    p["layer_sparsity"] = layer_sparsity(masks) if masks else None
    sd = effective_weights(state["model"])
    p["params"] = sum(int(torch.count_nonzero(v)) for k, v in sd.items() if k.startswith(_LAYERS))
    p["decoded"] = p["checkpoint"]
    # PARP / S3-Router diagnostics as logged at the end of training (fairseq train_inner lines)
    from ..reporting import fairseq_log_curve

    log_file = p["dir"] / "train.log"
    last = [v for split, _, v in (fairseq_log_curve(log_file, "mask_iou_init") if log_file.exists() else [])
            if split == "train"]
    p["mask_iou_init"] = last[-1] if last else "-"
    p["recognizes_nothing"] = blank_phase(log_file) if log_file.exists() else None  # why, if it does
    if slice_ and str(pruning_cfg(state).get("granularity", "weight")) != "weight":
        out = p["dir"] / "sliced.pt"
        if not out.exists() or out.stat().st_mtime < Path(p["checkpoint"]).stat().st_mtime:
            sliced = slice_state(state)  # what parp-fairseq-export --slice writes, from the state read above
            atomic_torch_save(sliced, out)
            log(f"[sweep] sliced {p['checkpoint']} -> {out}")
        else:
            sliced = load_checkpoint(out)
        p["decoded"] = out
        p["params"] = sum(v.numel() for k, v in sliced["model"].items() if k.startswith(_LAYERS))


def _grid_tag(values: Sequence[float]) -> str:
    return ",".join(f"{v:g}" for v in values)


def _decode(p: Dict, data: Path, split: str, lm: Optional[Dict] = None) -> List[Dict[str, str]]:
    """Decode one point on one split (Viterbi, or with ``lm`` = {lm, lexicon, lm_weight, word_score} the
    KenLM lexicon beam search; lists of weights / scores decode their grid); the summary rows, one per
    decoder setting. Results are kept beside the point and reused while its checkpoint and the decoder
    settings are unchanged."""
    from . import decode as decode_cli

    ckpt = p.get("decoded", p["checkpoint"])
    # the LM's folder in the name too: decodes with another LM (a tuning LM beside the usual one) keep their own
    tag = "viterbi" if lm is None else (f"kenlm_{Path(lm['lm']).parent.name}_w{_grid_tag(lm['lm_weight'])}"
                                        f"_s{_grid_tag(lm['word_score'])}")
    out = p["dir"] / "decode" / f"{split}_{tag}{'_sliced' if ckpt != p['checkpoint'] else ''}"
    extra = [] if lm is None else ["--decoder", "kenlm", "--lm", lm["lm"], "--lexicon", lm["lexicon"],
                                   "--lm-weight", *(f"{w:g}" for w in lm["lm_weight"]),
                                   "--word-score", *(f"{w:g}" for w in lm["word_score"])]
    # none yet, or of an older checkpoint / LM
    if not decode_cli.results_are_current(out, ckpt, *((lm["lm"], lm["lexicon"]) if lm else ())):
        if decode_cli.main(["--checkpoint", str(ckpt), "--data", str(data), "--split", split,
                            "--results-dir", str(out), *extra]) != 0:
            raise RuntimeError(f"decoding {ckpt} on {split} failed")
    return decode_cli.read_summary(out)


def _kenlm_setting(p: Dict, data: Path, lm: Dict) -> Dict:
    """The KenLM setting a point is reported with (one lm weight, one word score, still as lists): the one
    given, or (``tune_on``) the one of the grid with the lowest WER on that split for THIS model (ties: the
    first in the order given; ``tuned_WER`` that WER), as wav2letter / fairseq recipes tune on dev."""
    if not lm.get("tune_on"):
        return lm  # one value each: checked by _lm_settings
    rows = _decode(p, data, lm["tune_on"], lm)
    best = min(rows, key=lambda r: float(r["WER"]))  # min keeps the first of equals
    return {**lm, "lm_weight": [float(best["lm_weight"])], "word_score": [float(best["word_score"])],
            "tuned_WER": float(best["WER"])}


def _plot_vs_sparsity(rows: List[Dict], lang: str, unit: str, path: Path, decoder: str = "viterbi",
                      metric: str = "unit_error", split: str = "test") -> None:
    """Error on ``split`` vs sparsity per method: mean over seeds with +- one standard deviation error bars,
    dense as a line with its +- std band."""
    from ..reporting import pyplot

    plt = pyplot()

    sel = [r for r in rows if r["lang"] == lang and r["split"] == split and r["decoder"] == decoder]
    fig, ax = plt.subplots(figsize=(6, 4))
    dense = [r[metric] for r in sel if r["method"] == "dense"]
    if dense:
        m, sd = mean_std(dense)
        ax.axhline(m, color="k", ls="--", lw=1, label=f"dense (n={len(dense)})")
        if sd:
            ax.axhspan(m - sd, m + sd, color="k", alpha=0.08)
    for method in sorted({r["method"] for r in sel} - {"dense", "parp_transfer"}):  # transfer: own table
        by_s: Dict[float, List[float]] = {}
        for r in sel:
            if r["method"] == method:
                by_s.setdefault(r["target_sparsity"], []).append(r[metric])
        xs = sorted(by_s)
        stats = [mean_std(by_s[x]) for x in xs]
        n = sorted({len(by_s[x]) for x in xs})
        ax.errorbar(xs, [m for m, _ in stats], yerr=[sd for _, sd in stats], marker="o", capsize=3,
                    label=f"{method} (n={'/'.join(map(str, n))})")
    ax.set_xlabel("sparsity (fraction removed)")
    what = unit if metric == "unit_error" else "WER"
    ax.set_ylabel(f"{split} {what} (%), {decoder}")
    ax.set_title(f"{lang}: {what} vs sparsity (mean +- std over seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def dense_curves(series: Dict[str, List[Path]], metric, path: Path, tsv: Optional[Path] = None) -> int:
    """Validation ``metric`` (fairseq's valid summaries, e.g. ``uer`` or ``loss``; or a list of them,
    e.g. PARP's ``uer_before_reprune uer_after_reprune``) over updates of training runs: ``series`` maps a
    label to its run folders (one per seed, each with the ``train.log`` that ``run`` writes); one line per
    label and metric, mean +- std over its runs where all have the update. Writes ``path`` (PNG) and
    ``tsv`` (label, run, num_updates, one column per metric); returns the number of curves."""
    from ..reporting import fairseq_log_curve, pyplot

    names = [metric] if isinstance(metric, str) else list(metric)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    rows, n = {}, 0
    for i, (label, dirs) in enumerate(series.items()):
        for j, name in enumerate(names):
            per_run = {}
            for d in dirs:
                if (d / "train.log").exists():
                    pts = {u: v for split, u, v in fairseq_log_curve(d / "train.log", name) if split == "valid"}
                    if pts:
                        per_run[d] = pts
                        for u, v in pts.items():
                            rows.setdefault((label, d.name, u), {})[name] = v
            if not per_run:
                continue
            ups = sorted(set.intersection(*(set(p) for p in per_run.values())))
            stats = [mean_std([p[u] for p in per_run.values()]) for u in ups]
            ax.errorbar(ups, [m for m, _ in stats], yerr=[sd for _, sd in stats], marker="o", ms=3, capsize=2,
                        color=f"C{i % 10}", linestyle=("-", "--", ":", "-.")[j % 4],
                        label=f"{label}{f' {name}' if len(names) > 1 else ''} (n={len(per_run)})")
            n += 1
    ax.set_xlabel("updates")
    ax.set_ylabel(f"valid {names[0] if len(names) == 1 else ' / '.join(names)}", fontsize=8 if len(names) > 1 else None)
    ax.set_title(f"validation {' / '.join(names)} over updates{chr(10) if len(names) > 1 else ' '}"
                 "(mean +- std over seeds)", fontsize=9)
    ax.grid(alpha=0.3)
    if n:
        ax.legend(fontsize=7 if len(names) > 1 else 8)
    fig.tight_layout()
    if n:
        from ..fsutil import atomic_write

        atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))  # never half a PNG
        if tsv is not None:
            lines = [f"{lb}\t{run}\t{u}\t" + "\t".join(f"{vals[k]:.4f}" if k in vals else "-" for k in names) + "\n"
                     for (lb, run, u), vals in sorted(rows.items(), key=lambda kv: (list(series).index(kv[0][0]),
                                                                                  kv[0][1], kv[0][2]))]
            atomic_write_text(tsv, "label\trun\tnum_updates\t" + "\t".join(names) + "\n" + "".join(lines))
    plt.close(fig)
    return n


def _layer_plot(points: List[Dict], path: Path) -> Optional[str]:
    from .analyze import _bars

    pruned = [p for p in points if p["method"] != "dense"]
    if not pruned:
        return None
    top = max(p["target_sparsity"] for p in pruned)
    lang = sorted({p["lang"] for p in pruned})[0]
    series = {}
    for p in sorted(pruned, key=lambda p: p["method"]):
        if p["target_sparsity"] != top or p["lang"] != lang or p["seed"] != pruned[0]["seed"]:
            continue
        if p["layer_sparsity"]:
            series[p["method"] + (f"<-{p['src']}" if p["src"] else "")] = p["layer_sparsity"]
    if not series:
        return None
    layers = list(next(iter(series.values())))
    _bars(path, layers, {k: [v[lay] for lay in layers] for k, v in series.items()}, "sparsity (fraction removed)",
          f"{lang}: sparsity per layer at target {top:g}")
    return f"{lang} at sparsity {top:g}"


def _splits(args) -> List[str]:
    """The splits ``collect`` decodes: ``--splits`` as given, or :data:`SPLITS`."""
    return list(getattr(args, "splits", None) or SPLITS)


def _check_splits(args, langs: Sequence[str], data_root: Path, log) -> List[str]:
    """The splits to decode, in table order (test, test_spk, real, valid, then any other in the order
    given). test, test_spk and real are decoded where a language has them; any other split named in
    ``--splits`` that no language of the sweep has, a split named twice, or a list of which no language has
    any, is refused before any decoding."""
    splits = _splits(args)
    if len(set(splits)) != len(splits):
        raise ValueError(f"--splits {' '.join(splits)}: a split named twice")
    has = {split: [lg for lg in langs if (data_root / lg / f"{split}.tsv").is_file()] for split in splits}
    there = " ".join(sorted({f.stem for lg in langs for f in (data_root / lg).glob("*.tsv")}))
    for split in splits:
        if not has[split] and split not in SPLITS:
            raise FileNotFoundError(f"--splits {split}: no language of this sweep has it ({data_root}/"
                                    f"{{{','.join(langs)}}}/{split}.tsv); the splits there: {there}")
        if has[split] and len(has[split]) < len(langs) and split not in SPLITS:
            log(f"[sweep] note: only {', '.join(has[split])} of the sweep's languages have the {split} split")
    if not any(has.values()):
        raise FileNotFoundError(f"--splits {' '.join(splits)}: no language of this sweep ({', '.join(langs)}) has any "
                                f"of them under {data_root}; the splits there: {there}")
    return [*(s for s in SPLIT_ORDER if s in splits), *(s for s in splits if s not in SPLIT_ORDER)]


def _lm_settings(args, meta: Dict, langs: Sequence[str], data_root: Path, log) -> Optional[Dict]:
    """``collect --lm/--lexicon`` (and ``--lm-weight/--word-score`` grids with ``--tune-on``): checked
    before any decoding (letters only: a word LM needs words; a tuning split the LM has seen is refused)."""
    from ..decoding.lm import lines_seen_by_lm

    tune = getattr(args, "tune_on", None)
    weights, scores = list(getattr(args, "lm_weight", [2.0])), list(getattr(args, "word_score", [-1.0]))
    if not getattr(args, "lm", None) and not getattr(args, "lexicon", None):
        if tune:
            raise ValueError(f"--tune-on {tune} chooses the KenLM lm weight and word score: give --lm and --lexicon too")
        return None
    if not (args.lm and args.lexicon):
        raise ValueError("KenLM decoding needs both --lm and --lexicon (parp-fairseq-lm builds them)")
    if meta.get("labels", "ltr") != "ltr":
        raise ValueError(f"--lm decodes words from letters, but this sweep was trained on {meta['labels']!r} "
                         "labels; run the sweep with --labels ltr")
    for opt, path in (("--lm", args.lm), ("--lexicon", args.lexicon)):
        for lang in langs if "{lang}" in path else [None]:
            f = Path(path.format(lang=lang) if lang else path)
            if not f.is_file():
                raise FileNotFoundError(f"{opt} {f} does not exist{f' (language {lang})' if lang else ''}; "
                                        "build the LM and lexicon with parp-fairseq-lm")
    if (len(weights) > 1 or len(scores) > 1) and not tune:
        raise ValueError(f"--lm-weight {_grid_tag(weights)} --word-score {_grid_tag(scores)} is a grid of "
                         f"{len(weights) * len(scores)} settings: add --tune-on valid to choose one per model on "
                         "the valid split (the best of several on test would be fitted to test)")
    reported = _splits(args)
    if tune in reported:
        raise ValueError(f"--tune-on {tune}: that split is reported (--splits {' '.join(reported)}), so its KenLM "
                         f"rows would be fitted to it; tune on a split that is not reported (valid, and leave it "
                         "out of --splits)")
    for lang in langs if tune else []:
        if not (data_root / lang / f"{tune}.tsv").is_file():
            raise FileNotFoundError(f"--tune-on {tune}: {data_root / lang}/{tune}.tsv does not exist (language {lang})")
        wrd = data_root / lang / f"{tune}.wrd"
        lm_path = args.lm.format(lang=lang)
        seen = lines_seen_by_lm(lm_path, wrd.read_text(encoding="utf-8").splitlines()) if wrd.is_file() else None
        if seen:
            raise ValueError(f"--tune-on {tune}: {seen} of the {tune} transcripts of {lang} ({wrd}) are in the text "
                             f"the LM {lm_path} was built from, so the weights chosen on {tune} would favour the LM; "
                             f"rebuild it with parp-fairseq-lm ... --exclude {wrd}")
        if seen is None:
            log(f"[sweep] note: cannot tell whether the LM {lm_path} saw the {tune} transcripts of {lang} (no "
                "lm.json of parp-fairseq-lm with its text beside it); an LM that did favours itself when tuned")
    return {"lm": args.lm, "lexicon": args.lexicon, "lm_weight": weights, "word_score": scores, "tune_on": tune}


def _lm_for(lm: Optional[Dict], lang: str) -> Optional[Dict]:
    """The KenLM settings of one language (``{lang}`` in --lm / --lexicon filled in), absolute paths."""
    if lm is None:
        return None
    return {**lm, **{k: str(Path(lm[k].format(lang=lang)).resolve()) for k in ("lm", "lexicon")}}


def curves(args, log=print) -> int:
    """``curves``: the validation curves of several sweep work folders in one plot (e.g. a
    learning-rate sweep: one work folder per rate): the dense runs, or those ``--runs`` names (e.g.
    ``'parp_s0.9_seed*'`` with ``--metric uer_before_reprune uer_after_reprune``)."""
    import re

    bad = [m for m in args.metric if not re.fullmatch(r"\w+", m)]
    if bad:
        raise ValueError(f"--metric {' '.join(bad)}: not a fairseq metric name (uer, loss_after_reprune, ...); "
                         "give the work folders before --metric")
    series = {}
    for w in args.workdirs:
        label, _, path = w.rpartition("=") if "=" in w else (Path(w).name, "", w)
        work = Path(path)
        if not work.is_dir():
            raise FileNotFoundError(f"{work} does not exist; run `parp-fairseq-sweep run` first")
        # finished or still running (a curve is worth watching while it grows)
        dirs = [d for d in sorted(work.glob(f"*/{args.runs}")) if (d / "train.log").exists()
                and args.lang in (None, d.parent.name)]
        if not dirs:
            raise FileNotFoundError(f"no runs <lang>/{args.runs}/train.log under {work}"
                                    f"{f' (language {args.lang})' if args.lang else ''}")
        series[label] = dirs
    out = Path(args.out)
    if out.suffix.lower() != ".png":
        raise ValueError(f"--out {out}: give a .png file name (the table goes beside it as {out.stem}.tsv)")
    n = dense_curves(series, args.metric, out, out.with_suffix(".tsv"))
    if not n:
        raise ValueError(f"no validation {' / '.join(args.metric)} found in the train.log of those runs")
    log(f"[sweep] wrote {out} and {out.with_suffix('.tsv')} ({n} curves)")
    return 0


def paired_costs(tables: Dict[str, List[Dict[str, str]]], lang: Optional[str] = None, split: str = "test",
                 decoder: str = "viterbi", metric: str = "unit_error",
                 versus: str = "dense") -> "tuple[List[Dict], int]":
    """Each pruned point's cost against the dense model (or ``versus``) of ITS OWN table, language and seed.

    ``tables``: ``{name: rows of a results.tsv}`` (``collect``'s output, one per sweep / session). A slice
    of the study trained in another session has its own dense references (runs trained with the stock,
    unseeded span masks are not repeatable), so points are compared within their table, never across.
    ``versus``: another method instead of the dense model (``"omp"``: PARP - OMP per seed, the PARP
    paper's comparison); then the reference is that method's point of the same table, language, seed AND
    sparsity, and the dense rows are not points. Returns
    ``([{"table", "lang", "method", "sparsity", "seed", "value", "reference", "cost"}], left_out)``: the
    pairs, and how many selected rows (other than the reference's and, with ``versus``, dense's) had no
    reference row."""
    out, left_out = [], 0
    for name, rows in tables.items():
        sel = [r for r in rows if r["split"] == split and r["decoder"] == decoder and lang in (None, r["lang"])
               and r.get(metric, "-") not in ("-", "")]

        def key(r: Dict[str, str]) -> tuple:
            return (r["lang"], r["seed"]) + (() if versus == "dense" else (float(r["target_sparsity"]),))

        ref = {key(r): float(r[metric]) for r in sel if r["method"] == versus}
        for r in sel:
            if r["method"] in (versus, "dense"):
                continue
            if key(r) not in ref:
                left_out += 1
                continue
            v = float(r[metric])
            out.append({"table": name, "lang": r["lang"], "method": r["method"], "sparsity": float(r["target_sparsity"]),
                        "seed": r["seed"], "value": v, "reference": ref[key(r)], "cost": v - ref[key(r)]})
    return out, left_out


def cost(args, log=print) -> int:
    """``cost``: pruned-minus-dense (or minus ``--versus`` METHOD) error per seed, pooled over results.tsv
    files of several sweeps or sessions; a plot of cost vs sparsity per method (mean +- std over the seeds'
    pairs) and its table."""
    from ..fsutil import atomic_write
    from ..reporting import pyplot

    need = {"lang", "method", "target_sparsity", "seed", "split", "decoder", args.metric}
    tables = {item: read_results(Path(item), need)[1] for item in args.results}
    out = Path(args.out)
    if out.suffix.lower() != ".png":
        raise ValueError(f"--out {out}: give a .png file name (the tables go beside it as {out.stem}.tsv / .md)")
    versus = args.versus
    # the words that name the reference, in the error, the tables and the plot
    if versus == "dense":
        ref, same, column, title, zero = ("the dense model", "language and seed", "cost vs dense", "cost of pruning",
                                          "dense of the same seed")
    else:
        ref, same, column, title, zero = (f"{versus} at the same sparsity", "language, seed and sparsity",
                                          f"minus {versus}", f"each method - {versus}",
                                          f"{versus} of the same seed and sparsity")
    pairs, unpaired = paired_costs(tables, args.lang, args.split, args.decoder, args.metric, versus)
    if not pairs:
        methods = sorted({r["method"] for rows in tables.values() for r in rows})
        raise ValueError(f"no pruned point has a {versus} row of the same file, {same} "
                         f"(split={args.split}, decoder={args.decoder}, metric={args.metric}; "
                         f"methods in the tables: {', '.join(methods)})")
    groups: Dict[tuple, List[Dict]] = {}
    for p in pairs:
        groups.setdefault((p["method"], p["sparsity"]), []).append(p)
    stats = {k: mean_std([p["cost"] for p in v]) for k, v in groups.items()}
    what = {"unit_error": "unit error (CER / PER)", "WER": "WER"}.get(args.metric, args.metric)
    head = ["method", "sparsity", "n", "cost_mean", "cost_std", "costs (per seed)"]
    tsv = ["\t".join(head)]
    md = [f"{args.split.capitalize()} {what} of each pruned model minus {ref} of its own sweep and seed ({args.split}, "
          f"{args.decoder}; mean +- std over pairs):", "",
          f"| method | sparsity | n | {column} | per seed |",
          "|---|---|---|---|---|"]
    for (method, sp), ps in sorted(groups.items()):
        m, sd = stats[(method, sp)]
        per = " / ".join(f"{p['cost']:+.2f}" for p in sorted(ps, key=lambda p: (p["table"], int(p["seed"]))))
        tsv.append(f"{method}\t{sp:.4f}\t{len(ps)}\t{m:.4f}\t{sd:.4f}\t{per}")
        md.append(f"| {method} | {sp:g} | {len(ps)} | {m:+.2f} +- {sd:.2f} | {per} |")
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.axhline(0, color="k", ls="--", lw=1, label=zero)
    for method in sorted({k[0] for k in groups}):
        xs = sorted(sp for mth, sp in groups if mth == method)
        ax.errorbar(xs, [stats[(method, x)][0] for x in xs], yerr=[stats[(method, x)][1] for x in xs], marker="o",
                    capsize=3, label=f"{method} (n={'/'.join(str(len(groups[(method, x)])) for x in xs)})")
    ax.set_xlabel("sparsity (fraction removed)")
    ax.set_ylabel(f"{what}: pruned - {versus} (points)")
    ax.set_title(f"{args.lang or 'all languages'}: {title} vs sparsity ({args.split}, {args.decoder})", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_write(out, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
    atomic_write_text(out.with_suffix(".tsv"), "\n".join(tsv) + "\n")
    atomic_write_text(out.with_suffix(".md"), "\n".join(md) + "\n")
    log(f"[sweep] wrote {out}, {out.with_suffix('.tsv')}, {out.with_suffix('.md')} ({len(pairs)} pairs"
        + (f"; {unpaired} pruned rows without a {versus} row of the same file, {same} left out" if unpaired else "")
        + ")")
    return 0


def read_results(path: Path, need) -> "tuple[List[str], List[Dict[str, str]]]":
    """``(columns, rows)`` of a results.tsv of `collect`; a missing file or one without the ``need``
    columns is one clear error."""
    import csv

    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; give results.tsv files of `parp-fairseq-sweep collect`")
    with open(path, newline="") as f:
        reader = csv.DictReader(f, delimiter="\t")
        rows = list(reader)
        cols = list(reader.fieldnames or [])
    if not rows or set(need) - set(cols):
        raise ValueError(f"{path} is not a sweep results.tsv (needs columns {', '.join(sorted(need))}; "
                         f"missing {', '.join(sorted(set(need) - set(cols))) or 'nothing, but it has no rows'})")
    return cols, rows


# a results.tsv row is one point x split x decoder; these name it, the MEASURED columns are what a rerun repeats
RESULT_KEY = ("lang", "method", "mask_from", "target_sparsity", "seed", "split", "decoder")
MEASURED = ("actual_sparsity", "WER", "unit_error", "transformer_params")


def merge_results(tables: List["tuple[str, List[Dict[str, str]]]"], on_conflict: str = "error",
                  lang: Optional[str] = None, sparsities: Optional[Sequence[float]] = None,
                  ) -> "tuple[List[Dict[str, str]], Dict[str, int], List[str]]":
    """Rows of several results.tsv (``[(name, rows)]``, earlier first) as one table, one row per key.

    ``lang`` keeps one language's rows; ``sparsities`` keeps the pruned points at these target sparsities
    and every dense row (the reference each point is compared with), e.g. one slice of a work folder
    that trained several.

    A key met again with the same measured values is a repeat (a rerun or a reference shared by two work
    folders: kept once); with other values it is a conflict: ``on_conflict`` ``"first"`` keeps the earlier
    row, ``"last"`` the later, ``"error"`` keeps the earlier and lists it in the returned ``conflicts``.
    Returns ``(rows sorted: language, dense first, method, sparsity, seed, split, decoder; counts of
    added / repeated / conflicting rows; conflict descriptions)``."""
    if on_conflict not in ("error", "first", "last"):
        raise ValueError(f"on_conflict {on_conflict!r}: choose error, first or last")
    have: Dict[tuple, Dict[str, str]] = {}
    counts = {"added": 0, "repeated": 0, "conflicting": 0}
    conflicts: List[str] = []
    for name, rows in tables:
        for r in rows:
            if lang is not None and r["lang"] != lang:
                continue
            if sparsities is not None and r["method"] != "dense" and not any(
                    abs(float(r["target_sparsity"]) - x) < 1e-6 for x in sparsities):
                continue
            k = tuple(r.get(c, "-") for c in RESULT_KEY)
            old = have.get(k)
            if old is None:
                have[k] = r
                counts["added"] += 1
                continue
            diff = [c for c in MEASURED if old.get(c) != r.get(c)]
            if not diff:
                counts["repeated"] += 1
                continue
            counts["conflicting"] += 1
            conflicts.append(f"{' '.join(k)} in {name}: " + ", ".join(f"{c} {old.get(c)} -> {r.get(c)}" for c in diff))
            if on_conflict == "last":
                have[k] = r
    split_order = {s: i for i, s in enumerate(SPLIT_ORDER)}

    def order(r):
        return (r["lang"], r["method"] != "dense", r["method"], r.get("mask_from", "-"), float(r["target_sparsity"]),
                int(r["seed"]), split_order.get(r["split"], len(SPLIT_ORDER)), r["split"], r["decoder"] != "viterbi",
                r["decoder"])

    return sorted(have.values(), key=order), counts, conflicts


def merge(args, log=print) -> int:
    """``merge``: the rows of several results.tsv (work folders of parallel streams, sessions) in one
    table, added to ``--out`` where it exists; a point decoded again must repeat its numbers."""
    import csv
    import io

    out = Path(args.out)
    sources = ([out] if out.exists() else []) + [Path(x) for x in args.results]
    tables, columns = [], None
    for path in sources:
        cols, rows = read_results(path, RESULT_KEY + MEASURED)
        # tables of an older version lack the newer columns (e.g. lm_weight): "-" there, never dropped
        columns = cols if columns is None else columns + [c for c in cols if c not in columns]
        tables.append((str(path), rows))
    check_pruned_sparsities(args.sparsities or (), "--sparsities", " (dense rows are always kept)")
    rows, counts, conflicts = merge_results(tables, args.on_conflict, args.lang, args.sparsities)
    if conflicts and args.on_conflict == "error":
        more = f" (and {len(conflicts) - 3} more)" if len(conflicts) > 3 else ""
        raise ValueError(f"{len(conflicts)} row(s) measured differently in two tables, nothing written: "
                         + "; ".join(conflicts[:3]) + more + ". A retrained point that should repeat did not "
                         "(thread count, software); keep one with --on-conflict first|last")
    for c in conflicts:
        log(f"[sweep] conflict ({args.on_conflict} kept): {c}")
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, delimiter="\t", lineterminator="\n", restval="-")
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(out, buf.getvalue())
    log(f"[sweep] wrote {out}: {len(rows)} rows ({counts['added']} distinct of {len(sources)} table(s), "
        f"{counts['repeated']} repeated with the same numbers, {counts['conflicting']} conflicting)")
    return 0


COLLECT_LOCK = ".parp_fairseq.collect.lock"


def collect(args, log=print) -> int:
    work = Path(args.workdir).resolve()
    if not work.is_dir():
        raise FileNotFoundError(f"--workdir {work} does not exist; run `parp-fairseq-sweep run` first")
    # collect reads finished points only (DONE written after their checkpoint) and writes their decode
    # folders and its own tables, nothing `run` touches: it takes its own lock, so it can report a sweep
    # that is still training, and two collects of one folder are refused
    with workdir_lock(work, "parp-fairseq-sweep collect", name=COLLECT_LOCK):
        training = lock_holder(work)
        if training:
            log(f"[sweep] {work} is still being trained by {training}: collecting the points finished so far "
                "(collect again when it is done)")
        return _collect(args, work, log)


def _collect(args, work: Path, log) -> int:
    from ..reporting import update_markdown_section

    meta = json.loads((work / "sweep.json").read_text()) if (work / "sweep.json").exists() else {}
    points = _points(work)
    if not points:
        raise FileNotFoundError(f"no finished sweep points under {work}; run `parp-fairseq-sweep run` first")
    data_root = Path(meta.get("data_root", args.data_root or ""))
    point_langs = sorted({p["lang"] for p in points})
    splits = _check_splits(args, point_langs, data_root, log)
    lm = _lm_settings(args, meta, point_langs, data_root, log)
    rows = []
    from tqdm import tqdm

    failed = {}  # points whose training log says they recognize nothing: rel dir -> why
    for p in tqdm(points, desc="decode points", unit="point", file=sys.stderr):
        data = data_root / p["lang"]
        _point_stats(p, getattr(args, "slice", False), log)
        if p["recognizes_nothing"]:
            failed[str(p["dir"].relative_to(work))] = p["recognizes_nothing"]
        actual = p["layer_sparsity"]["all"] if p["layer_sparsity"] else 0.0
        setting = _kenlm_setting(p, data, _lm_for(lm, p["lang"])) if lm else None  # tuned: on its own split
        for split in splits:
            if not (data / f"{split}.tsv").exists():
                continue
            for decoder in ("viterbi", "kenlm") if lm else ("viterbi",):
                kl = setting if decoder == "kenlm" else None
                r = _decode(p, data, split, kl)[0]
                unit = [k for k in r if k in ("PER", "CER", "UER")][0]
                rows.append({"lang": p["lang"], "method": p["method"], "mask_from": p["src"] or "-",
                             "target_sparsity": p["target_sparsity"], "actual_sparsity": actual, "seed": p["seed"],
                             "split": split, "decoder": decoder, "unit": unit,
                             "WER": float(r["WER"]) if r["WER"] != "-" else "-",
                             "unit_error": float(r[unit]), "transformer_params": p["params"],
                             "mask_iou_init": p["mask_iou_init"], "checkpoint": str(p["decoded"]),
                             "lm_weight": f"{kl['lm_weight'][0]:g}" if kl else "-",
                             "word_score": f"{kl['word_score'][0]:g}" if kl else "-",
                             "lm_tuned_on": (kl["tune_on"] or "-") if kl else "-",
                             "tuned_WER": kl.get("tuned_WER", "-") if kl else "-"})
    cols = ["lang", "method", "mask_from", "target_sparsity", "actual_sparsity", "seed", "split", "decoder", "WER",
            "unit", "unit_error", "transformer_params", "mask_iou_init", "checkpoint", "lm_weight", "word_score",
            "lm_tuned_on", "tuned_WER"]
    atomic_write_text(work / "results.tsv", "\t".join(cols) + "\n" + "".join(
        "\t".join(f"{r[c]:.4f}" if isinstance(r[c], float) else str(r[c]) for c in cols) + "\n" for r in rows))
    unit = rows[0]["unit"]
    langs = sorted({r["lang"] for r in rows})
    # main table: method x sparsity rows, language columns (test split, mean over seeds)
    keyset = sorted({(r["method"], r["target_sparsity"]) for r in rows if r["method"] != "parp_transfer"},
                    key=lambda k: (k[1], k[0]))
    # one column per (split, language) that has rows: test first, then test_spk, real, valid, other --splits
    columns = [(split, lg) for split in splits for lg in langs
               if any(r["lang"] == lg and r["split"] == split for r in rows)]
    md = [f"{unit} (%), Viterbi, mean +- std over seeds (n = number of seeds): `test` = held-out speakers "
          "(synthetic) or sentences (real tasks), `test_spk` = a real task's held-out speakers, `real` = "
          "recorded speech" + (", `valid` = the split the runs validated on (their dev set)"
                               if "valid" in splits else "") + ".", "",
          "| method | sparsity | " + " | ".join(lg if split == "test" else f"{lg} {split}" for split, lg in columns)
          + " |", "|---|---|" + "---|" * len(columns)]

    def mean(method, s, lang, split, decoder="viterbi", metric="unit_error"):
        v = [float(r[metric]) for r in rows if (r["method"], r["target_sparsity"], r["lang"], r["split"],
                                                 r["decoder"]) == (method, s, lang, split, decoder)
             and r[metric] != "-"]
        if not v:
            return "-"
        m, sd = mean_std(v)
        return f"{m:.1f}" if len(v) == 1 else f"{m:.1f} +- {sd:.1f} (n={len(v)})"

    for method, s in keyset:
        md.append(f"| {method} | {s:g} | " + " | ".join(mean(method, s, lg, split) for split, lg in columns) + " |")
    if failed:  # in the means above all the same: the reader decides, the table says which rows they are
        note = ("Runs that recognize nothing (last valid uer >= 100: only CTC blanks, or garbage; their rows are in "
                "the means above): "
                + "; ".join(f"`{d}` ({why})" for d, why in failed.items()) + ".")
        md += ["", note]
        log(f"[sweep] note: {note}")
    if any(r["WER"] != "-" for r in rows):  # letters: word error rates, Viterbi and (with --lm) KenLM
        decoders = ["viterbi", "kenlm"] if lm else ["viterbi"]
        wcols = [(split, lg, dec) for split, lg in columns for dec in decoders]
        if lm and lm["tune_on"]:
            how = (f"; KenLM: {lm['lm']} + lexicon, lm weight and word score chosen per model by its WER on "
                   f"{lm['tune_on']} from lm weight {_grid_tag(lm['lm_weight'])} x word score "
                   f"{_grid_tag(lm['word_score'])} (the choices: table below)")
        elif lm:
            how = f"; KenLM: {lm['lm']} + lexicon, lm weight {lm['lm_weight'][0]:g}, word score {lm['word_score'][0]:g}"
        md += ["", "WER (%), mean +- std over seeds" + (how if lm else "") + ".", "",
            "| method | sparsity | " + " | ".join(f"{lg}{'' if split == 'test' else ' ' + split} {dec}"
                                               for split, lg, dec in wcols) + " |",
            "|---|---|" + "---|" * len(wcols)]
        for method, s in keyset:
            md.append(f"| {method} | {s:g} | " + " | ".join(mean(method, s, lg, split, dec, "WER")
                                                          for split, lg, dec in wcols) + " |")
    if lm and lm["tune_on"]:
        md += ["", f"KenLM settings chosen on {lm['tune_on']} (per seed, in seed order) and the {lm['tune_on']} "
               "WER they gave:", "", "| method | mask from | sparsity | lm weight | word score | "
               f"{lm['tune_on']} WER |", "|---|---|---|---|---|---|"]
        chosen: Dict[tuple, List[Dict]] = {}
        for r in rows:
            if r["decoder"] == "kenlm" and r["split"] == rows[0]["split"]:  # one row per point
                chosen.setdefault((r["lang"], r["method"], r["mask_from"], r["target_sparsity"]), []).append(r)
        for (lg, method, src, sp), rs in sorted(chosen.items(), key=lambda kv: (kv[0][0], kv[0][3], kv[0][1], kv[0][2])):
            rs.sort(key=lambda r: r["seed"])
            md.append(f"| {method}{'' if len(langs) == 1 else f' ({lg})'} | {src} | {sp:g} | "
                      + " | ".join(" / ".join(fmt(r[c]) for r in rs) for c, fmt in (
                          ("lm_weight", str), ("word_score", str), ("tuned_WER", lambda v: f"{v:.1f}"))) + " |")
    main = "test" if "test" in splits else splits[0]  # the split of the plots and the transfer matrix
    tr = [r for r in rows if r["method"] == "parp_transfer" and r["split"] == main]
    if tr:
        srcs = sorted({r["mask_from"] for r in tr})
        tgts = sorted({r["lang"] for r in tr})
        tmd = []
        # one matrix per decoder and metric: Viterbi unit error, and the KenLM WER where an LM was given
        for dec, metric, label in (("viterbi", "unit_error", f"{unit}, Viterbi"), ("kenlm", "WER", "WER, KenLM")):
            sel = [r for r in tr if r["decoder"] == dec]
            if not sel:
                continue
            tmd += [f"PARP on the target language starting from the OMP mask of the source language: {main} {label} "
                    "(%), mean +- std over seeds (n), and in brackets the change of the mean vs the target's own mask.",
                    ""]
            seeds: Dict[tuple, List[float]] = {}  # (source, target, sparsity) -> one value per seed
            for r in sel:
                seeds.setdefault((r["mask_from"], r["lang"], r["target_sparsity"]), []).append(r[metric])
            cell = {k: (*mean_std(v), len(v)) for k, v in seeds.items()}
            for s in sorted({k[2] for k in cell}):
                tmd += [f"Sparsity {s:g}:", "", "| mask from \\ finetuned on | " + " | ".join(tgts) + " |",
                        "|---|" + "---|" * len(tgts)]
                for a in srcs:
                    cells = []
                    for b in tgts:
                        if (a, b, s) not in cell:
                            cells.append("-")
                            continue
                        m, sd, n = cell[(a, b, s)]
                        own = cell.get((b, b, s))
                        cells.append(f"{m:.1f} +- {sd:.1f} (n={n})" + (f" ({m - own[0]:+.1f})" if own else ""))
                    tmd.append(f"| {a} | " + " | ".join(cells) + " |")
                tmd.append("")
        atomic_write_text(work / "transfer.md", "\n".join(tmd) + "\n")
        atomic_write_text(work / "transfer.tsv", "mask_from\tfinetuned_on\ttarget_sparsity\tseed\tdecoder\tunit_error\tWER\n" + "".join(
            f"{r['mask_from']}\t{r['lang']}\t{r['target_sparsity']:g}\t{r['seed']}\t{r['decoder']}\t{r['unit_error']:.4f}\t"
            + (f"{r['WER']:.4f}" if r["WER"] != "-" else "-") + "\n" for r in tr))
        md += ["", "### Cross-lingual mask transfer", ""] + tmd
    plots = []
    for lang in langs:
        _plot_vs_sparsity(rows, lang, unit, work / f"{lang}_vs_sparsity.png", split=main)
        plots.append(f"{lang}_vs_sparsity.png")
        if lm:
            _plot_vs_sparsity(rows, lang, unit, work / f"{lang}_wer_kenlm_vs_sparsity.png", "kenlm", "WER", main)
            plots.append(f"{lang}_wer_kenlm_vs_sparsity.png")
    # the dense baselines' validation curves: has the reference converged?
    dense_dirs = {lg: [p["dir"] for p in points if p["lang"] == lg and p["method"] == "dense"] for lg in langs}
    if dense_curves({f"{lg} dense": d for lg, d in dense_dirs.items() if d}, "uer", work / "dense_curve.png",
                    work / "dense_curve.tsv"):
        plots.append("dense_curve.png")
    which = _layer_plot(points, work / "layer_sparsity.png")
    text = "\n".join(md) + "\n"
    atomic_write_text(work / "results.md", text)
    log(text)
    log(f"[sweep] wrote {work}/results.tsv, results.md, " + ", ".join(plots)
        + (f", layer_sparsity.png ({which})" if which else ""))
    if args.results_md:
        cmds = [*meta.get("commands", []), *([meta["command"]] if meta.get("command") else []),
                "parp-fairseq-sweep " + " ".join(shlex.quote(a) for a in sys.argv[1:])]
        section = "\n".join([f"## Sweep: {work.name}", "", "```", *cmds, "```", "", text,
                             f"Plots: {', '.join(f'`{work.name}/{png}`' for png in plots)}"
                             + (f", `{work.name}/layer_sparsity.png`" if which else ""), ""])
        update_markdown_section(args.results_md, f"sweep_{work.name}", section, title="# Results\n")
        log(f"[sweep] updated {args.results_md}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from ..pruning.scores import SCORE_INITS

    ap = argparse.ArgumentParser(prog="parp-fairseq-sweep", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="train every point (resumable)")
    r.add_argument("--workdir", required=True)
    r.add_argument("--data-root", required=True, help="corpus root with one folder per language")
    r.add_argument("--pretrained", default=None,
                   help="pretrained wav2vec 2.0 checkpoint (default: the shipped model, parp-fairseq-pretrained path)")
    r.add_argument("--langs", nargs="+", required=True)
    r.add_argument("--methods", nargs="+", default=["omp", "parp"], help=f"of {' '.join(METHODS)}")
    r.add_argument("--sparsities", nargs="+", type=float, default=[0.5])
    r.add_argument("--seeds", nargs="+", type=int, default=[1])
    r.add_argument("--labels", default="phn", help="ltr (WER + CER) or phn (PER)")
    r.add_argument("--transfer", nargs="*", default=None, metavar="SRC:TGT",
                   help="PARP on TGT from the OMP mask of SRC (mask transfer matrix)")
    r.add_argument("--ranking", default=None,
                   help="model.pruning.ranking for the pruned points (e.g. 2:4); the run folders get a "
                        "-2of4 style suffix and the method column says e.g. parp-2of4")
    r.add_argument("--granularity", choices=("weight", "neuron", "head", "neuron+head"), default="weight",
                   help="model.pruning.granularity of the pruned points (structured points can be decoded "
                        "sliced: `collect --slice`); the run folders get a -GRANULARITY suffix")
    r.add_argument("--score-init", choices=SCORE_INITS, default=None,
                   help="S3-Router / S3-Router-P score init (model.pruning.score_init): ori (the official "
                        "weight_rank: random scores ranked as |w|), magnitude (0/1 magnitude mask), "
                        "magnitude_scale (|w| / score_scale), kaiming (random). Default: the method's overlay "
                        "(s3router: ori, s3router_p: magnitude_scale); any other init gives the run folders a "
                        "-INIT suffix and its own method rows, e.g. s3router-kaiming")
    r.add_argument("--no-dense-reference", dest="dense_reference", action="store_false",
                   help="train a language's dense model only where a point starts from it (OMP, IMP, "
                        "S3-Router-P, --transfer) or `dense` is in --methods; by default every language gets "
                        "its dense reference (the line in the plots), e.g. skip it for S3-Router masks alone")
    r.add_argument("--dense-from", default=None, metavar="WORKDIR",
                   help="take each language and seed's dense reference from another work folder (a second "
                        "stream of one study: its points start from the same dense models instead of training "
                        "their own): a finished one is linked in; while that folder's sweep still runs, this one "
                        "waits for it. Refused when it was trained with another recipe (config, data, pretrained "
                        "model, overrides); points whose dense folder already exists here keep it")
    r.add_argument("--imp-rate", type=float, default=0.3, help="IMP: fraction removed per round (see --imp-schedule)")
    r.add_argument("--imp-schedule", choices=("remaining", "original"), default="remaining",
                   help="IMP: rate of the REMAINING weights per round, or of the ORIGINAL ones (official code). "
                        "The IMP points of one seed share the rounds their schedules have in common (with "
                        "'original' the 90 %% point's first rounds are the 10-70 %% points'): list the sparsities "
                        "in rising order and each point trains only the rounds past the one before")
    r.add_argument("--config-dir", default=str(REPO / "configs" / "finetune"))
    r.add_argument("--config-name", default="mini")
    r.add_argument("--world-size", type=int, default=None, help="GPUs per run (default: all visible)")
    r.add_argument("--jobs", type=int, default=1,
                   help="seeds trained at once, each seed's points in order (dense first, then the points that "
                        "start from it). On GPUs every job trains on one GPU, round-robin over the visible ones "
                        "(the study's small runs are bound by fairseq's per-epoch validation and checkpoint "
                        "writes, so several share one GPU well); on CPU each job runs with --threads torch threads. "
                        "One job failing stops the others. Default 1: one run at a time, on every visible GPU")
    r.add_argument("--threads", type=int, default=None,
                   help="torch threads (OMP_NUM_THREADS) of every CPU training run, whatever --jobs. Default: "
                        "OMP_NUM_THREADS of the environment, else 1. On CPU a seed's numbers depend on the "
                        "thread count (the float sums are split differently), so keep one count for runs that "
                        "are to be compared or repeated (the study: 1); each run folder records its count "
                        "(file `threads`; the CPU and torch build in `cpu`) and a resume with another count or CPU "
                        "kind is warned about")
    r.add_argument("--no-record", dest="record", action="store_false", help=argparse.SUPPRESS)
    r.add_argument("overrides", nargs="*", help="hydra overrides for every run (after --)")
    c = sub.add_parser("collect", help="decode every finished point; tables and plots")
    c.add_argument("--workdir", required=True)
    c.add_argument("--data-root", default=None, help="default: as recorded by `run`")
    c.add_argument("--results-md", default=None, help="also update a section of this markdown file (RESULTS.md)")
    c.add_argument("--slice", action="store_true",
                   help="decode structured points as sliced models (parp-fairseq-export --slice); the "
                        "transformer_params column then counts the smaller model's parameters")
    c.add_argument("--lm", default=None, help="KenLM word LM (binary or ARPA): also decode with the lexicon "
                                              "beam search (letters only); WER table and plot per decoder. "
                                              "{lang} in the path: one LM per language (exp/lm_{lang}/lm.bin)")
    c.add_argument("--lexicon", default=None, help="wav2letter lexicon for --lm ({lang} as in --lm)")
    c.add_argument("--lm-weight", type=float, nargs="+", default=[2.0],
                   help="KenLM weight; several values (with --tune-on): a grid, one chosen per model")
    c.add_argument("--word-score", type=float, nargs="+", default=[-1.0],
                   help="word insertion score; several values (with --tune-on): a grid, one chosen per model")
    c.add_argument("--splits", nargs="+", default=None, metavar="SPLIT",
                   help="the splits to decode and report (default: test test_spk real, each where the language has "
                        "it); e.g. --splits test valid adds each point's valid (dev) numbers as split=valid rows "
                        "(`cost --split valid` pairs them)")
    c.add_argument("--tune-on", default=None, metavar="SPLIT",
                   help="choose each model's lm weight and word score by its WER on this split (e.g. valid) from "
                        "the --lm-weight x --word-score grid, then report test with that choice; the LM must not "
                        "have seen SPLIT's transcripts (parp-fairseq-lm --exclude DATA/LANG/SPLIT.wrd), checked "
                        "where lm.json tells")
    v = sub.add_parser("curves", help="validation curves (dense runs by default) of several work folders in one plot")
    v.add_argument("workdirs", nargs="+", metavar="[LABEL=]WORKDIR")
    v.add_argument("--out", required=True, help="PNG to write (and the same name .tsv)")
    v.add_argument("--metric", nargs="+", default=["uer"],
                   help="fairseq valid metrics, one line each: uer, wer, loss; PARP also logs them with "
                        "_before_reprune (regrown weights) and _after_reprune (the re-pruned model it keeps)")
    v.add_argument("--runs", default="dense_seed*",
                   help="run folders to plot, a glob under each language folder (default: the dense runs; "
                        "e.g. 'parp_s0.9_seed*': one curve over the seeds of one point)")
    v.add_argument("--lang", default=None, help="only this language's runs")
    k = sub.add_parser("cost", help="pruned minus dense (or --versus METHOD) error per seed, pooled over "
                                        "several results.tsv")
    k.add_argument("results", nargs="+", help="results.tsv files of `collect` (each paired within itself)")
    k.add_argument("--out", required=True, help="PNG to write (and the same name .tsv / .md)")
    k.add_argument("--lang", default=None, help="only this language's rows")
    k.add_argument("--split", default="test", help="the split of the rows to pair (valid: rows of `collect --splits ... valid`)")
    k.add_argument("--decoder", default="viterbi", help="viterbi or kenlm")
    k.add_argument("--metric", default="unit_error", choices=("unit_error", "WER"))
    k.add_argument("--versus", default="dense", metavar="METHOD",
                   help="the reference: dense (default; each point minus the dense model of its file and seed) or "
                        "a method, e.g. omp: each other method minus that method's point of the same file, seed "
                        "and sparsity (PARP - OMP per seed, the PARP paper's comparison)")
    m = sub.add_parser("merge", help="rows of several results.tsv in one table (a rerun must repeat its numbers)")
    m.add_argument("results", nargs="+", help="results.tsv files of `collect` (added in this order)")
    m.add_argument("--out", required=True, help="the merged results.tsv; where it exists, its rows come first")
    m.add_argument("--lang", default=None, help="only this language's rows (of the inputs and of --out)")
    m.add_argument("--sparsities", nargs="+", type=float, default=None, metavar="S",
                   help="only the pruned points at these target sparsities, and every dense row (of the inputs "
                        "and of --out): one slice of work folders that trained several, e.g. --sparsities 0.3")
    m.add_argument("--on-conflict", choices=("error", "first", "last"), default="error",
                   help="a point (language, method, mask source, sparsity, seed, split, decoder) met again with "
                        "other numbers: refuse (default, nothing written), keep the first or the last")
    return ap


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    cmd = {"run": run, "collect": collect, "curves": curves, "cost": cost, "merge": merge}[args.cmd]
    return run_cli("parp-fairseq-sweep", lambda: cmd(args), extra=(RuntimeError,))


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env bash
# The papers' study (issue 12; RESULTS.md "The papers' study"), one claim at a time, resumable: every
# command is a `parp-fairseq-sweep run` (finished points are skipped) or an analysis that rewrites only
# its own output folder. Rerun the same command after a stop. On a GPU machine each run uses every
# visible GPU (fairseq distributed); on CPU one process of one torch thread per run (`--threads`; 17-19 min per 2,000-update run
# at 10 min of labels, two runs at a time on a 2-core machine, measured 2026-12-03).
#
#   scripts/study.sh data           # the corpora, the 10-min label subset and the KenLMs the claims use
#   scripts/study.sh claim1         # WER vs sparsity, 5 methods, 10 min and 39 min ("1 h") of English labels
#   scripts/study.sh claim2         # real Dutch / Czech PER vs sparsity
#   scripts/study.sh claim4         # cross-lingual transfer matrix (PARP from another language's OMP mask)
#   scripts/study.sh claim5         # S3-Router masks of 6 languages: layer cosine + Pearson with phonetics
#   scripts/study.sh claim6         # S3-Router at 10 % with ori / magnitude / kaiming scores; then claim6p
#   scripts/study.sh claim6p        # S3-Router-P vs PARP vs OMP over SPARSITIES (S3-Router Fig. 4-5) alone
#   scripts/study.sh claim7         # PARP at 10 % vs the full model, Viterbi and KenLM
#   DRY=1 scripts/study.sh claim1   # print the commands only
#   SEEDS="1 2 3" SPARSITIES="0.1 0.5 0.9" scripts/study.sh claim1
#   LANGS=en_10min METHODS="omp mpi parp" SPARSITIES=0.9 scripts/study.sh claim1   # one slice of claim 1
#   JOBS=3 scripts/study.sh claim1  # seeds at once (`sweep run --jobs`): one GPU each, or one CPU process each
#
# Every arm uses configs/finetune/study.yaml (one lr for all, chosen by the dense sweep); the real
# tasks use it with the real-task budget (REAL_UPDATES updates at REAL_LR, as their dense references).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
FULL=${FULL:-exp/data/full}             # parp-fairseq-corpus build --tier full (11 languages, nl_real, cs_real)
PRE=${PRE:-exp/data/pretrain}           # --tier pretrain: 11 synthetic languages with phone labels
EXP=${EXP:-exp}
SEEDS=${SEEDS:-"1 2 3"}
SPARSITIES=${SPARSITIES:-"0.1 0.3 0.5 0.7 0.9"}
METHODS=${METHODS:-"omp mpi imp parp s3router_p"}
REAL_UPDATES=${REAL_UPDATES:-1600}
REAL_LR=${REAL_LR:-0.001}
PHN_LANGS=${PHN_LANGS:-"en es fr it nl ru"}
P_INITS=${P_INITS:-"magnitude_scale kaiming"}  # S3-Router-P score inits of claim6 / claim6p
DRY=${DRY:-}
# LANGS: the tasks of claim1 (default en_10min en) or claim2 (default nl_real cs_real). Claim 1's "1 h" is
# full/en itself (39 min of labels): en_10min is its subset, so both budgets share valid / test (speakers,
# sentences) and differ only in the labelled train audio; claims 6-7 ran on it too.

run() {  # echo, then run unless DRY
  echo "+ $*"
  [ -n "$DRY" ] || "$@"
}
sweep() { run "$BIN/parp-fairseq-sweep" run --config-name study ${JOBS:+--jobs "$JOBS"} "$@"; }
collect() { run "$BIN/parp-fairseq-sweep" collect "$@"; }
real=(-- "optimization.max_update=$REAL_UPDATES" "optimization.lr=[$REAL_LR]")
kenlm=(--lm "$EXP/lm_{lang}/lm.bin" --lexicon "$EXP/lm_{lang}/lexicon.txt")

claim6p() {  # S3-Router-P from the finetuned |w| (official) or at random (P_INITS), PARP and OMP: same seeds
  for init in $P_INITS; do
    sweep --workdir "$EXP/study_claim6" --data-root "$FULL" --labels ltr --langs en --methods s3router_p \
        --sparsities $SPARSITIES --seeds $SEEDS --score-init $init
  done
  sweep --workdir "$EXP/study_claim6" --data-root "$FULL" --labels ltr --langs en --methods omp parp \
      --sparsities $SPARSITIES --seeds $SEEDS
}

claim=${1:-}
case "$claim" in
  data)
    [ -f "$FULL/corpus.json" ] || run "$BIN/parp-fairseq-corpus" build --out "$FULL" --tier full
    [ -f "$PRE/corpus.json" ] || run "$BIN/parp-fairseq-corpus" build --out "$PRE" --tier pretrain
    [ -d "$FULL/en_10min" ] || run "$BIN/parp-fairseq-corpus" subset "$FULL/en" --hours 0.1667 --out "$FULL/en_10min"
    for lang in en en_10min nl_real cs_real; do  # one 4-gram LM per task, over text without its test sentences
      [ -f "$EXP/lm_$lang/lm.bin" ] || run "$BIN/parp-fairseq-lm" --text "$FULL/$lang/lm.txt" --order 4 \
          --dict "$FULL/$lang/dict.ltr.txt" --out-dir "$EXP/lm_$lang"
    done ;;
  claim1)  # PARP Fig. 3-4, S3-Router Fig. 4: 10 min and 1 h of English labels
    sweep --workdir "$EXP/study_claim1" --data-root "$FULL" --labels ltr --langs ${LANGS:-en_10min en} \
        --methods $METHODS --sparsities $SPARSITIES --seeds $SEEDS --imp-schedule original --imp-rate 0.1
    collect --workdir "$EXP/study_claim1" "${kenlm[@]}" ;;
  claim2)  # real Dutch and Czech (H2L-like), phone labels
    sweep --workdir "$EXP/study_claim2" --data-root "$FULL" --labels phn --langs ${LANGS:-nl_real cs_real} \
        --methods $METHODS --sparsities $SPARSITIES --seeds $SEEDS --imp-schedule original --imp-rate 0.1 "${real[@]}"
    collect --workdir "$EXP/study_claim2" --splits test test_spk valid ;;  # + each point's dev numbers
  claim4)  # PARP Fig. 7 / 28; the same-language references come with every pair
    sweep --workdir "$EXP/study_claim4" --data-root "$FULL" --labels ltr --langs nl_real cs_real --methods dense \
        --transfer nl_real:cs_real cs_real:nl_real --sparsities ${TRANSFER_SPARSITIES:-0.5} --seeds $SEEDS "${real[@]}"
    collect --workdir "$EXP/study_claim4" "${kenlm[@]}" ;;
  claim5)  # S3-Router supplement Fig. 6 / Table 2: masks of 6 languages at 10 % (~40 min of phone labels
    # each), 3 seeds; no dense references (the masks need none): 18 runs. Mean +- std over seeds of the
    # per-layer cosine (cross-language vs same language / other seed vs random) and of the Pearson r.
    sweep --workdir "$EXP/study_claim5" --data-root "$FULL" --labels phn --langs $PHN_LANGS --methods s3router \
        --sparsities 0.1 --seeds $SEEDS --no-dense-reference
    collect --workdir "$EXP/study_claim5"
    masks=(); phones=()
    for lang in $PHN_LANGS; do
      for seed in $SEEDS; do masks+=("${lang}_$seed=$EXP/study_claim5/$lang/s3router_s0.1_seed$seed/checkpoint_last.pt"); done
      phones+=("$lang=$FULL/$lang/dict.phn.txt")
    done
    run "$BIN/parp-fairseq-analyze" --by-seed --masks "${masks[@]}" --phones "${phones[@]}" --out "$EXP/study_claim5/analysis" ;;
  claim6)  # S3-Router Table 1 / Fig. 2 (finetuning by masks, 3 inits), then claim6p
    for init in ori magnitude kaiming; do
      sweep --workdir "$EXP/study_claim6" --data-root "$FULL" --labels ltr --langs en --methods s3router \
          --sparsities 0.1 --seeds $SEEDS --score-init $init
    done
    claim6p
    collect --workdir "$EXP/study_claim6" "${kenlm[@]}" ;;
  claim6p)  # S3-Router Fig. 4-5 alone: S3-Router-P vs PARP vs OMP over SPARSITIES
    claim6p
    collect --workdir "$EXP/study_claim6" "${kenlm[@]}" ;;
  claim7)  # PARP Tables 5-6
    sweep --workdir "$EXP/study_claim7" --data-root "$FULL" --labels ltr --langs en --methods parp \
        --sparsities 0.1 --seeds $SEEDS
    collect --workdir "$EXP/study_claim7" "${kenlm[@]}" ;;
  *)
    echo "usage: scripts/study.sh data|claim1|claim2|claim4|claim5|claim6|claim6p|claim7 (DRY=1: print the commands)" >&2
    exit 2 ;;
esac

#!/usr/bin/env bash
# The documented experiment of RESULTS.md ("Pruning the small wav2vec 2.0"): the small pretrained model
# of the demo, phone recognition (PER) on the full-tier synthesized corpus, 400 finetuning updates per
# run on CPU (+ a 1,200-update subset). Resumable; ~75 min on 2 CPU cores.
#   PRETRAINED=exp/demo/pretrain/checkpoint_last.pt scripts/experiment_small.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
DATA=${DATA:-exp/data/full}
PRETRAINED=${PRETRAINED:-exp/demo/pretrain/checkpoint_last.pt}
W=${WORKDIR:-exp/paper}
U=${UPDATES:-400}
SWEEP="$PY -m parp_fairseq.cli.sweep run --workdir $W --data-root $DATA --pretrained $PRETRAINED --labels phn"
[ -f "$DATA/corpus.json" ] || $PY -m parp_fairseq.cli.corpus build --out "$DATA" --tier full --langs nl es ru
# 1. method ordering at 50% and 80% (Dutch: OMP, PARP, IMP, S3-Router-P; Spanish: OMP, PARP)
$SWEEP --langs nl --methods omp parp imp s3router_p --sparsities 0.5 0.8 --imp-rate 0.5 -- optimization.max_update=$U
$SWEEP --langs es --methods omp parp --sparsities 0.5 0.8 -- optimization.max_update=$U
# 2. cross-lingual mask transfer at 50%: PARP on B from the OMP mask of A
$SWEEP --langs es --methods dense --sparsities 0.5 --transfer nl:es es:nl -- optimization.max_update=$U
# 3. S3-Router (masks over frozen pretrained weights) vs weight finetuning at 10% sparsity
$SWEEP --langs nl --methods s3router --sparsities 0.1 -- optimization.max_update=$U
# 4. dense models of two more languages, for the cross-language mask similarity
$SWEEP --langs ru en --methods dense -- optimization.max_update=$U
# 5. 2:4 semi-structured PARP at the same budget (the WER cost of the GPU-friendly pattern)
$SWEEP --langs nl --methods parp --sparsities 0.5 --ranking 2:4 -- optimization.max_update=$U
$PY -m parp_fairseq.cli.sweep collect --workdir $W --results-md RESULTS.md
# 6. the same pretrained model with 3x the finetuning budget (dense converges there)
LONG="$PY -m parp_fairseq.cli.sweep run --workdir ${W}_long --data-root $DATA --pretrained $PRETRAINED --labels phn"
$LONG --langs nl es --methods dense -- optimization.max_update=1200
$LONG --langs nl --methods omp parp --sparsities 0.5 0.8 -- optimization.max_update=1200
$PY -m parp_fairseq.cli.sweep collect --workdir ${W}_long --results-md RESULTS.md
for l in nl es ru en; do
  [ -f $W/$l/omp_mask_s0.5_seed1.pt ] || $PY -m parp_fairseq.cli.mask omp --checkpoint $W/$l/dense_seed1/checkpoint_last.pt \
      --sparsity 0.5 --out $W/$l/omp_mask_s0.5_seed1.pt --meta lang=$l
done
$PY -m parp_fairseq.cli.analyze --out $W/analysis \
  --masks $(for l in nl es ru en; do printf "%s=%s " $l $W/$l/omp_mask_s0.5_seed1.pt; done) \
  --phones $(for l in nl es ru en; do printf "%s=%s " $l $DATA/$l/dict.phn.txt; done)

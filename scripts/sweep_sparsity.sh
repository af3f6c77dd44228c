#!/usr/bin/env bash
# Sparsity sweep: methods x sparsities x languages x seeds on the offline corpus, then decoding of every
# point, one tidy TSV, plots and a RESULTS.md section. Resumable: rerun the same command after a stop.
# On a GPU machine every visible GPU is used per run (fairseq distributed); on CPU one process.
#
#   scripts/sweep_sparsity.sh                                 # defaults below
#   LANGS="nl es" METHODS="omp parp" SPARSITIES="0.5 0.7" SEEDS="1 2" UPDATES=400 scripts/sweep_sparsity.sh
#   TRANSFER="nl:es es:nl" scripts/sweep_sparsity.sh          # + cross-lingual mask transfer
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
DATA=${DATA:-exp/data/small}             # parp-fairseq-corpus build --out $DATA --tier small
PRETRAINED=${PRETRAINED:-$($PY -m parp_fairseq.cli.pretrained path)}   # default: the shipped model (sha256 checked)
WORKDIR=${WORKDIR:-exp/sweep}
LANGS=${LANGS:-"nl es"}
METHODS=${METHODS:-"omp parp imp s3router_p"}
SPARSITIES=${SPARSITIES:-"0.5 0.8"}
SEEDS=${SEEDS:-1}
LABELS=${LABELS:-phn}
UPDATES=${UPDATES:-400}
TRANSFER=${TRANSFER:-}
CONFIG=${CONFIG:-mini}

[ -f "$DATA/corpus.json" ] || $PY -m parp_fairseq.cli.corpus build --out "$DATA" --tier small
if [ ! -f "$PRETRAINED" ]; then
  echo "[sweep] no pretrained model at $PRETRAINED: pretraining configs/pretrain/shipped"
  $PY -c "import subprocess,sys; from parp_fairseq._compat import hydra_train_cmd as h; sys.exit(subprocess.call(h('configs/pretrain','shipped','$(dirname "$PRETRAINED")','task.data=$DATA/pretrain')))"
fi
$PY -m parp_fairseq.cli.sweep run --workdir "$WORKDIR" --data-root "$DATA" --pretrained "$PRETRAINED" \
  --langs $LANGS --methods $METHODS --sparsities $SPARSITIES --seeds $SEEDS --labels "$LABELS" \
  --config-name "$CONFIG" ${TRANSFER:+--transfer $TRANSFER} -- "optimization.max_update=$UPDATES" "$@"
$PY -m parp_fairseq.cli.sweep collect --workdir "$WORKDIR" --results-md RESULTS.md

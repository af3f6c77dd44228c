#!/usr/bin/env bash
# Data preparation in stages (each idempotent and resumable; rerun after an interruption):
#   stage 1: synthesize the corpus + real recorded splits (parp-fairseq-corpus build, progress bars)
#   stage 2: check every manifest, audio file and label file
#   stage 3: English 4-gram KenLM + lexicon for beam-search decoding (parp-fairseq-lm)
#
#   scripts/prepare_data.sh                          # small tier into data/small
#   TIER=full OUT=data/full LANGS="nl es ru" scripts/prepare_data.sh
#   STAGE=3 scripts/prepare_data.sh                  # start at stage 3
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
TIER=${TIER:-small}
OUT=${OUT:-data/$TIER}
LANGS=${LANGS:-}
STAGE=${STAGE:-1}
if [ "$STAGE" -le 1 ]; then
  echo "[prepare] stage 1: corpus ($TIER) -> $OUT"
  $PY -m parp_fairseq.cli.corpus build --out "$OUT" --tier "$TIER" ${LANGS:+--langs $LANGS} --no-check
fi
if [ "$STAGE" -le 2 ]; then
  echo "[prepare] stage 2: checking manifests, audio and labels"
  $PY -m parp_fairseq.cli.corpus check "$OUT"
fi
if [ "$STAGE" -le 3 ]; then
  echo "[prepare] stage 3: English KenLM + lexicon -> $OUT/en/lm"
  [ -x tools/kenlm/bin/lmplz ] || [ -n "${KENLM_BIN:-}" ] || bash scripts/build_kenlm.sh
  $PY -m parp_fairseq.decoding.lm --text "$OUT/en/lm.txt" --out-dir "$OUT/en/lm" --order 4 --dict "$OUT/en/dict.ltr.txt"
fi
$PY -m parp_fairseq.cli.corpus info "$OUT"

#!/usr/bin/env bash
# Create .venv, install parp_fairseq with its pinned stack (CPU torch 2.13.0) and build KenLM's
# lmplz/build_binary into tools/kenlm. Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
# System tools of the speech corpus (parp-fairseq-corpus): espeak-ng, flite and festival (+ its voices)
# synthesize it, sox converts; the Debian data packages hold the real recorded speech (Fish Fillets NG
# Dutch and Czech dialogue and English lines, LibriVox test clips).
APT_PKGS="espeak-ng sox flite festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts festvox-ru
  festvox-italp16k festvox-itapc16k fillets-ng-data fillets-ng-data-nl fillets-ng-data-cs pocketsphinx-testdata"
missing=$(for p in $APT_PKGS; do dpkg -s "$p" >/dev/null 2>&1 || echo "$p"; done | tr '\n' ' ')
if [ -n "$missing" ]; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    echo "[setup] apt-get install $missing"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing >/dev/null \
      || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing >/dev/null; }
  else
    echo "[setup] WARNING: missing system packages: $missing" >&2
    echo "[setup]   install them with: sudo apt-get install $missing  (needed by parp-fairseq-corpus)" >&2
  fi
fi
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv with $($PY --version)"
  "$PY" -m venv .venv
fi
echo "[setup] installing parp_fairseq and its pinned dependencies (first time ~1 min)"
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
# KenLM's lmplz / build_binary for the LM builder and decoding tests (apt boost + cmake, ~1-2 min once)
bash scripts/build_kenlm.sh
.venv/bin/python - <<'PY'
import fairseq, torch
import parp_fairseq
print(f"[setup] ok: parp_fairseq {parp_fairseq.__version__}, fairseq {fairseq.__version__}, torch {torch.__version__}")
PY

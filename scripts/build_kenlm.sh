#!/usr/bin/env bash
# Build KenLM's lmplz and build_binary offline: the PyPI `kenlm` source package carries lm/builder;
# boost comes from Debian. Idempotent: does nothing when $KENLM_BIN/lmplz already runs.
#   bash scripts/build_kenlm.sh            -> tools/kenlm/bin/{lmplz,build_binary}
set -euo pipefail
cd "$(dirname "$0")/.."
KENLM_ROOT=${KENLM_ROOT:-$PWD/tools/kenlm}
BIN=$KENLM_ROOT/bin
if [ -x "$BIN/lmplz" ] && [ -x "$BIN/build_binary" ]; then
  echo "[kenlm] already built: $BIN"; exit 0
fi
need_apt=0
for h in /usr/include/boost/program_options.hpp /usr/include/boost/thread.hpp /usr/include/boost/test/unit_test.hpp; do
  [ -f "$h" ] || need_apt=1
done
if [ $need_apt = 1 ] || ! command -v cmake >/dev/null; then
  if [ "$(id -u)" != 0 ]; then
    echo "[kenlm] error: missing boost headers/cmake; install them with:" >&2
    echo "  sudo apt-get install -y cmake libboost-program-options-dev libboost-system-dev libboost-thread-dev libboost-test-dev zlib1g-dev libbz2-dev liblzma-dev" >&2
    exit 1
  fi
  echo "[kenlm] installing cmake + boost dev packages (apt)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq cmake libboost-program-options-dev libboost-system-dev \
    libboost-thread-dev libboost-test-dev zlib1g-dev libbz2-dev liblzma-dev >/dev/null
fi
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "[kenlm] fetching the kenlm source package from PyPI"
"$PY" -m pip download -q --no-deps --no-binary kenlm --no-build-isolation -d "$work" kenlm
tar -xzf "$work"/kenlm-*.tar.gz -C "$work"
src=$(find "$work" -maxdepth 1 -type d -name 'kenlm-*' | head -1)
echo "[kenlm] building lmplz and build_binary (~1 min)"
cmake -S "$src" -B "$work/build" -DCMAKE_BUILD_TYPE=Release -DKENLM_MAX_ORDER=6 >"$work/cmake.log" 2>&1 \
  || { tail -30 "$work/cmake.log" >&2; exit 1; }
cmake --build "$work/build" --target lmplz build_binary -j "$(nproc)" >"$work/build.log" 2>&1 \
  || { tail -30 "$work/build.log" >&2; exit 1; }
mkdir -p "$BIN.tmp"
cp "$work/build/bin/lmplz" "$work/build/bin/build_binary" "$BIN.tmp/"
rm -rf "$BIN" && mv "$BIN.tmp" "$BIN"
echo "[kenlm] built: $BIN"

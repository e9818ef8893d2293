#!/usr/bin/env bash
# On a machine with a real GPU: build, run the op tests on that GPU (not
# lavapipe) under validation, and print benchmark figures. Meant to finish
# within a few minutes. Usage: scripts/gpu-check.sh [DEVICE] (default: gpu)
set -uo pipefail
cd "$(dirname "$0")/.."
dev="${1:-gpu}"
./scripts/build.sh >/dev/null || exit 1
./build/vklora devices
export VKLORA_DEVICE="$dev" VKLORA_VALIDATION="${VKLORA_VALIDATION:-1}"
export VKLORA_SHARED="${VKLORA_SHARED:-$(cd .. && pwd)/shared}"
(cd build && ctest -L runtime --output-on-failure --timeout 300)
rc=$?
unset VKLORA_VALIDATION
for s in "1024 1024 1024" "320 4096 320" "640 1024 640" "1280 256 1280" "4096 4096 4096"; do
    set -- $s
    for dt in f32 f16; do ./build/vklora bench gemm --m "$1" --n "$2" --k "$3" --dtype "$dt" | head -1; done
done
for b in conv2d attention linear-lora group-norm; do
    ./build/vklora bench "$b" 2>/dev/null | head -2
done
exit $rc

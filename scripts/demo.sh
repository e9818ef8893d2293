#!/usr/bin/env bash
# The main job on the embedded default device. Until image generation lands:
# the device self-check and a GEMM benchmark.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/build.sh >/dev/null
./build/vklora devices
./build/vklora bench gemm --m 512 --n 512 --k 512 --dtype f32

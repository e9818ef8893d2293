#!/usr/bin/env bash
# Runs tests on SwiftShader, Google's CPU Vulkan driver (Debian's
# chromium-common), a second implementation beside lavapipe: subgroups of 4,
# no 16-bit storage (the fallback paths run on a real driver) and 256-byte
# storage alignment. Validation layer on, as in scripts/test.sh.
#   scripts/test-swiftshader.sh            # the op tests CI runs (a few minutes)
#   scripts/test-swiftshader.sh -L runtime # any ctest selection
set -uo pipefail
cd "$(dirname "$0")/.."
icd=/usr/lib/chromium/vk_swiftshader_icd.json
[ -f "$icd" ] || { echo "test-swiftshader.sh: $icd not found (apt-get install chromium-common)" >&2; exit 1; }
[ -x build/vklora ] || ./scripts/build.sh || exit 1
export VK_ICD_FILENAMES=$icd VKLORA_VALIDATION=1 VKLORA_DEVICE=cpu
export VKLORA_SHARED="${VKLORA_SHARED:-$(cd .. && pwd)/shared}"
build/vklora devices | head -1
# the op tests that finish in seconds on SwiftShader; -L runtime runs them all
quick='test_(ops_basic|attention|layout_ops|strided_window|cross_entropy|embed|embed_grad|rope|rope_grad|glu|loss|optim|softmax|context|tuning|threads)$'
if [ $# -eq 0 ]; then set -- -R "$quick"; fi
cd build && ctest --output-on-failure -j"$(nproc)" --timeout 900 "$@"

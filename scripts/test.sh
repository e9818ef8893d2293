#!/usr/bin/env bash
# Builds vklora and runs every test on the embedded default device (lavapipe)
# with the Khronos validation layer and synchronization validation on.
# Reference data comes from $VKLORA_SHARED (default: ../shared).
set -uo pipefail
cd "$(dirname "$0")/.."
./scripts/build.sh || exit 1
export VKLORA_SHARED="${VKLORA_SHARED:-$(cd .. && pwd)/shared}"
export VKLORA_VALIDATION=1
# Tests run on lavapipe unless VKLORA_TEST_DEVICE names another device.
export VKLORA_DEVICE="${VKLORA_TEST_DEVICE:-cpu}"
if [ ! -d "$VKLORA_SHARED" ]; then
    echo "################################################################" >&2
    echo "# reference data not found at $VKLORA_SHARED:" >&2
    echo "# tests that need it are SKIPPED (set VKLORA_SHARED)" >&2
    echo "################################################################" >&2
fi
log=build/test-log.txt
(cd build && ctest --output-on-failure -j"$(nproc)" --timeout 900 "$@") 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
skipped=$(grep -c "^SKIPPED: " build/Testing/Temporary/LastTest.log 2>/dev/null || true)
if [ "${skipped:-0}" -gt 0 ]; then
    echo "################################################################"
    echo "# $skipped test case(s) SKIPPED for missing reference data"
    echo "################################################################"
fi
exit "$rc"

#!/usr/bin/env bash
# Builds vklora and runs every test on the embedded default device (lavapipe)
# with the Khronos validation layer and synchronization validation on.
# Reference data comes from $VKLORA_SHARED (default: ../shared).
set -uo pipefail
cd "$(dirname "$0")/.."
VKLORA_TEST_DEPS=1 ./scripts/build.sh || exit 1
export VKLORA_SHARED="${VKLORA_SHARED:-$(cd .. && pwd)/shared}"
export VKLORA_VALIDATION=1
# Tests run on lavapipe unless VKLORA_TEST_DEVICE names another device.
export VKLORA_DEVICE="${VKLORA_TEST_DEVICE:-cpu}"
if [ ! -d "$VKLORA_SHARED/refkit" ] || [ ! -d "$VKLORA_SHARED/data" ]; then
    echo "################################################################" >&2
    echo "# reference data not found at $VKLORA_SHARED (refkit/ and data/:" >&2
    echo "# the reference models, vectors and images the tests compare with)" >&2
    if [ "${VKLORA_ALLOW_SKIP:-0}" != 1 ]; then
        echo "# set VKLORA_SHARED to the shared folder, or VKLORA_ALLOW_SKIP=1" >&2
        echo "# to run what can run and report the rest as skipped" >&2
        echo "################################################################" >&2
        exit 1
    fi
    echo "# VKLORA_ALLOW_SKIP=1: tests that need it are SKIPPED" >&2
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
    # skipped is not passed, unless asked for
    [ "${VKLORA_ALLOW_SKIP:-0}" = 1 ] || [ "$rc" != 0 ] || rc=1
fi
exit "$rc"

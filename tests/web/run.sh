#!/usr/bin/env bash
# ctest entry of the browser test: installs playwright-core (npm ci, from
# package-lock.json) when node_modules is absent, then runs test_page.js.
# Exit 77 (SKIPPED) only when node, npm or chromium is missing.
set -euo pipefail
cd "$(dirname "$0")"
for tool in node npm; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "SKIPPED: $tool is not installed (Debian: apt-get install nodejs npm)" >&2
        exit 77
    fi
done
chromium="${VKLORA_CHROMIUM:-$(command -v chromium || true)}"
if [ -z "$chromium" ] || [ ! -x "$chromium" ]; then
    echo "SKIPPED: chromium is not installed (Debian: apt-get install chromium)" >&2
    exit 77
fi
if [ ! -d node_modules/playwright-core ]; then
    # a failed install is a failure, not a skip: CI must run this test
    npm ci --no-audit --no-fund --loglevel=error
fi
VKLORA_CHROMIUM="$chromium" exec node test_page.js

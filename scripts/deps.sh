#!/usr/bin/env bash
# Installs the Debian 12 packages vklora needs to build (and test) (when run as
# root), or names the missing ones. Sourced by build.sh; safe to run twice.
set -euo pipefail
PKGS=(build-essential cmake pkg-config libvulkan-dev glslc spirv-tools mesa-vulkan-drivers
      vulkan-validationlayers libpng-dev libstb-dev libcmocka-dev libcjson-dev zlib1g-dev
      # vklora serve (HTTP) and its tests' HTTP client
      libmicrohttpd-dev libcurl4-openssl-dev
      # the images and names vklora's own model is trained on (vklora dataset emoji, its tests)
      fonts-noto-color-emoji ruby-gemojione unicode-data unicode-cldr-core)
# scripts/test.sh sets VKLORA_TEST_DEPS=1: what only the tests need (a browser for
# serve's page, SwiftShader in chromium-common, clang for the fuzzers, Open MPI
# for data-parallel training and its tests), so the first command stays lean
if [ "${VKLORA_TEST_DEPS:-0}" = 1 ]; then
    PKGS+=(chromium chromium-common clang libopenmpi-dev openmpi-bin)
    # node and npm drive the browser in the page's test (tests/web); a node
    # from elsewhere (NodeSource's bundles npm and conflicts with Debian's) is kept
    command -v npm >/dev/null || PKGS+=(nodejs npm)
fi
missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then
        echo "vklora: installing Debian packages: ${missing[*]}" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq "${missing[@]}" >/dev/null
    else
        echo "vklora: missing Debian packages: ${missing[*]}" >&2
        echo "install them with: sudo apt-get install ${missing[*]}" >&2
        exit 1
    fi
fi

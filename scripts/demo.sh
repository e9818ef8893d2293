#!/usr/bin/env bash
# The main job: generate an image on the embedded default device (lavapipe,
# or the best GPU when one is present). Without $VKLORA_MODEL it draws with
# vklora's own model (assets/vklora-emoji: a small SD-architecture model
# trained from scratch by vklora on emoji, 32x32 px); with it, with that
# Stable Diffusion 1.x/2.x checkpoint (a single .safetensors file or a
# diffusers folder) at 512x512.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/build.sh >/dev/null
if [ -n "${VKLORA_MODEL:-}" ]; then
    ./build/vklora generate --model "$VKLORA_MODEL" --prompt "a watercolor painting of a lighthouse at dawn" \
        --negative "blurry" --steps 20 --cfg 7 --seed 1234 --width 512 --height 512 -o out.png
else
    ./build/vklora generate --prompt "red heart" --steps 20 --cfg 5 --seed 1234 -o out.png
fi

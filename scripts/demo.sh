#!/usr/bin/env bash
# The main job: generate an image on the embedded default device (lavapipe,
# or the best GPU when one is present). The model is $VKLORA_MODEL (a
# single-file SD 1.x/2.x .safetensors checkpoint or a diffusers folder); when
# it is not set, the tiny random reference model from ../shared is used, whose
# pictures are noise but show the whole pipeline working.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/build.sh >/dev/null
model="${VKLORA_MODEL:-}"
if [ -z "$model" ]; then
    shared="${VKLORA_SHARED:-$(cd .. && pwd)/shared}"
    if [ -d "$shared/refkit/sd/tiny-sd" ]; then
        model="$shared/refkit/sd/tiny-sd"
        size=128
        echo "vklora: VKLORA_MODEL is not set; using the tiny reference model $model (its images are noise)" >&2
    else
        echo "vklora: no model. Set VKLORA_MODEL to a Stable Diffusion 1.x/2.x checkpoint (.safetensors file or" >&2
        echo "diffusers folder), e.g. VKLORA_MODEL=~/models/v1-5-pruned-emaonly.safetensors; single files also need" >&2
        echo "VKLORA_CLIP_VOCAB pointing at a CLIP vocabulary (vocab.json + merges.txt folder or bpe_simple_vocab_16e6.txt.gz)." >&2
        exit 1
    fi
fi
./build/vklora generate --model "$model" --prompt "a watercolor painting of a lighthouse at dawn" \
    --negative "blurry" --steps 20 --cfg 7 --seed 1234 --width "${size:-512}" --height "${size:-512}" -o out.png

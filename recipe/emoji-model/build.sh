#!/usr/bin/env bash
# Rebuilds vklora's own text-to-image model (assets/vklora-emoji) and its
# style LoRA (assets/vklora-emoji-style.safetensors) from Debian packages
# with vklora alone:
#   1. images + captions  vklora dataset emoji (Noto Color Emoji; EmojiOne)
#   2. tokenizer          vklora tokenizer build (word level, from the captions)
#   3. random model       vklora init-model --configs recipe/emoji-model/configs
#   4. VAE                vklora train-vae
#   5. UNet + text enc.   vklora train --network full --train-te --ema-decay
#   6. style LoRA         vklora train on the EmojiOne set
#   7. sample grids       vklora generate, vklora grid
# Every stage is skipped when its output exists and the training stages
# resume from their saved state, so an interrupted run continues where it
# stopped: run the same command again. Work files go to $WORK
# (default: work/emoji-model); the results are copied into assets/.
#
#   recipe/emoji-model/build.sh            # everything
#   STAGES="5 6" recipe/emoji-model/build.sh   # some stages only
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
W="${WORK:-$root/work/emoji-model}"
STAGES="${STAGES:-1 2 3 4 5 6 7}"
VAE_STEPS="${VAE_STEPS:-800}"
# The UNet and text encoder train in phases: each number is the step a phase
# ends at, and each phase resumes the last one's state with a cosine schedule
# over its own total (a warm restart: the rate jumps back up, then decays).
UNET_STEPS="${UNET_STEPS:-1000 2500}"
LORA_STEPS="${LORA_STEPS:-250}"
CFG="${CFG:-5}"
export VKLORA_DEVICE="${VKLORA_DEVICE:-cpu}"
[ -x build/vklora ] || ./scripts/build.sh >/dev/null
vk="$root/build/vklora"
mkdir -p "$W" assets
want() { case " $STAGES " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
stamp() { echo "[$(date +%H:%M:%S)] $*"; }

if want 1; then
    [ -d "$W/noto32" ] || $vk dataset emoji --size 32 -o "$W/noto32"
    [ -d "$W/emojione32" ] || $vk dataset emoji --png-dir \
        /usr/share/rubygems-integration/all/gems/gemojione-3.3.0/assets/png --size 32 -o "$W/emojione32"
fi
if want 2; then
    [ -d "$W/tokenizer" ] || $vk tokenizer build --captions "$W/noto32" --captions "$W/emojione32" -o "$W/tokenizer"
fi
if want 3; then
    [ -d "$W/init" ] || $vk init-model --random --configs recipe/emoji-model/configs --tokenizer "$W/tokenizer" \
        --dtype f32 --seed 1 -o "$W/init"
fi
if want 4; then
    stamp "VAE: $VAE_STEPS steps"
    if [ ! -f "$W/vae.done" ]; then
        resume=""
        [ -d "$W/vae/state" ] && resume="--resume"
        $vk train-vae --images "$W/noto32" --config recipe/emoji-model/configs/vae/config.json --batch 16 \
            --steps "$VAE_STEPS" --lr 1e-3 --warmup 20 --save-every 100 --seed 1 $resume -o "$W/vae"
        touch "$W/vae.done"
    fi
    # the model to train: the random UNet and text encoder with the trained VAE
    if [ ! -d "$W/base" ]; then
        rm -rf "$W/base.tmp" && cp -r "$W/init" "$W/base.tmp"
        cp "$W/vae/config.json" "$W/vae/diffusion_pytorch_model.safetensors" "$W/base.tmp/vae/"
        mv "$W/base.tmp" "$W/base"
    fi
fi
if want 5; then
    stamp "UNet and text encoder: phases ending at steps $UNET_STEPS"
    for end in $UNET_STEPS; do
        [ -f "$W/model.done-$end" ] && continue
        resume=""
        [ -f "$W/model.state/latest" ] && resume="--resume $W/model.state"
        $vk train --model "$W/base" --images "$W/noto32" --resolution 32 --no-bucket \
            --network full --train-te --batch 32 --lr 1e-3 --lr-schedule cosine --warmup 50 \
            --min-snr-gamma 5 --caption-dropout-rate 0.1 --ema-decay 0.995 --max-steps "$end" \
            --save-every 100 --keep-last 1 --seed 1 --save-precision fp16 \
            --sample-prompts recipe/emoji-model/sample_prompts.txt --sample-every 100 $resume -o "$W/model"
        touch "$W/model.done-$end"
    done
    rm -rf assets/vklora-emoji.tmp && cp -r "$W/model" assets/vklora-emoji.tmp
    cp recipe/emoji-model/MODEL_CARD.md assets/vklora-emoji.tmp/README.md
    cp "$W/model.csv" assets/vklora-emoji.tmp/train_log.csv
    $vk plot "$W/model.csv" -o assets/vklora-emoji.tmp/loss.png  # all phases
    cp "$W/vae/train_log.csv" assets/vklora-emoji.tmp/vae_train_log.csv
    cp "$W/noto32/SOURCE.md" assets/vklora-emoji.tmp/DATA_SOURCE.md
    rm -rf assets/vklora-emoji && mv assets/vklora-emoji.tmp assets/vklora-emoji
fi
if want 6; then
    stamp "style LoRA: $LORA_STEPS steps"
    if [ ! -f "$W/style.safetensors" ]; then
        resume=""
        [ -f "$W/style.state/latest" ] && resume="--resume $W/style.state"
        $vk train --model assets/vklora-emoji --images "$W/emojione32" --resolution 32 --no-bucket \
            --network locon --rank 16 --alpha 16 --train-ff --batch 32 --lr 2e-3 --min-snr-gamma 5 \
            --max-steps "$LORA_STEPS" --save-every 50 --keep-last 1 --seed 1 $resume -o "$W/style.safetensors"
    fi
    cp "$W/style.safetensors" assets/vklora-emoji-style.safetensors
    cp "$W/emojione32/SOURCE.md" assets/vklora-emoji-style.SOURCE.md
fi
if want 7; then
    stamp "sample grids"
    rm -rf "$W/samples" && mkdir -p "$W/samples"
    n=0
    while IFS= read -r prompt; do
        n=$((n + 1))
        $vk --quiet generate --prompt "$prompt" --seed 1 --cfg "$CFG" --batch 4 -o "$W/samples/base-$(printf %02d $n).png"
        $vk --quiet generate --prompt "$prompt" --seed 1 --cfg "$CFG" --lora-sweep assets/vklora-emoji-style.safetensors:0,0.5,1 \
            -o "$W/samples/sweep-$(printf %02d $n).png"
    done < recipe/emoji-model/sample_prompts.txt
    # one column per prompt, one row per seed (seeds 1-4: the batch's images)
    cells=()
    for s in "" -1 -2 -3; do
        for i in $(seq -f %02g 1 $n); do cells+=("$W/samples/base-$i$s.png"); done
    done
    $vk grid --columns "$n" --scale 3 -o assets/vklora-emoji-samples.png "${cells[@]}"
    $vk grid --columns 1 --scale 3 -o assets/vklora-emoji-style-sweep.png "$W"/samples/sweep-*.png
fi
stamp "done"

#!/usr/bin/env bash
# Builds vklora with AddressSanitizer + UndefinedBehaviorSanitizer (gcc; any
# report fails the test) into build-asan/ and runs the readers, tokenizers,
# configs, samplers and a few op tests there: vklora's code is instrumented,
# lavapipe is not (its own leaks are suppressed: tests/sanitize/lsan.supp).
#   scripts/test-sanitize.sh             # what CI runs (a few minutes)
#   scripts/test-sanitize.sh -L runtime  # any ctest selection
set -uo pipefail
cd "$(dirname "$0")/.."
./scripts/deps.sh
# VKLORA_ASAN instruments everything; any UBSan report aborts instead of printing
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DVKLORA_ASAN=ON \
    -DCMAKE_C_FLAGS="-fno-sanitize-recover=all" >/dev/null || exit 1
cmake --build build-asan -j"$(nproc)" >/dev/null || exit 1
export LSAN_OPTIONS="suppressions=$(pwd)/tests/sanitize/lsan.supp:print_suppressions=0"
# lavapipe is loaded and unloaded with each Vulkan instance, so a leak of its
# own (a realloc in libvulkan_lvp.so) is reported from an unloaded, unnamed
# module that no suppression can match: keep it loaded for the whole run
# (preloaded after the executable, hence ASan's link-order check off)
lvp=$(sed -n 's/.*"library_path": *"\([^"]*\)".*/\1/p' /usr/share/vulkan/icd.d/lvp_icd.*.json 2>/dev/null | head -1)
if [ -n "$lvp" ] && [ -f "$lvp" ]; then
    export LD_PRELOAD="$lvp" ASAN_OPTIONS="verify_asan_link_order=0"
fi
export UBSAN_OPTIONS=print_stacktrace=1 VKLORA_VALIDATION=1 VKLORA_DEVICE=cpu
export VKLORA_SHARED="${VKLORA_SHARED:-$(cd .. && pwd)/shared}"
quick='test_(safetensors|sha256|png_write|image_read|image_resize|image_corpus|font_cbdt|dir|log|base|parser_edges|clip_tokenizer|sp_tokenizer|word_tokenizer|bpe_merge|tok_chunks|prompt_weights|gen_params|dataset|buckets|schedule|sampler|sampler_kdiff|lora_file|sd_config|rng|lora_delta|ops_basic|layout_ops|optim|cross_entropy|llama_forward)$'
if [ $# -eq 0 ]; then set -- -R "$quick"; fi
cd build-asan && ctest --output-on-failure -j"$(nproc)" --timeout 900 "$@"

#!/usr/bin/env bash
# Fuzzes vklora's readers of outside input with libFuzzer (clang; ASan and
# UBSan, any report aborts). Each target starts from its seed corpus in
# tests/fuzz/corpus/TARGET (and, for images, the small files of
# $VKLORA_SHARED/data/image-corpus); what it finds goes to a working corpus in
# build-fuzz/, never into the sources. Crashes are saved as
# build-fuzz/crashes/TARGET-* and make this script fail.
#
#   scripts/fuzz.sh all 30        # every target, 30 s each, one per core
#   scripts/fuzz.sh fuzz_prompt 600
#   scripts/fuzz.sh fuzz_prompt -runs=10000000   # a number of executions
set -euo pipefail
cd "$(dirname "$0")/.."
which=${1:?usage: scripts/fuzz.sh TARGET|all [SECONDS | -runs=N]}
limit=${2:-30}
case "$limit" in -runs=*) budget="$limit" ;; *) budget="-max_total_time=$limit" ;; esac
command -v clang >/dev/null || { echo "fuzz.sh: needs clang (apt-get install clang)" >&2; exit 1; }
export VKLORA_SHARED="${VKLORA_SHARED:-$(cd .. && pwd)/shared}"
all=$(cd tests/fuzz && ls fuzz_*.c | sed 's/\.c$//')
[ "$which" = all ] && targets=$all || targets=$which
for t in $targets; do
    [ -f "tests/fuzz/$t.c" ] || { echo "fuzz.sh: no target $t (have: $(echo $all))" >&2; exit 1; }
done
cmake -S . -B build-fuzz -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=RelWithDebInfo -DVKLORA_FUZZ=ON >/dev/null
# shellcheck disable=SC2086
cmake --build build-fuzz -j"$(nproc)" --target $targets >/dev/null
mkdir -p build-fuzz/crashes build-fuzz/logs

run_one() {
    t=$1
    work=build-fuzz/corpus/$t
    mkdir -p "$work"
    seeds=()
    [ -d "tests/fuzz/corpus/$t" ] && seeds+=("tests/fuzz/corpus/$t")
    if [ "$t" = fuzz_image ] && [ -d "$VKLORA_SHARED/data/image-corpus" ]; then
        mkdir -p build-fuzz/seeds-image
        find "$VKLORA_SHARED/data/image-corpus" -type f -size -64k -exec cp -n {} build-fuzz/seeds-image/ \;
        seeds+=(build-fuzz/seeds-image)
    fi
    [ "$t" = fuzz_safetensors ] && seeds+=(tests/fuzz/corpus/fuzz_lora_file)
    log=build-fuzz/logs/$t.log
    if "build-fuzz/$t" "$budget" -timeout=20 -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1 \
        -artifact_prefix="build-fuzz/crashes/$t-" "$work" "${seeds[@]}" >"$log" 2>&1; then
        runs=$(grep -ao 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')
        echo "$t: $runs executions, no crash"
    else
        echo "$t: FAILED (see $log and build-fuzz/crashes/)"
        grep -a -m3 -E 'ERROR|runtime error|==ABORTING|deadly signal' "$log" || tail -5 "$log"
        return 1
    fi
}
export -f run_one
export budget VKLORA_SHARED
# shellcheck disable=SC2086
printf '%s\n' $targets | xargs -P "$(nproc)" -I{} bash -c 'run_one {}'

#!/usr/bin/env bash
# The installed package, as an application sees it: `cmake --install` into a
# fresh prefix, examples/embed built with only `pkg-config --cflags --libs
# vklora` (and again with find_package), run on the tiny model with an
# adapter at two weights; every installed header compiles as C and as C++;
# libvklora.so exports only vkl_ functions the installed headers declare.
#   test_install.sh BUILD_DIR SOURCE_DIR
set -euo pipefail
build=$1 src=$2
shared=${VKLORA_SHARED:-$src/../shared}
if [ ! -d "$shared/refkit/sd/tiny-sd" ]; then
    echo "SKIPPED: reference data $shared/refkit/sd/tiny-sd not found (set VKLORA_SHARED)" >&2
    exit 77
fi
tmp=$(mktemp -d /tmp/vklora-test-install-XXXXXX)
trap 'rm -rf "$tmp"' EXIT
cmake --install "$build" --prefix "$tmp/prefix" >/dev/null
lib=$(dirname "$(find "$tmp/prefix" -name vklora.pc | head -1)")/..
export PKG_CONFIG_PATH=$lib/pkgconfig
flags=$(pkg-config --cflags --libs vklora)
echo "pkg-config: $flags"
cc -std=c11 -Wall -Wextra -Werror "$src/examples/embed/embed.c" $flags -lm -o "$tmp/embed"
LD_LIBRARY_PATH=$lib "$tmp/embed" "$shared/refkit/sd/tiny-sd" \
    "$shared/refkit/sd/vectors/lora/lora_kohya.safetensors" "$tmp/img" "wesnoth portrait"
test -s "$tmp/img-w0.ppm" && test -s "$tmp/img-w1.ppm"

# find_package(vklora)
cmake -S "$src/examples/embed" -B "$tmp/cm" -DCMAKE_PREFIX_PATH="$tmp/prefix" >/dev/null
cmake --build "$tmp/cm" >/dev/null
echo "find_package(vklora): built $(ls "$tmp/cm/embed")"

# every header alone, as C and as C++ (extern "C" guards)
inc=$tmp/prefix/include/vklora
for h in $(cd "$inc" && find . -name '*.h' | sort); do
    echo "#include \"${h#./}\"" > "$tmp/one.c"
    cc -std=c11 -Wall -Werror -fsyntax-only -I"$inc" "$tmp/one.c"
    cp "$tmp/one.c" "$tmp/one.cpp"
    c++ -std=c++17 -fsyntax-only -I"$inc" "$tmp/one.cpp"
done
echo "headers: $(cd "$inc" && find . -name '*.h' | wc -l) compile alone as C11 and C++17"

# exports: vkl_ functions declared in the installed headers, nothing else
so=$(find "$tmp/prefix" -name 'libvklora.so.*.*.*' | head -1)
nm -D --defined-only "$so" | awk '{print $3}' | sort > "$tmp/exports"
bad=$(grep -v '^vkl_' "$tmp/exports" || true)
if [ -n "$bad" ]; then echo "exported but not vkl_: $bad" >&2; exit 1; fi
cat "$inc"/*.h "$inc"/*/*.h | grep -oE 'vkl_[a-z0-9_]+[ ]*\(' | sed 's/[ ]*($//' | sort -u > "$tmp/declared"
undeclared=$(comm -23 "$tmp/exports" "$tmp/declared")
if [ -n "$undeclared" ]; then echo "exported but declared in no installed header: $undeclared" >&2; exit 1; fi
# a program embedding the trainer stops it from its own signal handler
for f in vkl_train_request_stop vkl_train_stop_requested vkl_train_stop_clear; do
    grep -qx "$f" "$tmp/exports" || { echo "$f is not exported" >&2; exit 1; }
done
echo "exports: $(wc -l < "$tmp/exports") vkl_ functions, all declared in the installed headers"

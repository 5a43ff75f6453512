#!/usr/bin/env bash
# The binary as shipped: the `dist` profile (fat LTO, one codegen unit; 91 min on 2 busy
# cores from cold, 125 MB), stripped, with its symbol table split into lakestream.debug beside it. perf
# and gdb find the symbols through the binary's .gnu_debuglink (same folder, or
# /usr/lib/debug/<path>), so a profile of the shipped binary still names functions:
#   perf record -g ./dist/lakestream run ... && perf report   # with dist/lakestream.debug
#   OUT=/somewhere scripts/dist.sh
#   PROFILE=release scripts/dist.sh   # the same split from the ~30 min release build
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/lakestream-target}
out=${OUT:-dist}
profile=${PROFILE:-dist}
cargo build --profile "$profile" --locked --bin lakestream >&2
built="$CARGO_TARGET_DIR/$profile/lakestream"
mkdir -p "$out"
objcopy --only-keep-debug "$built" "$out/lakestream.debug"
objcopy --strip-all --add-gnu-debuglink="$out/lakestream.debug" "$built" "$out/lakestream"
ls -l "$out/lakestream" "$out/lakestream.debug" >&2

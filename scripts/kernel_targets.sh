#!/usr/bin/env bash
# The kernel issue's targets on one adapter, in one run (issue 10, item 10): the crate's GEMM on
# a 1024^3 product, the four LSTM rows S1-S4 (forward and train), and the quick suite, for each
# harness binary given, alternating binaries row group by row group so that both see the same
# machine load.
#
#   bash scripts/kernel_targets.sh [BIN...]     # default: target/release/rnn-wgpu
#
# e.g. `bash scripts/kernel_targets.sh /tmp/rnn-before target/release/rnn-wgpu` compares a
# build of an older commit with this one. Figures land in kernel-targets/<n>-<what>.json.
set -uo pipefail
cd "$(dirname "$0")/.."
bins=("$@")
[ ${#bins[@]} -eq 0 ] && bins=(target/release/rnn-wgpu)
out=kernel-targets
mkdir -p "$out"
rows="256,64,50;512,16,50;1024,1,50;128,32,500"
for rep in 1 2; do
    for i in "${!bins[@]}"; do
        b=${bins[$i]}
        echo "=== [$i] $b (rep $rep)"
        "$b" --gemm 1024,1024,1024 2>&1 | tail -n 1
        "$b" --rows "$rows" --cell lstm --mode both --json "$out/$i-s14-$rep.json" \
            --svg "$out/$i-s14-$rep.svg" 2>&1 | grep -E '^lstm '
        "$b" --suite quick --mode both --no-check --json "$out/$i-quick-$rep.json" \
            --svg "$out/$i-quick-$rep.svg" 2>&1 | grep -E '^(lstm|gru|rnn) '
    done
done

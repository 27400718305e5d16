#!/usr/bin/env bash
# One prepared command for a machine with a GPU (issue 10, item 8). It builds nothing there: it
# runs the release harness built here and the Vulkan loader packages downloaded here.
#
#   bash scripts/gpu_bench.sh prepare   # here, in the repo root: build + download (minutes)
#   bash scripts/gpu_bench.sh run       # there, in the repo root, with .bench and .gl carried
#
# `prepare` builds `target/release/rnn-wgpu`, copies it to .bench/, and downloads the Vulkan
# loader (libvulkan1) and its GL/EGL companions as .debs into .gl/ (both folders are added to
# .git/info/exclude). Then, through the device tool:
#
#   run(command="bash scripts/gpu_bench.sh run", carry=[".bench", ".gl"], timeout_s=590)
#
# `run` unpacks the loader, points Vulkan at the NVIDIA driver when none is found by default,
# and runs, each stage under its own time limit so one slow stage cannot eat the others:
#   0. plans  : the DeepBench LSTM rows' plans on the GPU's limits (plans.log: workgroups= per
#               dispatch)
#   1. quick  : the harness's quick suite with the CPU-reference parity check   (quick.json)
#   2. slope  : LSTM H = 256, B = 1 at T = 25, 50, 100, 200 (time per step = the slope)
#   3. lstm / gru : the DeepBench LSTM and GRU rows, inference and train, with checked and
#               then unchecked shaders (--unchecked-shaders), and the LSTM rows once more with
#               subgroups off (--no-subgroups), no CPU check (parity is stage 1); then the
#               LSTM rows' inference with f16 weight storage (--f16-weights)
#   4. torch  : scripts/bench_torch.py on CUDA, fp32 with TF32 off and with TF32 on, on the
#               same DeepBench LSTM and GRU rows and the slope rows
# and writes every JSON file and log into one archive, $OUT/gpu_bench.tar.gz (or
# ./gpu-bench/gpu_bench.tar.gz without $OUT), then prints the table of
# scripts/gpu_table.py. Stage limits (seconds) can be changed with QUICK_S, SLOPE_S, DB_S,
# F16_S and TORCH_S; the defaults (20 + 90 + 40 + 5 x 58 + 35 + 2 x 45 + 30 = 595 s at most)
# keep the whole run under the device tool's 10 minutes.
set -uo pipefail
cd "$(dirname "$0")/.."

prepare() {
    set -e
    cargo build --release --bin rnn-wgpu
    mkdir -p .bench .gl
    cp target/release/rnn-wgpu .bench/
    # Without debug info: the device tool carries at most 64 MiB in all.
    strip .bench/rnn-wgpu
    git rev-parse HEAD >.bench/commit
    for d in /.bench/ /.gl/; do
        grep -qx "$d" .git/info/exclude 2>/dev/null || echo "$d" >>.git/info/exclude
    done
    local o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64'
    mkdir -p /tmp/amd64/partial
    # shellcheck disable=SC2086
    apt-get $o update -q
    # shellcheck disable=SC2086
    (cd .gl && apt-get $o download libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)
    du -sh .bench .gl
    echo "prepared: .bench (harness of $(cat .bench/commit)) and .gl; carry both"
}

run() {
    local out="${OUT:-$PWD/gpu-bench}"
    local dir="$out/gpu_bench"
    mkdir -p "$dir"
    # The loader only where the machine has none (unpacking over a system's own can break it).
    if ! ldconfig -p | grep -q 'libvulkan\.so\.1' && [ -d .gl ]; then
        for f in .gl/*.deb; do dpkg -x "$f" /; done
        ldconfig
    fi
    local nv=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
    if [ -f "$nv" ] && [ -z "${VK_DRIVER_FILES:-}" ]; then
        export VK_DRIVER_FILES="$nv"
        export __EGL_VENDOR_LIBRARY_FILENAMES=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
    fi
    local bin=.bench/rnn-wgpu
    [ -x "$bin" ] || { echo "no $bin: run 'bash scripts/gpu_bench.sh prepare' here first"; exit 1; }
    {
        echo "commit: $(cat .bench/commit 2>/dev/null || git rev-parse HEAD 2>/dev/null)"
        date -u
        nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,memory.total --format=csv 2>&1
    } | tee "$dir/machine.txt"
    local slope_rows="256,1,25;256,1,50;256,1,100;256,1,200"
    stage() { # name, seconds, command...
        local name=$1 secs=$2
        shift 2
        echo "=== $name (limit ${secs}s): $*"
        local t0=$SECONDS
        timeout --kill-after=10 "$secs" "$@" >"$dir/$name.log" 2>&1
        local rc=$?
        tail -n 40 "$dir/$name.log"
        echo "=== $name: rc=$rc in $((SECONDS - t0))s"
    }
    stage plans 20 "$bin" --suite deepbench --cell lstm --mode train --plan
    stage quick "${QUICK_S:-90}" "$bin" --suite quick --json "$dir/quick.json" --svg "$dir/quick.svg"
    stage slope "${SLOPE_S:-40}" "$bin" --rows "$slope_rows" --cell lstm --mode inference \
        --json "$dir/slope.json" --svg "$dir/slope.svg"
    for cell in lstm gru; do
        for shaders in checked unchecked nosubgroups; do
            local flag=()
            [ "$shaders" = unchecked ] && flag=(--unchecked-shaders)
            [ "$shaders" = nosubgroups ] && flag=(--no-subgroups)
            # Subgroups on/off for the LSTM rows only (time).
            [ "$shaders" = nosubgroups ] && [ "$cell" != lstm ] && continue
            stage "db-$cell-$shaders" "${DB_S:-58}" "$bin" --suite deepbench --cell "$cell" \
                --mode both --no-check --reps 3 "${flag[@]}" \
                --json "$dir/db-$cell-$shaders.json" --svg "$dir/db-$cell-$shaders.svg"
        done
    done
    # f16 weight storage against the f32 rows above (inference only).
    stage db-lstm-f16 "${F16_S:-35}" "$bin" --suite deepbench --cell lstm --mode inference \
        --no-check --reps 3 --f16-weights \
        --json "$dir/db-lstm-f16.json" --svg "$dir/db-lstm-f16.svg"
    if python3 -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
        for cell in lstm gru; do
            stage "torch-db-$cell" "${TORCH_S:-45}" python3 scripts/bench_torch.py --suite deepbench \
                --cell "$cell" --mode both --devices cuda,cuda+tf32 --reps 3 \
                --json "$dir/torch-db-$cell.json"
        done
        stage torch-slope 30 python3 scripts/bench_torch.py --rows "$slope_rows" --cell lstm \
            --mode inference --devices cuda,cuda+tf32 --json "$dir/torch-slope.json"
    else
        echo "no CUDA torch here: the PyTorch stages are skipped" | tee "$dir/torch-skipped.txt"
    fi
    python3 scripts/gpu_table.py "$dir" | tee "$dir/table.md"
    tar -C "$out" -czf "$out/gpu_bench.tar.gz" gpu_bench
    rm -rf "$dir"
    echo "wrote $out/gpu_bench.tar.gz"
}

case "${1:-}" in
    prepare) prepare ;;
    run) run ;;
    *)
        echo "usage: bash scripts/gpu_bench.sh prepare|run (see the header)"
        exit 2
        ;;
esac

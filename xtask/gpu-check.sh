#!/usr/bin/env bash
# The GPU check of the cuDNN issue, in two halves:
#
#   xtask/gpu-check.sh build          # here, no GPU needed: release binaries, packed into
#                                     # target/gpu-check.tar.xz (about 19 MB, to carry)
#   xtask/gpu-check.sh run OUT [SECS] # on the GPU machine, from the repository root
#
# `run` needs an NVIDIA GPU, CUDA 13 at /usr/local/cuda (NVRTC), PyTorch with cuDNN (its pip
# packages also provide libcudnn, which ews finds without LD_LIBRARY_PATH) and the binaries of
# `build` (carried as target/gpu-check.tar.xz, unpacked on first use: the stripped binaries are
# about 120 MB, over the 64 MiB a device call carries). It runs the stages below in order of importance, each
# under a timeout, and skips what no longer fits the time budget (default 510 s), so that one
# 15-minute device lease holds the run and a rerun. Everything lands in OUT; OUT/summary.txt
# lists each stage with its exit code and seconds.
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=target/gpu-check

build() {
    set -e
    export CUDARC_CUDA_VERSION=13000
    cargo build --release -p ews-cli --no-default-features --features cuda
    cargo build --release -p xtask
    local tests
    tests=$(cargo test --release -p ews-models --features cudnn --test cudnn --no-run \
        --message-format=json | grep -o '"executable":"[^"]*cudnn-[^"]*"' | tail -1 | cut -d'"' -f4)
    mkdir -p "$BIN"
    cp target/release/ews target/release/xtask "$tests" "$BIN/"
    mv "$BIN/$(basename "$tests")" "$BIN/cudnn-tests"
    strip "$BIN"/ews "$BIN"/xtask "$BIN"/cudnn-tests
    tar -cf - -C target gpu-check | xz -T2 -6 > target/gpu-check.tar.xz
    du -sh "$BIN"/* target/gpu-check.tar.xz
}

run() {
    local out=${1:?usage: xtask/gpu-check.sh run OUT [SECONDS]}
    local budget=${2:-510}
    mkdir -p "$out"
    out=$(cd "$out" && pwd)
    local deadline=$(($(date +%s) + budget))
    if [[ ! -x $BIN/ews ]]; then
        tar -xJf target/gpu-check.tar.xz -C target || {
            echo "no $BIN/ews and no target/gpu-check.tar.xz: run xtask/gpu-check.sh build" >&2
            return 1
        }
    fi
    export CUDA_PATH=${CUDA_PATH:-/usr/local/cuda}
    export LD_LIBRARY_PATH="$CUDA_PATH/lib64:${LD_LIBRARY_PATH:-}"
    export EWS_KERNEL_CACHE="$out/kernel-cache"
    local summary="$out/summary.txt"
    : > "$summary"

    # stage NAME LIMIT COMMAND...: runs COMMAND with its output in OUT/NAME.log.
    stage() {
        local name=$1 limit=$2
        shift 2
        local left=$((deadline - $(date +%s)))
        if ((left < 15)); then
            echo "$name: skipped (time budget spent)" | tee -a "$summary"
            return
        fi
        ((limit > left)) && limit=$left
        local start=$(date +%s)
        timeout --kill-after=5 "$limit" "$@" > "$out/$name.log" 2>&1
        local rc=$?
        echo "$name: rc=$rc, $(($(date +%s) - start)) s (limit $limit s)" | tee -a "$summary"
    }
    local bench=(bench --model preact-resnet18 --batch 128 --classes 100)

    stage environment 30 bash -c "nvidia-smi; python3 -c 'import torch; \
print(\"torch\", torch.__version__, \"cuda\", torch.version.cuda, \"cudnn\", torch.backends.cudnn.version())'; \
python3 -c 'import nvidia.cudnn as c; print(\"pip cudnn at\", list(c.__path__))'; \
export EWS_KERNEL_CACHE=off; $BIN/ews backend; EWS_CUDNN=off $BIN/ews backend"
    local tests=("$BIN/cudnn-tests" --ignored --nocapture --test-threads 1)
    stage tests-cubecl-stream 150 "${tests[@]}" --skip loss_curves
    stage first-step-fresh 120 "$BIN/ews" "${bench[@]}" --step ews --steps 1 --warmup 0 \
        --out "$out/first-step-fresh.json"
    stage first-step-cached 60 "$BIN/ews" "${bench[@]}" --step ews --steps 1 --warmup 0 \
        --out "$out/first-step-cached.json"
    stage bench-preact-wrn 300 "$BIN/xtask" bench --backend cuda --ews "$BIN/ews" \
        --model preact-resnet18,wrn-28-10 --step plain,ews,pgd10 --bf16 --check \
        --steps 10 --warmup 2 --timeout 90 --out "$out/bench"
    stage memory-1000-ews-steps 150 "$BIN/ews" "${bench[@]}" --step ews --steps 1000 \
        --warmup 5 --memory-trace --out "$out/memory-1000-ews-steps.json"
    stage tests-loss-curves 150 "${tests[@]}" loss_curves
    stage own-stream-plain 60 env EWS_CUDNN_STREAM=own "$BIN/ews" "${bench[@]}" --step plain \
        --steps 20 --out "$out/own-stream-plain.json"
    stage tests-own-stream 90 env EWS_CUDNN_STREAM=own "${tests[@]}" cudnn_matches_burn
    stage tests-gradients-without-tf32 60 env EWS_CUDNN_TF32=0 "${tests[@]}" gradients_agree
    stage cudnn-benchmark-plain 60 "$BIN/ews" --cudnn-benchmark "${bench[@]}" --step plain \
        --steps 20 --out "$out/cudnn-benchmark-plain.json"
    stage burn-kernels-plain 120 env EWS_CUDNN=off "$BIN/ews" "${bench[@]}" --step plain \
        --steps 10 --out "$out/burn-kernels-plain.json"
    stage bench-resnet50 150 "$BIN/xtask" bench --backend cuda --ews "$BIN/ews" \
        --model resnet50 --step plain,ews,pgd10 --bf16 --steps 10 --warmup 2 --timeout 60 \
        --out "$out/bench-resnet50"
    rm -rf "$out/kernel-cache"
    echo "total: $((budget - (deadline - $(date +%s)))) s of $budget s" | tee -a "$summary"
}

case "${1:-}" in
    build) build ;;
    run) shift && run "$@" ;;
    *) echo "usage: xtask/gpu-check.sh build | run OUT [SECONDS]" >&2 && exit 2 ;;
esac

#!/usr/bin/env bash
# One prepared command for a CUDA machine: the gpu-marked tests, then the benchmarks on the GPU, in about
# 8 minutes. Results land in $OUT (default runs/gpu_check): test log, benchmark JSON files, nvidia-smi.
#
#   bash recipes/gpu_check.sh --prepare   # where the victims are trained, before: the small Marian victim
#                                         # and the corpora the checks read into runs/gpu/ (about 52 MB; carry it)
#   bash recipes/gpu_check.sh             # on the GPU machine (its python3 holds a CUDA torch)
#
# Steps that do not finish in their time budget are cut and the script goes on to the next one.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
OUT=${OUT:-runs/gpu_check}
MARIAN=runs/gpu/multi30k_marian_small

if [ "${1:-}" = "--prepare" ]; then
    set -e
    # the Marian victim (the GPU image has transformers; OpenNMT-py's dependency tree is too large to carry,
    # so the OpenNMT-py checks skip there) and the corpora the checks read (the data folder beside the
    # checkout does not travel): Multi30k, MNIST and the negotiation scenarios; about 52 MB in all
    data=${NLPROBUST_DATA:-../shared/data}
    mkdir -p runs/gpu/multi30k_marian_small runs/gpu/data/negotiate
    cp runs/multi30k_marian_small/{config.json,generation_config.json,model.safetensors,source.spm,target.spm,tokenizer_config.json,vocab.json} \
        runs/gpu/multi30k_marian_small/
    cp -r "$data/multi30k" "$data/mnist" runs/gpu/data/
    cp "$data/negotiate/selfplay.txt" "$data/negotiate/val.txt" runs/gpu/data/negotiate/
    du -sh runs/gpu
    echo "carry: runs/gpu"
    exit 0
fi

mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
[ -d runs/gpu/data ] && export NLPROBUST_DATA="$PWD/runs/gpu/data"
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
$PY -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))" | tee "$OUT/device.txt"

step() {  # step NAME SECONDS COMMAND...
    local name=$1 secs=$2
    shift 2
    echo "== $name (at most ${secs}s)"
    local t0=$SECONDS
    timeout "$secs" "$@" > "$OUT/$name.log" 2>&1
    local rc=$?
    echo "   rc=$rc in $((SECONDS - t0))s"
    tail -n 15 "$OUT/$name.log"
}

step gpu_tests 200 $PY -m pytest -q -m gpu tests/test_gpu.py -p no:cacheprovider
if [ -d "$MARIAN" ]; then
    step bench_seq2sick 150 $PY recipes/bench_seq2sick.py --device cuda --victim "hf:$MARIAN" --preset multi30k-marian \
        --single 32 --sentences 512 --out "$OUT/bench_seq2sick_cuda.json" --no-render
    step bench_seq2sick_bf16 90 $PY recipes/bench_seq2sick.py --device cuda --dtype bfloat16 --victim "hf:$MARIAN" \
        --preset multi30k-marian --batches 1,64,256 --single 32 --repeats 2 --out "$OUT/bench_seq2sick_cuda_bf16.json" \
        --no-render
else
    echo "== bench_seq2sick skipped: $MARIAN missing (run --prepare where the victim is trained, carry runs/gpu)"
fi
step bench_selfplay 60 $PY recipes/bench_selfplay.py --scale tiny --device cuda --out "$OUT/bench_selfplay_cuda.json"
ls -la "$OUT"

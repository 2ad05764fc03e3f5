#!/usr/bin/env bash
# The GPU checks and the benchmark tables of docs/benchmarks.md:
#   bash tools/gpu_checks/report.sh [OUT_DIR [STEP ...]]
# Steps: kernels layer_kernels table train graphed graphed_train by_module unfused_train large compiled
# compile_check scan_bench scan_sweep wgrad_sweep graphed_unfolded depthwise_sweep profiles (default: all, ~45
# minutes on one H100 / H200; name a few to fit a shorter session, e.g.
# `report.sh out kernels table`). Each step has its own time limit so that one slow step (a first Triton /
# inductor compilation) cannot cost the rest; full logs go to OUT_DIR (default gpu_report/), a summary to stdout.
set -u
out=${1:-gpu_report}
shift $(( $# > 0 ? 1 : 0 ))
all_steps='kernels layer_kernels table train graphed graphed_train by_module unfused_train large compiled compile_check'
all_steps="$all_steps scan_bench scan_sweep wgrad_sweep graphed_unfolded depthwise_sweep profiles"
wanted=" ${*:-$all_steps} "
mkdir -p "$out"
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
bench="python3 $here/../analysis_tools/benchmark.py"
rows() { grep -E "^ *[tsb] |out of memory|Error|rror:" || true; }
step() {  # step NAME SECONDS COMMAND...
  local name=$1 limit=$2; shift 2
  [[ $wanted == *" $name "* ]] || return 1  # not asked for: no summary either
  echo "## $name"
  timeout "$limit" "$@" > "$out/$name.log" 2>&1
  local rc=$?
  [ $rc -eq 124 ] && echo "($name: stopped after $limit s)"
  return 0
}
step kernels 360 python3 "$here/check_kernels.py" --model &&
  grep -E "^  (float|bfloat)|vs float64|bit-identical|FAIL|PASSED" "$out/kernels.log"
# The layer kernels' checks run side by side (each compiles its kernels for every dtype mode, the depthwise one
# split by mode: one process took over 200 s), then their benchmarks one after another.
layer_kernels() {
  local rc=0 job mode
  for mode in float32 float16 bfloat16 'autocast float16' 'autocast bfloat16'; do
    python3 "$here/check_depthwise_conv.py" --only check --modes "$mode" > "$out/depthwise_${mode// /_}.log" 2>&1 &
  done
  python3 "$here/check_group_norm.py" --only check > "$out/group_norm_check.log" 2>&1 &
  python3 "$here/check_pointwise_conv.py" --only check > "$out/pointwise_check.log" 2>&1 &
  for job in $(jobs -p); do wait "$job" || rc=1; done
  cat "$out"/group_norm_check.log "$out"/depthwise_*.log "$out"/pointwise_check.log
  for script in check_group_norm.py check_depthwise_conv.py check_pointwise_conv.py; do
    python3 "$here/$script" --only bench || rc=1
  done
  return $rc
}
export -f layer_kernels
export here out
step layer_kernels 420 bash -c layer_kernels &&
  grep -E "^ +(float|bfloat|autocast)|PASSED|FAILED|^ +[0-9]+ ?x" "$out/layer_kernels.log"
step table 170 $bench --arch t s b --batch 128 --dtype fp32 fp16 --mode infer &&
  rows < "$out/table.log"
step train 300 $bench --arch t s b --batch 128 --dtype fp16 --mode train &&
  rows < "$out/train.log"
# The same tables replayed from CUDA graphs: the GPU's pace without the host's share.
step graphed 200 $bench --arch t s b --batch 128 --dtype fp32 fp16 --mode infer --cuda-graph &&
  rows < "$out/graphed.log"
step graphed_train 300 $bench --arch t s b --batch 128 --dtype fp16 --mode train --cuda-graph &&
  rows < "$out/graphed_train.log"
step by_module 120 python3 "$here/profile_model.py" --arch t --dtype fp32 --by-module &&
  grep -E "^(# |whole|stem|stage|downsample|head)" "$out/by_module.log"
SPARX_CROSS_SCAN=unfused step unfused_train 200 $bench --arch t s b --batch 128 --dtype fp16 --mode train &&
  rows < "$out/unfused_train.log"
step large 120 bash -c "$bench --arch t --batch 32 --size 1024 --dtype fp32 fp16 && $bench --arch t --batch 64 --size 768 --dtype fp32 fp16" &&
  rows < "$out/large.log"
step compiled 240 $bench --arch t --batch 128 --dtype fp32 fp16 --compile &&
  rows < "$out/compiled.log"
step compile_check 240 python3 "$here/check_compile.py" &&
  grep -E "graph|break at|compiled vs|PASSED|FAILED" "$out/compile_check.log"
# The scan core's kernels at SparX-T's stage sizes, the backward's dt on tensor cores (its default above rank 8) and
# by multiply-adds; the 1x1 convs' weight-gradient kernel's tilings (their forward + backward is in layer_kernels).
scan_bench="python3 $here/bench_cross_scan.py --arch t"
step scan_bench 300 bash -c "$scan_bench && $scan_bench --bwd-fma" &&
  grep -E "^# |^ +[0-9]+ +[0-9]+x" "$out/scan_bench.log"
# The scan core's tilings with the kernels prefetching the next chunk (their registers changed): the inference
# candidates, and forward + backward with one training setting moved at a time.
step scan_sweep 360 bash -c "$scan_bench --sweep-inference && $scan_bench --sweep-training" &&
  grep -E "^ +[0-9]+ +[0-9]+x|tilings|variants|d_inner" "$out/scan_sweep.log"
step wgrad_sweep 300 python3 "$here/check_pointwise_conv.py" --only wgrad-sweep --arch t &&
  grep -E "best|WRONG" "$out/wgrad_sweep.log"
# The graphed inference table with every BatchNorm and GELU as its own module (benchmark.py --unfolded): against
# step graphed, what folding them into the convolutions (layers.FoldingSequential) gains.
step graphed_unfolded 200 $bench --arch t s b --batch 128 --dtype fp32 fp16 --mode infer --cuda-graph --unfolded &&
  rows < "$out/graphed_unfolded.log"
# The depthwise kernels' tilings at SparX-T's sizes, each conv's ms (check_depthwise_conv.py --only sweep): the
# float16 5 x 5 forward ran at 838 GB/s on an H100 (float32 1511) with one position a thread (FWD_TILING's values
# over k*k), so 2-byte loads.
step depthwise_sweep 240 python3 "$here/check_depthwise_conv.py" --only sweep &&
  grep -E "^ *(float16|float32) " "$out/depthwise_sweep.log"
# Where the GPU time goes in the two settings furthest from the goal: SparX-T's fp16 training step (forward and
# backward; kernel by kernel, then the aten ops' share by call site) and SparX-B's fp32 inference pass.
step profiles 300 bash -c "python3 $here/profile_model.py --arch t --dtype fp16 --train --rows 45 &&
  python3 $here/profile_model.py --arch t --dtype fp16 --train --by-site --rows 45 &&
  python3 $here/profile_model.py --arch b --dtype fp32 --rows 45" &&
  grep -E "CUDA time total|rror" "$out/profiles.log"
exit 0

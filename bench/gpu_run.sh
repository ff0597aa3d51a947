#!/usr/bin/env bash
# On a CUDA machine, from the repository root, with $OUT the folder the results go to:
#   bash bench/gpu_run.sh MODE...   # modes below (smoke, batching, single, compiled, compiled-sdpa, objects, streams, streams-200, targets, targets-parts, regions, regions-lag, freeze, regions-fp8, regions-encoder, profile, profile-regions, profile-8, attention, kernels, kernels-quick, gpu-tests, ort-bench, ort-bench-synthetic, ort-tests, full)
# Several modes in one call: bash bench/gpu_run.sh smoke single
# Needs the wheels of sam2/hydra/omegaconf/iopath/antlr4 in .whl/ (a machine without network installs
# from there) and the bedroom frames in .bench_frames/bedroom (neither is tracked). bench/RESULTS.md
# quotes what each mode wrote.
# The ort-* modes need onnxruntime-gpu (a build for the CUDA major version of the installed torch)
# imported ahead of any CPU-only onnxruntime in site-packages: install its wheel into a folder of its
# own and put that folder on PYTHONPATH (this script adds its /tmp/site, which holds no onnxruntime):
#   python3 -m pip install --no-deps --target /tmp/ortsite onnxruntime_gpu-*.whl
#   PYTHONPATH=/tmp/ortsite bash bench/gpu_run.sh ort-bench ort-bench-synthetic ort-tests
# Each ort-* mode first prints the onnxruntime it imported and its providers (CUDAExecutionProvider
# must be among them; without it ort-tests fails and the benches record the failure in their JSON).
set -o pipefail
export PYTHONUNBUFFERED=1 TQDM_DISABLE=1
python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/site .whl/*.whl 2>/dev/null || exit 1
export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
python3 -m pip install -q --no-deps --no-build-isolation -e . >/dev/null 2>&1 || echo "pip -e failed"
python3 -c "import fastsam2.tools.bench, sam2, torch; print('torch', torch.__version__, torch.cuda.get_device_name())" || exit 1
nvidia-smi --query-gpu=name,memory.used,memory.total,clocks.sm,clocks.max.sm,temperature.gpu --format=csv | tee "$OUT/nvidia-smi.txt"
frames=.bench_frames/bedroom
bench="python3 -m fastsam2.tools.cli bench --config tiny --backend torch --device cuda --dtype bfloat16 --cuda-graphs --frames-dir $frames"
for mode in "${@:-smoke}"; do
  case $mode in ort-*)
    python3 -c "import onnxruntime as o; print('onnxruntime', o.__version__, o.__file__, o.get_available_providers())" ;;
  esac
  case $mode in
  smoke)  # parity, graphs vs eager, compile vs eager, batching (TF32 convolutions on and off)
    python3 bench/gpu_smoke.py --frames-dir $frames --compile 2>&1 | tee "$OUT/smoke.log" || exit 1 ;;
  batching)  # the smoke without the compile check
    python3 bench/gpu_smoke.py --frames-dir $frames 2>&1 | tee "$OUT/batching.log" || exit 1 ;;
  single)  # one stream, one object: official fp32 + bf16 against the CUDA-graph path
    $bench --keep 1.0,0.3 --frames 200 --official-dtype float32,bfloat16 \
      --json "$OUT/h200_single.json" 2>&1 | tee "$OUT/h200_single.log" || exit 1 ;;
  compiled)  # the same, stages compiled, against the official bf16 mode of the same run
    $bench --keep 1.0,0.3 --frames 200 --compile --official-dtype bfloat16 \
      --json "$OUT/h200_single_compiled.json" 2>&1 | tee "$OUT/h200_single_compiled.log" || exit 1 ;;
  compiled-sdpa)  # keep 0.3 compiled with PyTorch's own SDPA kernel choice (the A/B of --gpu-attention)
    $bench --keep 0.3 --frames 200 --compile --official-dtype bfloat16 --gpu-attention sdpa \
      --json "$OUT/h200_single_compiled_sdpa.json" 2>&1 | tee "$OUT/h200_single_compiled_sdpa.log" || exit 1 ;;
  gpu-tests)  # the tests marked gpu
    python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_gpu_attention.py tests/test_device_preprocess.py \
      tests/test_trt_standin.py -rs 2>&1 \
      | tee -a "$OUT/run.log" || exit 1 ;;
  ort-bench)  # ONNX Runtime's CUDA provider vs the torch backend, fp32/fp16/int8 graphs, with ORT's profile
    # (a failed stage is in the JSON; the next mode still runs)
    python3 bench/ort_gpu.py --profile --frames-dir $frames --out "$OUT/ort_gpu.json" 2>&1 | tee "$OUT/ort_gpu.log" ;;
  ort-bench-synthetic)  # the same with the shipped trained model, plus J&F on generated held-out clips
    python3 bench/ort_gpu.py --checkpoint synthetic --frames-dir $frames --out "$OUT/ort_gpu_synthetic.json" 2>&1 \
      | tee "$OUT/ort_gpu_synthetic.log" ;;
  ort-tests)  # tests/test_ort_cuda.py (needs onnxruntime-gpu; the bedroom frames from .bench_frames)
    FASTSAM2_SHARED_DATA=$PWD/.bench_frames python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_ort_cuda.py -rs 2>&1 \
      | tee "$OUT/ort_cuda_tests.log" ;;
  attention)  # every attention shape of a step, timed per kernel
    python3 bench/attention_shapes.py --frames-dir $frames 2>&1 | tee "$OUT/h200_attention_shapes.log" || exit 1 ;;
  objects)  # one stream, four objects
    $bench --keep 0.3 --frames 200 --objects 4 --compile --official-dtype bfloat16 \
      --json "$OUT/h200_4objects.json" 2>&1 | tee "$OUT/h200_4objects.log" || exit 1 ;;
  streams)  # eight streams of one object, memory against video length
    $bench --keep 0.3 --frames 60,200,1000 --streams 8 --compile --official-dtype bfloat16 \
      --json "$OUT/h200_8streams.json" --plot "$OUT/h200_8streams.png" 2>&1 | tee "$OUT/h200_8streams.log" || exit 1 ;;
  streams-200)  # eight streams at 200 frames only (the speed target): each step finished, and one in flight
    $bench --keep 0.3 --frames 200 --streams 8 --compile --official-dtype bfloat16 --in-flight 0,1 \
      --json "$OUT/h200_8streams_200.json" 2>&1 | tee "$OUT/h200_8streams_200.log" || exit 1 ;;
  targets)  # the encoder targets, tiny @1024 bf16 keep 0.3, 200 frames, compiled: 16 streams and one
    # stream on whole frames (with the official bf16 mode), then with the FP8 trunk on a fixed 2 x 2
    # rectangle of the 5 x 5 grid (--region-units: random weights' masks cover the frame)
    for s in 16 1; do
      flight=$([ $s -gt 1 ] && echo "--in-flight 0,1")
      $bench --keep 0.3 --frames 200 --streams $s --compile --official-dtype bfloat16 $flight \
        --json "$OUT/streams${s}.json" 2>&1 | tee "$OUT/streams${s}.log" || exit 1
      $bench --keep 0.3 --frames 200 --streams $s --compile --no-official $flight --precision fp8 \
        --encoder-region 0 --region-units 2 --json "$OUT/streams${s}_fp8_region2.json" 2>&1 \
        | tee "$OUT/streams${s}_fp8_region2.log" || exit 1
    done ;;
  targets-parts)  # each half of the targets' fastest setting alone: the rectangle without FP8, FP8 whole
    for s in 16 1; do
      flight=$([ $s -gt 1 ] && echo "--in-flight 0,1")
      $bench --keep 0.3 --frames 200 --streams $s --compile --no-official $flight --encoder-region 0 \
        --region-units 2 --json "$OUT/streams${s}_region2.json" 2>&1 | tee "$OUT/streams${s}_region2.log" || exit 1
      $bench --keep 0.3 --frames 200 --streams $s --compile --no-official $flight --precision fp8 \
        --json "$OUT/streams${s}_fp8.json" 2>&1 | tee "$OUT/streams${s}_fp8.log" || exit 1
    done ;;
  regions)  # the rectangle path (2 x 2 of the 5 x 5 units) against whole frames, 16 streams and one stream, each
    # step finished and one in flight; the official bf16 mode with one stream
    region="--encoder-region 0 --region-units 2"
    for args in "16 region2 --no-official $region" "16 whole --no-official" "1 region2 --no-official $region" \
                "1 whole --official-dtype bfloat16"; do
      set -- $args
      $bench --keep 0.3 --frames 200 --streams $1 --compile --in-flight 0,1 ${@:3} --json "$OUT/streams$1_$2.json" \
        2>&1 | tee -a "$OUT/run.log" || exit 1
    done ;;
  regions-lag)  # the rectangle following the masks one frame further back (--encoder-lag 1): a step is
    # issued while the one before computes; 16 streams and one stream, each step finished and one in flight
    for s in 16 1; do
      $bench --keep 0.3 --frames 200 --streams $s --compile --in-flight 0,1 --no-official --encoder-region 0 \
        --encoder-lag 1 --region-units 2 --json "$OUT/streams${s}_region2_lag1.json" 2>&1 | tee -a "$OUT/run.log" || exit 1
    done ;;
  freeze)  # compiled stages with --freeze-weights (each weight cast to bf16 once) against without (cast at
    # every call), on the rectangle with --encoder-lag 1: one stream, the numerics, then 16 streams
    region="--no-official --encoder-region 0 --region-units 2 --encoder-lag 1"
    for s in 1 16; do
      for f in unfrozen frozen; do  # the baseline first: on a fresh machine the first run can be the slower
        $bench --keep 0.3 --frames 200 --streams $s --compile --in-flight 0,1 $region \
          $([ $f = frozen ] && echo --freeze-weights) --json "$OUT/streams${s}_region2_lag1_$f.json" 2>&1 \
          | tee -a "$OUT/run.log" || exit 1
      done
      [ $s = 1 ] && { python3 bench/gpu_smoke.py --frames-dir $frames --compile-only 2>&1 | tee "$OUT/freeze_numerics.log" || exit 1; }
    done ;;
  regions-fp8)  # one stream on the rectangle with the FP8 trunk
    $bench --keep 0.3 --frames 200 --streams 1 --compile --in-flight 0,1 --no-official --precision fp8 \
      --encoder-region 0 --region-units 2 --json "$OUT/streams1_fp8_region2.json" 2>&1 | tee -a "$OUT/run.log" || exit 1 ;;
  regions-encoder)  # the image encoder against the region encoder on whole frames and k x k rectangles
    python3 bench/encoder_profile.py --batch 16,8 --regions 1,2,3 --skip-blocks --compile \
      --json "$OUT/encoder_regions_compiled.json" 2>&1 | tee -a "$OUT/run.log" || exit 1
    python3 bench/encoder_profile.py --batch 1 --regions 1,2,3 --skip-blocks --cuda-graphs \
      --json "$OUT/encoder_regions_cuda_graphs.json" 2>&1 | tee -a "$OUT/run.log" || exit 1 ;;
  profile)  # where a step's time goes: 8 streams (with a trace of 3 steps) and 1 stream, compiled
    python3 bench/gpu_profile.py --frames-dir $frames --streams 8 --compile --trace "$OUT/h200_trace_8streams.json.gz" \
      2>&1 | tee "$OUT/h200_profile_8streams.log" || exit 1
    python3 bench/gpu_profile.py --frames-dir $frames --streams 1 --compile 2>&1 | tee "$OUT/h200_profile_1streams.log" || exit 1 ;;
  profile-regions)  # where a step's time goes with the rectangle (2 x 2 units, --encoder-lag 1), compiled: 16
    # streams and one
    for s in 16 1; do
      python3 bench/gpu_profile.py --frames-dir $frames --streams $s --compile --encoder-region 0 --region-units 2 \
        --encoder-lag 1 \
        2>&1 | tee "$OUT/profile_${s}streams_region2.log" || exit 1
    done ;;
  profile-8)  # the 8-stream half of profile
    python3 bench/gpu_profile.py --frames-dir $frames --streams 8 --compile --trace "$OUT/h200_trace_8streams.json.gz" \
      2>&1 | tee "$OUT/h200_profile_8streams.log" || exit 1 ;;
  kernels)  # alternatives for the slowest single kernels (bench/stage_kernels.py)
    python3 bench/stage_kernels.py --frames-dir $frames 2>&1 | tee "$OUT/h200_stage_kernels.log" || exit 1 ;;
  kernels-quick)  # the same without the encoder under max-autotune (minutes of compilation)
    python3 bench/stage_kernels.py --frames-dir $frames --no-autotune 2>&1 | tee "$OUT/h200_stage_kernels.log" || exit 1 ;;
  full)  # the H100 table of bench/RESULTS.md
    $bench --keep 1.0,0.5,0.3 --frames 60,200,1000 --official-offload \
      --json "$OUT/gpu_h100.json" --plot "$OUT/gpu_h100.png" 2>&1 | tee "$OUT/gpu_h100.log" ;;
  *) echo "unknown mode $mode"; exit 2 ;;
  esac
done

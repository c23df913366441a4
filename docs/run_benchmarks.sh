#!/usr/bin/env bash
# Every table of docs/benchmarks.md, regenerated: run from the repository root with
# ../shared beside it (the held-out images: training/splits/val.txt and retina.jpg).
# Results go to results/<name>/ (results.md, results.json, ...). Stop other jobs first:
# the speed rows need the machine to themselves.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
mkdir -p results

HELD_OUT=(training/splits/val.txt ../shared/data/retina.jpg)
export OMP_NUM_THREADS=2

# how the inference defaults were chosen: seed-1 pairs (not the benchmark's seed 0)
python examples/sweep_defaults.py --images "${HELD_OUT[@]}" --seed 1 --presets easy,hard,eye \
  > results/sweep.md

# accuracy: homography presets (both estimators), eye-model presets, full size and 768 px
fundusfeat evaluate --synthetic "${HELD_OUT[@]}" --preset hard --pairs 36 --seed 0 --quiet \
  --methods sift,sift-clahe,orb,akaze,r2d2fundus --estimator magsac --out results/hard-magsac
fundusfeat evaluate --synthetic "${HELD_OUT[@]}" --preset hard --pairs 36 --seed 0 --quiet \
  --methods sift-clahe,r2d2fundus --estimator ransac --out results/hard-ransac
for preset in easy eye eye-hard; do
  fundusfeat evaluate --synthetic "${HELD_OUT[@]}" --preset "$preset" --pairs 36 --seed 0 \
    --quiet --methods sift-clahe,r2d2fundus --out "results/$preset"
  fundusfeat evaluate --synthetic "${HELD_OUT[@]}" --preset "$preset" --pairs 36 --seed 0 \
    --quiet --methods sift-clahe,r2d2fundus --size 768 --out "results/$preset-768"
done
for preset in eye eye-hard; do
  fundusfeat evaluate --synthetic "${HELD_OUT[@]}" --preset "$preset" --pairs 36 --seed 0 \
    --quiet --methods r2d2fundus --transform homography --out "results/$preset-homography"
done

# the hard preset's calibration: SIFT-CLAHE with RANSAC on 2 x 72 pairs
for seed in 0 1; do
  fundusfeat evaluate --synthetic "${HELD_OUT[@]}" --preset hard --pairs 72 --seed "$seed" \
    --quiet --methods sift-clahe --estimator ransac --out "results/calibration-seed$seed"
done

# verification: impossible pairs of the held-out images
fundusfeat evaluate --impostors "${HELD_OUT[@]}" --methods r2d2fundus --quiet \
  --out results/impostors

# speed: detection, a whole registration against the classical pipeline, shift repeatability
fundusfeat bench "${HELD_OUT[@]}" --device cpu --sizes 768,1152 --threads 2 --repeat 3 \
  --methods sift,sift-clahe,r2d2fundus --profile --pipeline --shift --quiet --out results/bench
# the backends, warm and cold (a fresh process per row; the first row of OpenVINO converts
# the network into the user's cache dir, the later ones load it)
rm -rf "${FUNDUSFEAT_CACHE_DIR:-$HOME/.cache/fundusfeat}/openvino"
fundusfeat bench "${HELD_OUT[@]}" --device cpu --sizes 768,1536 --threads 2 --repeat 3 \
  --methods sift,r2d2fundus@openvino,r2d2fundus@torch --quiet --out results/backends

# datasets: 84 pairs over 24 images (loop vs batch), then 1008 pairs (batch only, memory)
python examples/batch_benchmark.py --sources "${HELD_OUT[@]}" --eyes 3 --visits 8 \
  > results/batch-84.txt
python examples/batch_benchmark.py --sources "${HELD_OUT[@]}" --eyes 36 --visits 8 --modes batch \
  > results/batch-1008.txt

# the cross-check matcher: one pass against two, and cv2
python examples/matcher_speed.py --n 5000 --threads 2 > results/matcher.txt

# the verification across presets and impostors
python examples/verification_summary.py --method r2d2fundus --impostors results/impostors \
  --true results/easy results/hard-magsac results/eye results/eye-hard > results/verification.md

# montage: synthetic 5- and 7-field sets of the held-out images (montage, tree, star,
# Stitcher; seam step with and without exposure compensation; impostor fields)
fundusfeat evaluate --montage "${HELD_OUT[@]}" --quiet --out results/montage --figure

# comparison of visits: the thresholds chosen on training images, then the benchmark on
# the held-out images (painted lesions, controls, red clipped; plain-difference baseline)
fundusfeat evaluate --changes training/splits/train.txt --calibrate --pairs 20 --quiet \
  --out results/changes-calibration
fundusfeat evaluate --changes "${HELD_OUT[@]}" --pairs 30 --quiet --out results/changes

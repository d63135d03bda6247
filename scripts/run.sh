#!/usr/bin/env bash
# The newcomer's first command: installs dependencies, builds kadr, and runs the main job.
# Until the pipeline exists, the main job is annotating a sample image with `kadr detect`.
#
# Usage: scripts/run.sh [IMAGE...]
#   Models come from $KADR_MODELS_DIR (default: ../shared/models when present, else ./models);
#   with no ONNX models at all, the built-in people detector runs.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup-debian.sh
./scripts/build.sh release

data="${KADR_TEST_DATA:-../shared}"
export KADR_MODELS_DIR="${KADR_MODELS_DIR:-$([ -d "$data/models" ] && echo "$data/models" || echo models)}"
images=("$@")
if [ ${#images[@]} -eq 0 ]; then
  if [ -f "$data/media/bus.jpg" ]; then
    images=("$data/media/bus.jpg")
  else
    mkdir -p build/samples
    ./build/release/tools/make_sample_image build/samples/sample.png
    images=(build/samples/sample.png)
  fi
fi
model=people-hog
[ -f "$KADR_MODELS_DIR/yolox_nano.onnx" ] && model=yolox_nano

./build/release/kadr models
./build/release/kadr detect --model "$model" --out out "${images[@]}"
echo
echo "Annotated images are in $(pwd)/out/"

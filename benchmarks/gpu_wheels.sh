#!/usr/bin/env bash
# Download, on a machine with internet, the wheels that the GPU image lacks (it already holds CUDA jax, flax,
# optax, chex, orbax-checkpoint and PyTorch), for Python 3.12 manylinux x86_64, into a folder that travels
# with the tree (default benchmarks/wheels/, git-ignored: send it along, e.g. the device tool's `carry`).
# benchmarks/gpu_suite.sh installs from it, offline, only what the image does not already import.
#
#   benchmarks/gpu_wheels.sh                 # -> benchmarks/wheels/ (~55 MB)
#   benchmarks/gpu_wheels.sh /tmp/wheels     # elsewhere (then: gpu_suite.sh --wheels /tmp/wheels)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
dest="${1:-$here/wheels}"
mkdir -p "$dest"
# --no-deps: each name is listed explicitly, so nothing pulls a second torch/jax into the folder.
# nas_jax: ml-collections (+ absl-py, PyYAML), scikit-learn (+ scipy, joblib, threadpoolctl), tqdm.
# Side-by-side references: torchattacks (PGD), adversarial-robustness-toolbox (HopSkipJump; + six).
pkgs=(ml-collections absl-py PyYAML tqdm scikit-learn scipy joblib threadpoolctl six
      torchattacks adversarial-robustness-toolbox)
python3 -m pip download --dest "$dest" --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --abi cp312 --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux_2_27_x86_64 --platform manylinux_2_28_x86_64 "${pkgs[@]}"
ls -1 "$dest"
du -sh "$dest"

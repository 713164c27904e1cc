#!/bin/bash
# Build the LezerPrint SD-card image: Raspberry Pi OS Lite (bookworm, arm64) made by Raspberry
# Pi's own pi-gen, plus this folder's stage (stage-lezerprint/). The result is a .zip under
# image-build/work/deploy/ to write with Raspberry Pi Imager ("Use custom").
#
#   sudo image-build/build.sh           build the image (about an hour; 15 GB of disk)
#   sudo image-build/build.sh --check   only say what this machine lacks for the build
#
# PI_GEN_DIR: an existing pi-gen checkout to use (default: cloned into image-build/work/pi-gen
# at PI_GEN_REF, default "bookworm-arm64": pi-gen's branch for 64-bit Raspberry Pi OS on
# Debian 12; its newer branches build trixie, whose Python 3.13 the wheelhouse is not made for).
# armhf (32-bit) is not built: PyPI has no armv7 wheels for our dependencies; untested.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
project="$(cd "$here/.." && pwd)"
work="${LEZERPRINT_IMAGE_WORK:-$here/work}"
pi_gen="${PI_GEN_DIR:-$work/pi-gen}"
pi_gen_ref="${PI_GEN_REF:-bookworm-arm64}"

missing=()
[ "$(id -u)" = 0 ] || missing+=("root: run it with sudo (pi-gen mounts, chroots and makes loop devices)")
[ -f /etc/debian_version ] || missing+=("a Debian-based host (Debian 12 or newer, or Ubuntu 22.04 or newer)")
command -v python3 >/dev/null && python3 -c 'import sys; assert sys.version_info >= (3, 11)' 2>/dev/null ||
	missing+=("python3 3.11 or newer with pip (apt-get install python3-pip python3-venv)")
for tool in git:git debootstrap:debootstrap qemu-aarch64-static:qemu-user-static \
	kpartx:kpartx parted:parted zerofree:zerofree zip:zip bsdtar:libarchive-tools \
	mkfs.vfat:dosfstools rsync:rsync xz:xz-utils quilt:quilt arch-test:arch-test; do
	command -v "${tool%%:*}" >/dev/null || missing+=("${tool%%:*}: apt-get install ${tool##*:}")
done
if [ "$(uname -m)" != aarch64 ] && [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
	missing+=("arm64 emulation registered with binfmt_misc: apt-get install binfmt-support qemu-user-static, then update-binfmts --enable qemu-aarch64")
fi
if [ ! -x "$pi_gen/build.sh" ] && ! GIT_TERMINAL_PROMPT=0 timeout 30 git ls-remote --exit-code https://github.com/RPi-Distro/pi-gen "$pi_gen_ref" >/dev/null 2>&1; then
	missing+=("pi-gen: no checkout at $pi_gen, and its branch $pi_gen_ref cannot be fetched from github.com (set PI_GEN_DIR to a checkout, or PI_GEN_REF)")
fi
free_kb=$(df --output=avail -k "$(dirname "$work")" | tail -1)
[ "$free_kb" -ge $((15 * 1024 * 1024)) ] || missing+=("15 GB free under $(dirname "$work") (have $((free_kb / 1024 / 1024)) GB)")

if [ ${#missing[@]} -gt 0 ]; then
	echo "build.sh: this machine cannot build the image yet; it needs:" >&2
	printf '  - %s\n' "${missing[@]}" >&2
	exit 1
fi
if [ "${1:-}" = --check ]; then
	echo "build.sh: this machine has what the image build needs"
	exit 0
fi

mkdir -p "$work"
if [ ! -x "$pi_gen/build.sh" ]; then
	git clone --depth 1 --branch "$pi_gen_ref" https://github.com/RPi-Distro/pi-gen "$pi_gen"
fi
"$here/wheelhouse.sh" arm64 "$work/wheelhouse-arm64"

# Raspberry Pi OS Lite is stages 0-2; only our stage is exported as an image.
touch "$pi_gen/stage2/SKIP_IMAGES"
rm -f "$pi_gen/stage2/EXPORT_NOOBS"
cat >"$work/pi-gen-config" <<CONFIG
IMG_NAME=lezerprint
RELEASE=bookworm
TARGET_HOSTNAME=printer
LOCALE_DEFAULT=en_GB.UTF-8
TIMEZONE_DEFAULT=Etc/UTC
# No ssh and no password: a shell is for those who ask for one in Raspberry Pi Imager.
ENABLE_SSH=0
FIRST_USER_NAME=pi
DEPLOY_DIR="$work/deploy"
WORK_DIR="$work/pi-gen-work"
STAGE_LIST="stage0 stage1 stage2 $here/stage-lezerprint"
export LEZERPRINT_WHEELHOUSE="$work/wheelhouse-arm64"
CONFIG
(cd "$pi_gen" && ./build.sh -c "$work/pi-gen-config")
echo "build.sh: the image is in $work/deploy:" && ls -l "$work/deploy"

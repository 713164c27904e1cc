#!/bin/sh
# The image's install recipe, run the way pi-gen runs it: the stage's host script with
# ROOTFS_DIR, then its chroot script fed to bash inside the root, with /proc, /sys and /dev
# mounted as pi-gen's on_chroot does. Run by tests/test_boot.py as:
#   unshare -m -- sh install.sh ROOT WHEELHOUSE PROJECT
set -eu
root=$1 wheels=$2 project=$3
stage="$project/image-build/stage-lezerprint/00-install"
(cd "$stage" && env ROOTFS_DIR="$root" LEZERPRINT_WHEELHOUSE="$wheels" bash -e ./00-run.sh)
mount -t proc proc "$root/proc"
mount -t sysfs sysfs "$root/sys"
mount --rbind /dev "$root/dev"
# A clean environment: nothing of the host's (pip settings, certificates, proxies) leaks in.
chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin /bin/bash -e <"$stage/01-run-chroot.sh"

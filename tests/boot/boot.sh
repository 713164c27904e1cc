#!/bin/sh
# Boot an installed root with systemd-nspawn on a private network, the card's boot partition
# bound at /boot/firmware; tests/boot/probe.py checks it from inside and powers it off.
# Run by tests/test_boot.py as: unshare -m -- sh boot.sh ROOT BOOT_PARTITION
set -eu
root=$1 boot=$2
# nspawn keeps state under /run/systemd/nspawn; a private tmpfs keeps it off the host.
mkdir -p /run/systemd/nspawn && mount -t tmpfs tmpfs /run/systemd/nspawn
timeout 400 systemd-nspawn --quiet --register=no --keep-unit --private-network \
    --bind="$boot:/boot/firmware" -D "$root" --boot </dev/null

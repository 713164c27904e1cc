#!/bin/bash -e
# pi-gen runs this on the build host, in this folder, with ROOTFS_DIR set (tests/test_boot.py
# runs it the same way on a debootstrapped Debian). It only places files; everything that
# runs inside the image is in 01-run-chroot.sh.
project="$(cd ../../.. && pwd)"
wheels="${LEZERPRINT_WHEELHOUSE:?LEZERPRINT_WHEELHOUSE: the folder image-build/wheelhouse.sh made}"
compgen -G "${wheels}/lezerprintd-*.whl" >/dev/null || {
	echo "00-run.sh: no lezerprintd wheel in ${wheels}" >&2
	exit 1
}

install -d -m 0755 "${ROOTFS_DIR}/tmp/lezerprint-wheelhouse"
install -m 0644 "${wheels}"/*.whl "${ROOTFS_DIR}/tmp/lezerprint-wheelhouse/"

install -D -m 0644 "${project}/systemd/lezerprintd.service" \
	"${ROOTFS_DIR}/etc/systemd/system/lezerprintd.service"
install -D -m 0644 "${project}/systemd/lezerprint-firstboot.service" \
	"${ROOTFS_DIR}/etc/systemd/system/lezerprint-firstboot.service"
install -D -m 0644 "${project}/udev/60-lezerprint.rules" \
	"${ROOTFS_DIR}/etc/udev/rules.d/60-lezerprint.rules"
install -D -m 0644 files/config.toml "${ROOTFS_DIR}/etc/lezerprint/config.toml"
install -D -m 0644 files/journald.conf "${ROOTFS_DIR}/etc/systemd/journald.conf.d/lezerprint.conf"

# The camera: Raspberry Pi OS finds a connected camera module with this line (its default;
# put back if a base image turned it off). An [all] section makes it apply to every model.
config_txt="${ROOTFS_DIR}/boot/firmware/config.txt"
if [ -f "${config_txt}" ] && ! grep -q '^camera_auto_detect=1' "${config_txt}"; then
	sed -i '/^camera_auto_detect=/d' "${config_txt}"
	printf '\n[all]\ncamera_auto_detect=1\n' >>"${config_txt}"
fi

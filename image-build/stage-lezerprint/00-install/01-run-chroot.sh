#!/bin/bash -e
# The appliance's install, inside the image: pi-gen feeds this to bash in the image's chroot,
# and tests/test_boot.py does the same in a debootstrapped Debian 12. The wheelhouse was put
# in /tmp/lezerprint-wheelhouse by 00-run.sh: pip never needs the network here, nor the build
# host's certificates or pip settings (hence env -i).
clean="env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 HOME=/root"

# The daemon's own user; gpio is Raspberry Pi OS's group for /dev/gpiochip* and gpiomem.
groupadd --force --system gpio
if ! id lezerprint >/dev/null 2>&1; then
	useradd --system --user-group --home-dir /var/lib/lezerprint --no-create-home \
		--shell /usr/sbin/nologin lezerprint
fi
usermod --append --groups dialout,video,gpio lezerprint

# System site packages: python3-picamera2 and python3-gpiozero come from the OS, built for
# its libcamera and GPIO libraries.
rm -rf /opt/lezerprint/venv
$clean python3 -m venv --system-site-packages /opt/lezerprint/venv
$clean /opt/lezerprint/venv/bin/pip install --quiet --no-index --no-cache-dir \
	--disable-pip-version-check --find-links /tmp/lezerprint-wheelhouse lezerprintd
rm -rf /tmp/lezerprint-wheelhouse
# Compile now, not on the card at first start as an unwritable user.
$clean /opt/lezerprint/venv/bin/python -m compileall -q /opt/lezerprint/venv/lib >/dev/null || true

# printer.local until the card's lezerprint.toml names it otherwise.
echo printer >/etc/hostname
if grep -q '^127\.0\.1\.1' /etc/hosts; then
	sed -i 's/^127\.0\.1\.1.*/127.0.1.1\tprinter/' /etc/hosts
else
	printf '127.0.1.1\tprinter\n' >>/etc/hosts
fi

systemctl enable lezerprintd.service lezerprint-firstboot.service avahi-daemon.service

# Nothing listens that the appliance does not need: the web server (the daemon) and mDNS
# (avahi). ssh stays off unless Raspberry Pi Imager's settings turn it on at first boot.
for unit in ssh.service ssh.socket rpcbind.service rpcbind.socket cups.service \
	cups-browsed.service; do
	if systemctl list-unit-files "${unit}" >/dev/null 2>&1; then
		systemctl disable "${unit}" >/dev/null 2>&1 || true
	fi
done
# The journal in RAM only (files/journald.conf): no log writes wearing the SD card.
rm -rf /var/log/journal

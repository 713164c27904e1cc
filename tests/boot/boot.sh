#!/bin/sh
# Install the daemon from the wheelhouse into a copy of the cached Debian root, then boot it
# with systemd-nspawn on a private network; tests/boot/probe.py checks it from inside.
# Run by tests/test_boot.py as: unshare -m -- sh boot.sh BASE ROOT WHEELHOUSE PROJECT
set -eu
base=$1 root=$2 wheels=$3 project=$4
# nspawn keeps state under /run/systemd/nspawn; a private tmpfs keeps it off the host.
mkdir -p /run/systemd/nspawn && mount -t tmpfs tmpfs /run/systemd/nspawn
nspawn="systemd-nspawn --quiet --register=no --keep-unit --private-network -D $root"
cp -a "$base/." "$root/"
mkdir -p "$root/wheelhouse" && cp "$wheels"/*.whl "$root/wheelhouse/"

# The install, inside the container (its own /proc and /dev), with a clean environment: no
# pip settings or certificates of the host leak in, and pip never touches the network.
$nspawn --setenv=PATH=/usr/sbin:/usr/bin:/sbin:/bin /bin/sh -euc '
        python3 -m venv /opt/lezerprint/venv
        env -i PATH=/usr/bin:/bin /opt/lezerprint/venv/bin/pip install --quiet --no-index \
            --find-links /wheelhouse lezerprintd
        groupadd --force --system gpio
        useradd --system --home-dir /var/lib/lezerprint --shell /usr/sbin/nologin \
            --groups dialout,video,gpio lezerprint
    '
install -m 0644 "$project/systemd/lezerprintd.service" "$root/etc/systemd/system/"
install -d -m 0755 "$root/etc/lezerprint"
mkdir -p "$root/etc/systemd/system/lezerprintd.service.d"
printf '[printer]\nport = "sim"\n[mdns]\nenabled = false\n' >"$root/etc/lezerprint/config.toml"
# A short watchdog, so the blocked loop is caught in seconds rather than 20.
printf '[Service]\nWatchdogSec=4\n' >"$root/etc/systemd/system/lezerprintd.service.d/test.conf"
install -m 0644 "$project/tests/boot/probe.py" "$root/usr/local/bin/boot-probe.py"
cat >"$root/etc/systemd/system/boot-probe.service" <<'UNIT'
[Unit]
Description=LezerPrint boot test probe
After=lezerprintd.service
[Service]
Type=oneshot
ExecStart=/usr/bin/python3 /usr/local/bin/boot-probe.py
[Install]
WantedBy=multi-user.target
UNIT
systemctl --quiet --root="$root" enable lezerprintd.service boot-probe.service
echo "printer" >"$root/etc/hostname"

timeout 240 $nspawn --boot </dev/null

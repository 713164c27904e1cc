#!/usr/bin/env bash
# LezerPrint from a checkout, on Debian 12 or Raspberry Pi OS (bookworm):
#
#   ./dev.sh run [serve options]   set up once, then run the appliance on http://127.0.0.1:8080
#                                  (a plugged-in printer if one is found, else the virtual one)
#   ./dev.sh test                  set up once, then run every check: ruff, mypy, the tests
#
# Set-up installs the Debian packages it needs (with sudo when not root) and a virtualenv
# in .venv, and redoes the virtualenv's packages only when pyproject.toml changes.
set -euo pipefail
cd "$(dirname "$0")"

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

# Debian packages missing from this machine, installed in one go.
need_debian_packages() {
    local missing=() package
    for package in "$@"; do
        dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" ||
            missing+=("$package")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        echo "dev.sh: installing Debian packages: ${missing[*]}" >&2
        as_root apt-get update -qq
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
}

need_python() {
    if ! command -v python3 >/dev/null || ! python3 -c 'import sys; assert sys.version_info >= (3, 11)' 2>/dev/null; then
        need_debian_packages python3
    fi
    # Debian's python3 has no venv/ensurepip until python3-venv is installed.
    if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
        need_debian_packages python3-venv
    fi
}

# .venv with the project installed (editable) and the given extras; $1 is "" or "[dev]".
need_venv() {
    local extras="$1" stamp=".venv/.lezerprint-installed" wanted
    need_python
    wanted="$(sha256sum pyproject.toml | cut -d' ' -f1) $extras"
    if [ -f "$stamp" ] && grep -qxF "$wanted" "$stamp"; then
        return
    fi
    # An older stamp with the dev extras also covers a plain run.
    if [ -z "$extras" ] && [ -f "$stamp" ] && grep -qxF "${wanted}[dev]" "$stamp"; then
        return
    fi
    [ -x .venv/bin/python ] || python3 -m venv .venv
    echo "dev.sh: installing Python packages into .venv" >&2
    .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip >/dev/null
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".$extras"
    echo "$wanted" >"$stamp"
}

run() {
    need_venv ""
    local printer=sim
    if compgen -G "/dev/lezerprint/*" >/dev/null || compgen -G "/dev/serial/by-id/*" >/dev/null ||
        compgen -G "/dev/ttyACM*" >/dev/null || compgen -G "/dev/ttyUSB*" >/dev/null; then
        printer=auto
    fi
    echo "dev.sh: printer: $printer; open http://127.0.0.1:8080 (Ctrl-C stops)" >&2
    # Announced on loopback only, like the address it listens on; --host 0.0.0.0 --mdns all
    # makes it printer.local on the LAN.
    exec .venv/bin/lezerprintd serve --printer "$printer" --host 127.0.0.1 --port 8080 \
        --data-dir .dev-data --mdns 127.0.0.1 "$@"
}

test_all() {
    need_venv "[dev]"
    # The unit tests ask systemd-analyze about systemd/lezerprintd.service, and the boot test
    # boots a debootstrapped Debian with systemd-nspawn.
    command -v systemd-analyze >/dev/null || need_debian_packages systemd
    need_debian_packages debootstrap systemd-container iproute2
    # Timelapses are made into MP4s with ffmpeg where it is installed; the tests make both.
    need_debian_packages ffmpeg
    # The web UI's tests run in Debian's Chromium (Playwright drives it; it downloads nothing).
    need_debian_packages chromium fonts-dejavu-core
    .venv/bin/ruff check .
    .venv/bin/ruff format --check .
    .venv/bin/mypy
    .venv/bin/python -m pytest -q "$@"
}

case "${1:-}" in
run) shift; run "$@" ;;
test) shift; test_all "$@" ;;
*)
    echo "usage: ./dev.sh run [serve options] | ./dev.sh test [pytest options]" >&2
    exit 2
    ;;
esac

#!/usr/bin/env bash
# Prepare a fresh Debian 12 host for stacklab: host packages (apt) and a virtualenv (pip).
# The venv is made from Debian's /usr/bin/python3 with system site packages, because python3-libvirt,
# python3-lxc, python3-rados and python3-rbd come only from Debian. Idempotent; safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  python3-venv python3-pip python3-libvirt python3-lxc python3-jinja2
  iproute2 iputils-ping openssh-client e2fsprogs genisoimage xorriso
  lxc mmdebstrap graphviz
  nftables  # nft -c checks the storage nodes' filter rules (tests/unit/test_node_firewall.py) against the real parser
  iptables  # its ebtables-nft: tests/integration/test_ebtables_among.py runs neutron's anti-spoofing rules on the host's kernel
  libvirt-daemon-system libvirt-clients qemu-system-x86 qemu-utils
  tempest python3-subunit python3-junitxml  # the tempest suite: Debian's tempest 33 (Zed) runs from the host against a lab
)

if [ "$(id -u)" -ne 0 ]; then
  echo "setup.sh: run as root (it installs host packages and stacklab creates bridges)" >&2
  exit 1
fi

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=600 update -q
  apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends "${missing[@]}"
fi

# The lxc package's own setting (fs.inotify.max_user_instances = 1024: every container's systemd holds inotify
# instances against root's budget, 128 by default) is applied at boot by systemd-sysctl; a host without systemd as
# PID 1 never applies it, and the second lab's containers die at boot with "Too many open files". Apply that file.
if [ -r /etc/sysctl.d/30-lxc-inotify.conf ]; then
  sysctl -q -p /etc/sysctl.d/30-lxc-inotify.conf || echo "setup.sh: could not apply 30-lxc-inotify.conf" >&2
fi

if [ ! -x .venv/bin/python ]; then
  /usr/bin/python3 -m venv --system-site-packages .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
# pyproject's SPDX `license` needs setuptools >= 77 to build (Debian 12's python3-setuptools is 66), also for
# the wheel tests that build with --no-build-isolation; setuptools validates the license with an installed
# packaging >= 24.2 when there is one (Debian 12's python3-packaging is 23.0)
.venv/bin/python -m pip install -q 'setuptools>=77' 'packaging>=24.2'
.venv/bin/python -m pip install -q -e '.[dev]' tox
echo "setup.sh: ready (.venv/bin/stacklab)"

#!/bin/sh
# Install the system packages the Ceph lab needs (python3-rados: the client load generator and the data
# writer); idempotent, runs apt-get update (first) only when something is missing.
set -eu

PACKAGES="ceph-mon ceph-mgr ceph-osd ceph-common python3-rados openssh-server prometheus-alertmanager"

missing=""
for pkg in $PACKAGES; do
    status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
    case "$status" in
        "install ok installed") ;;
        *) missing="$missing $pkg" ;;
    esac
done

if [ -z "$missing" ]; then
    echo "lab packages already installed"
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo -n"
else
    SUDO=""
fi

echo "installing:$missing"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
# shellcheck disable=SC2086
$SUDO apt-get install -y -q --no-install-recommends $missing

#!/bin/sh
# Installs the Debian packages kvfit needs to build and test, if any is missing.
set -e
PKGS="cmake g++ make pkg-config libpcre2-dev libcmocka-dev python3 python3-pip unzip libstb-dev mesa-vulkan-drivers libvulkan-dev glslc vulkan-validationlayers"
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "installing:$missing"
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO=sudo
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing

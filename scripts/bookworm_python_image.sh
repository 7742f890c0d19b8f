#!/usr/bin/env bash
# Make a stand-in for the Dockerfile's base image (python:3.11-slim-bookworm) from Debian
# bookworm packages, for building the image with buildah where no registry can be reached:
# debootstrap's minimal bookworm with python3 (3.11), python3-venv, python-is-python3 (the
# Dockerfile calls `python`), libpython3.11 (pyvoy's module, loaded into Envoy, needs the
# shared libpython that the python images have) and ca-certificates, committed to buildah's
# vfs store.
#
#   scripts/bookworm_python_image.sh [IMAGE]    (default localhost/bookworm-python:3.11)
#
# Prints the image's name; when the image is already there, only that. Needs root, buildah,
# debootstrap and a Debian mirror (MIRROR, default http://deb.debian.org/debian).
set -euo pipefail
image=${1:-localhost/bookworm-python:3.11}
mirror=${MIRROR:-http://deb.debian.org/debian}
buildah=(buildah --storage-driver vfs)

if ! "${buildah[@]}" inspect --type image "$image" >/dev/null 2>&1; then
    rootfs=$(mktemp -d)
    container=
    trap 'rm -rf "$rootfs"; [ -z "$container" ] || "${buildah[@]}" rm "$container" >/dev/null' EXIT
    debootstrap --variant=minbase \
        --include=python3,python3-venv,python-is-python3,libpython3.11,ca-certificates \
        bookworm "$rootfs" "$mirror" >&2
    rm -f "$rootfs"/var/cache/apt/archives/*.deb
    container=$("${buildah[@]}" from scratch)
    # cp -a keeps owners and modes, which `buildah copy` would reset.
    cp -a "$rootfs/." "$("${buildah[@]}" mount "$container")/"
    "${buildah[@]}" umount "$container" >/dev/null
    # PIP_CERT: pip in a virtualenv trusts the system's CA bundle, as Debian's own pip does,
    # rather than the bundle it carries.
    "${buildah[@]}" config \
        --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        --env LANG=C.UTF-8 \
        --env PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
        "$container"
    "${buildah[@]}" commit --quiet "$container" "$image" >/dev/null
fi
echo "$image"

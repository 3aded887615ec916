# Sourced by scripts/install-deps.sh and scripts/package.sh: Debian packages installed when
# missing, as root or with sudo.

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# apt_install_missing LABEL PACKAGE...: installs those of the packages that are not installed,
# and sets apt_installed to 1 when it installed some, else 0. Call it as a plain command (not
# in a condition), so that `set -e` stops the script when apt-get fails.
apt_install_missing() {
  local label=$1 p
  shift
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  apt_installed=0
  [ ${#missing[@]} -gt 0 ] || return 0
  apt_installed=1
  echo "$label: installing ${missing[*]}"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
}

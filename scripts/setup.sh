#!/usr/bin/env bash
# Installs what `npm start` (and, with --test, `npm test` / `npm run bench`) needs.
# Idempotent and quick when everything is present: it only calls apt-get or npm for what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

# command -> Debian package
runtime=(dbus-daemon:dbus nbdkit:nbdkit nbdinfo:libnbd-bin mount.cifs:cifs-utils)
testing=(nbdcopy:libnbd-bin qemu-img:qemu-utils qemu-nbd:qemu-utils nbd-client:nbd-client
  chromium:chromium smbd:samba smbclient:smbclient websockify:websockify redfishtool:redfishtool
  openssl:openssl curl:curl nginx:nginx xmllint:libxml2-utils
  qemu-system-x86_64:qemu-system-x86 busybox:busybox-static cpio:cpio depmod:kmod
  systemd-analyze:systemd dbus-send:dbus setpriv:util-linux ansible:ansible xorriso:xorriso)
wanted=("${runtime[@]}")
[[ "${1:-}" == "--test" ]] && wanted+=("${testing[@]}")

missing=()
for entry in "${wanted[@]}"; do
  cmd=${entry%%:*} pkg=${entry##*:}
  if ! command -v "$cmd" >/dev/null 2>&1 && [[ ! -x "/usr/sbin/$cmd" ]]; then
    [[ " ${missing[*]} " == *" $pkg "* ]] || missing+=("$pkg")
  fi
done
# Packages with no command to look for (libraries, GRUB's BIOS modules for the test ISO), asked of dpkg.
libraries=(libsmbclient)
# The Python clients the field uses, and what the fetched Tacklebox snapshot imports (python-redfish-library).
[[ "${1:-}" == "--test" ]] && libraries+=(libnss-wrapper python3-sushy python3-requests-toolbelt
  python3-requests-unixsocket python3-xlsxwriter grub-pc-bin)
for pkg in "${libraries[@]}"; do
  [[ $(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null) == "install ok installed" ]] || missing+=("$pkg")
done
# Debian's nbdkit package carries the curl plugin (https://); the python plugin (the userspace smb://
# client) is a package of its own.
if ! command -v nbdkit >/dev/null 2>&1 || ! nbdkit python --version >/dev/null 2>&1; then
  missing+=(nbdkit-plugin-python)
fi

if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "vmedia setup: missing Debian packages: ${missing[*]} (run as root or install them)" >&2
    exit 1
  fi
  echo "vmedia setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# npm dependencies: reinstall only when the lock file changed since the last install.
if [[ ! -f node_modules/.package-lock.json || package-lock.json -nt node_modules/.package-lock.json ]]; then
  echo "vmedia setup: installing npm packages"
  npm ci --no-audit --no-fund --loglevel=error
fi

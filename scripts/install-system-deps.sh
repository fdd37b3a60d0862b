#!/usr/bin/env bash
# Installs the real servers and clients the tests run against, only those that are missing.
# As root with apt-get (CI, a fresh machine) it installs them; otherwise it names what is missing.
# Recommended packages are kept: that is the set the suite was verified with (Chromium needs its fonts).
set -euo pipefail

declare -A need=(
  [sshd]=openssh-server [ssh-keygen]=openssh-client
  [nsd]=nsd [knotd]=knot [knotc]=knot [unbound]=unbound [dig]=dnsutils
  [nginx]=nginx-light [haproxy]=haproxy [socat]=socat [wrk]=wrk [curl]=curl
  [openssl]=openssl [chromium]=chromium
  [ps]=procps [prlimit]=util-linux [chattr]=e2fsprogs  # step lifetime, fd-limit and journal-fault tests
)
missing=()
for bin in "${!need[@]}"; do
  command -v "$bin" >/dev/null 2>&1 || [ -x "/usr/sbin/$bin" ] || missing+=("${need[$bin]}")
done
[ ${#missing[@]} -eq 0 ] && exit 0
mapfile -t pkgs < <(printf '%s\n' "${missing[@]}" | sort -u)
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing system packages: ${pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${pkgs[@]}" >/dev/null
else
  echo "missing system packages (install them, or run as root): ${pkgs[*]}" >&2
fi

#!/usr/bin/env bash
# Installs the real servers and programs that some tests start: PostgreSQL (the store's tests run on it as well
# as on SQLite) and Debian's Chromium (the studio's browser tests drive it with Playwright, which must never
# download a browser of its own), Debian's docker.io and mmdebstrap (the container tests run a real engine on an
# image tiffin builds itself from Debian's packages: no image registry is needed). Where it cannot install (not
# root, no apt-get) it says so, and those tests skip with a reason.
set -u
missing=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
[ -x /usr/bin/chromium ] || missing+=(chromium)
[ -x /usr/sbin/dockerd ] || missing+=(docker.io)
command -v mmdebstrap >/dev/null 2>&1 || missing+=(mmdebstrap)
if [ ${#missing[@]} = 0 ]; then
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing ${missing[*]} for the store and studio tests (apt-get)..."
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq || echo "warning: apt-get update failed; trying the install all the same"
  for package in "${missing[@]}"; do  # one at a time: a package that cannot install does not stop the other
    apt-get install -y -qq --no-install-recommends "$package" >/dev/null \
      || echo "warning: could not install $package; the tests that need it will be skipped"
  done
else
  echo "note: ${missing[*]} not installed and this is not a root shell with apt-get; the tests that need them will be skipped"
fi
exit 0

#!/usr/bin/env bash
# Installs the real servers that some tests start: PostgreSQL (the store's tests run on it as well as
# on SQLite). Where it cannot install (not root, no apt-get) it says so, and those tests skip with a reason.
set -u
if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing PostgreSQL for the store tests (apt-get)..."
  export DEBIAN_FRONTEND=noninteractive
  (apt-get update -qq && apt-get install -y -qq --no-install-recommends postgresql >/dev/null) \
    || echo "warning: could not install PostgreSQL; its store tests will be skipped"
else
  echo "note: PostgreSQL is not installed and this is not a root shell with apt-get; its store tests will be skipped"
fi
exit 0

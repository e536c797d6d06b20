#!/usr/bin/env bash
# The quickstart, the way Azure ML's examples deploy an endpoint (`az ml` → `tiffin`):
# serve tiffin locally, create my-endpoint with blue (90%) and green (10%), print its URL, a key and a
# curl line, then keep serving until Ctrl-C. Run from anywhere; TIFFIN_HOME (default ~/.tiffin) holds state.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bin="${TIFFIN_BIN:-$here/../../.venv/bin}"
tiffin="$bin/tiffin"
export TIFFIN_URL="${TIFFIN_URL:-http://127.0.0.1:${TIFFIN_PORT:-7700}}"
port="${TIFFIN_URL##*:}"

"$bin/python" "$here/train.py"

log="$(mktemp -t tiffin-serve.XXXXXX.log)"
"$tiffin" serve --port "$port" >"$log" 2>&1 &
server=$!
trap 'kill -TERM $server 2>/dev/null; wait $server 2>/dev/null' EXIT INT TERM
for _ in $(seq 1 300); do
  grep -q "ready" "$log" && break
  kill -0 $server 2>/dev/null || { cat "$log"; exit 1; }
  sleep 0.1
done
grep -v "^$" "$log" | grep -v ready || true

endpoint=my-endpoint
# A second run finds the endpoint in the store: update it instead of creating it, as a script for
# Azure would (`az ml ... create` refuses what exists).
verb() { "$tiffin" "$1" show "${@:2}" >/dev/null 2>&1 && echo update || echo create; }
"$tiffin" online-endpoint "$(verb online-endpoint -n "$endpoint")" -f "$here/endpoint.yml" >/dev/null
"$tiffin" online-deployment "$(verb online-deployment -n blue -e "$endpoint")" -f "$here/blue-deployment.yml" --all-traffic >/dev/null
"$tiffin" online-deployment "$(verb online-deployment -n green -e "$endpoint")" -f "$here/green-deployment.yml" >/dev/null
"$tiffin" online-endpoint update -n "$endpoint" --traffic "blue=90 green=10" >/dev/null

scoring_uri=$("$tiffin" online-endpoint show -n "$endpoint" -o tsv --query scoring_uri)
key=$("$tiffin" online-endpoint get-credentials -n "$endpoint" -o tsv --query primaryKey)
cat <<MSG

tiffin is serving $endpoint (blue 90% / green 10%) on SQLite in ${TIFFIN_HOME:-~/.tiffin}.
  scoring URL: $scoring_uri
  key:         $key
  try it:      curl -s -H "Authorization: Bearer $key" -H "Content-Type: application/json" -d @$here/sample-request.json $scoring_uri
  admin REST:  $TIFFIN_URL/api/openapi.json   (admin token in ${TIFFIN_HOME:-~/.tiffin}/admin-token)
Ctrl-C stops the server and every deployment it started.
MSG
wait $server

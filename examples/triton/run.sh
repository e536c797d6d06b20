#!/usr/bin/env bash
# One endpoint, two model servers: blue is an MLflow model (no scoring script), green the same model as a
# Triton Python-backend model served by a real tritonserver. Traffic 50/50; the same request through
# /score and through tritonclient (V2) gets the same predictions from either. `az ml` → `tiffin` throughout.
# Keeps serving until Ctrl-C. TIFFIN_HOME (default ~/.tiffin) holds state.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bin="${TIFFIN_BIN:-$here/../../.venv/bin}"
tiffin="$bin/tiffin"
export TIFFIN_URL="${TIFFIN_URL:-http://127.0.0.1:${TIFFIN_PORT:-7700}}"
port="${TIFFIN_URL##*:}"

"$bin/python" "$here/train.py"
# NVIDIA's tritonserver into $TIFFIN_HOME/triton, once (about 250 MB), unless one is named already.
[ -n "${TIFFIN_TRITONSERVER:-}" ] || "$tiffin" triton install >/dev/null

log="$(mktemp -t tiffin-serve.XXXXXX.log)"
"$tiffin" serve --port "$port" >"$log" 2>&1 &
server=$!
trap 'kill -TERM $server 2>/dev/null; wait $server 2>/dev/null' EXIT INT TERM
for _ in $(seq 1 300); do
  grep -q "ready" "$log" && break
  kill -0 $server 2>/dev/null || { cat "$log"; exit 1; }
  sleep 0.1
done

endpoint=diabetes
verb() { "$tiffin" "$1" show "${@:2}" >/dev/null 2>&1 && echo update || echo create; }
"$tiffin" online-endpoint "$(verb online-endpoint -n "$endpoint")" -f "$here/endpoint.yml" >/dev/null
"$tiffin" online-deployment "$(verb online-deployment -n blue -e "$endpoint")" -f "$here/blue-deployment.yml" --all-traffic >/dev/null
"$tiffin" online-deployment "$(verb online-deployment -n green -e "$endpoint")" -f "$here/green-deployment.yml" >/dev/null
"$tiffin" online-endpoint update -n "$endpoint" --traffic "blue=50 green=50" >/dev/null

scoring_uri=$("$tiffin" online-endpoint show -n "$endpoint" -o tsv --query scoring_uri)
key=$("$tiffin" online-endpoint get-credentials -n "$endpoint" -o tsv --query primaryKey)
for deployment in blue green; do
  # Assigned first, so that a failing call stops the script (set -e) instead of printing nothing.
  score=$("$tiffin" online-endpoint invoke -n "$endpoint" --deployment-name $deployment --request-file "$here/sample-request.json")
  v2=$("$bin/python" "$here/infer_v2.py" --base_url="$scoring_uri" --token="$key" --deployment $deployment | tail -n 1)
  echo "/score, $deployment: $score"
  echo "V2,     $deployment: $v2"
done
cat <<MSG

tiffin is serving $endpoint (blue: MLflow 50% / green: Triton 50%).
  scoring URL: $scoring_uri
  key:         $key
  try it:      curl -s -H "Authorization: Bearer $key" -H "Content-Type: application/json" -d @$here/sample-request.json $scoring_uri
  tritonclient: $bin/python $here/infer_v2.py --base_url=$scoring_uri --token=$key
Ctrl-C stops the server, its deployments and tritonserver.
MSG
wait $server

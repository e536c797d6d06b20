#!/usr/bin/env bash
# Batch scoring as Azure's batch-endpoint scripts do it (`az ml` → `tiffin`): a batch endpoint with an MLflow
# deployment (the default) and a scoring-script deployment; a job on each, followed to the end, outputs
# downloaded. Stops the server when done. TIFFIN_HOME (default ~/.tiffin) holds state.
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

endpoint=diabetes-batch
verb() { "$tiffin" "$1" show "${@:2}" >/dev/null 2>&1 && echo update || echo create; }
"$tiffin" batch-endpoint "$(verb batch-endpoint -n "$endpoint")" -f "$here/endpoint.yml" >/dev/null
"$tiffin" batch-deployment "$(verb batch-deployment -n mlflow -e "$endpoint")" -f "$here/deployment-mlflow.yml" --set-default >/dev/null
"$tiffin" batch-deployment "$(verb batch-deployment -n script -e "$endpoint")" -f "$here/deployment-script.yml" >/dev/null

for deployment in mlflow script; do
  job=$("$tiffin" batch-endpoint invoke -n "$endpoint" --deployment-name $deployment --input "$here/data" -o tsv --query name)
  echo "job $job on deployment $deployment"
  "$tiffin" job stream -n "$job" >/dev/null
  "$tiffin" job show -n "$job" --query "{status: status, progress: progress}" -o json
  "$tiffin" job download -n "$job" --output-name score --download-path "$here/out/$deployment"
  echo "rows in out/$deployment/named-outputs/score/predictions.csv: $(wc -l < "$here/out/$deployment/named-outputs/score/predictions.csv")"
done
echo "done: outputs in $here/out/"
trap - EXIT INT TERM
kill -TERM $server && wait $server || true

#!/usr/bin/env bash
# Azure ML's "safe rollout" walkthrough (azureml-examples cli/deploy-safe-rollout-online-endpoints.sh),
# command for command, with `az ml` replaced by `tiffin`. Needs a running `tiffin serve` (TIFFIN_URL).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
quickstart="$here/../quickstart"
tiffin="${TIFFIN_BIN:-$here/../../.venv/bin}/tiffin"
ENDPOINT_NAME="${ENDPOINT_NAME:-rollout-$RANDOM}"

"${TIFFIN_BIN:-$here/../../.venv/bin}/python" "$quickstart/train.py" >/dev/null

# <create_endpoint>
"$tiffin" online-endpoint create --name "$ENDPOINT_NAME" -f "$quickstart/endpoint.yml" >/dev/null
# <create_blue>
"$tiffin" online-deployment create --name blue --endpoint-name "$ENDPOINT_NAME" -f "$quickstart/blue-deployment.yml" --all-traffic >/dev/null
# <test_blue>
echo "traffic: $("$tiffin" online-endpoint show -n "$ENDPOINT_NAME" --query traffic -o json | tr -d ' \n')"
"$tiffin" online-endpoint invoke --name "$ENDPOINT_NAME" --request-file "$quickstart/sample-request.json"; echo
# <scale_blue>
"$tiffin" online-deployment update --name blue --endpoint-name "$ENDPOINT_NAME" --set instance_count=2 >/dev/null
# <get_logs>
"$tiffin" online-deployment get-logs --name blue --endpoint "$ENDPOINT_NAME" --lines 5
# <create_green>
"$tiffin" online-deployment create --name green --endpoint "$ENDPOINT_NAME" -f "$quickstart/green-deployment.yml" >/dev/null
# <test_green>
"$tiffin" online-endpoint invoke --name "$ENDPOINT_NAME" --deployment-name green --request-file "$quickstart/sample-request.json"; echo
# <green_mirror_traffic>: green sees 10% of live requests as shadow copies; callers get blue's answers.
"$tiffin" online-endpoint update --name "$ENDPOINT_NAME" --mirror-traffic "green=10" >/dev/null
for i in $(seq 1 20); do "$tiffin" online-endpoint invoke --name "$ENDPOINT_NAME" --request-file "$quickstart/sample-request.json" >/dev/null; done
"$tiffin" online-endpoint update --name "$ENDPOINT_NAME" --mirror-traffic "green=0" >/dev/null
# <blue_90_green_10>
"$tiffin" online-endpoint update --name "$ENDPOINT_NAME" --traffic "blue=90 green=10" >/dev/null
# <blue_0_green_100>
"$tiffin" online-endpoint update --name "$ENDPOINT_NAME" --traffic "blue=0 green=100" >/dev/null
echo "traffic: $("$tiffin" online-endpoint show -n "$ENDPOINT_NAME" --query traffic -o json | tr -d ' \n')"
# <delete_blue>
"$tiffin" online-deployment delete --name blue --endpoint "$ENDPOINT_NAME" --yes --no-wait
# <delete_endpoint>
"$tiffin" online-endpoint delete --name "$ENDPOINT_NAME" --yes --no-wait
echo "rollout of $ENDPOINT_NAME done"

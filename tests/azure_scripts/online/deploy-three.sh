set -e

# <set_variables>
export ENDPOINT_NAME="<YOUR_ENDPOINT_NAME>"
# </set_variables>

ENDPOINT_SUFIX=$(cat /dev/urandom | tr -dc 'a-z0-9' | fold -w ${1:-5} | head -n 1)
ENDPOINT_NAME="scaler-$ENDPOINT_SUFIX"

# <register_models>
for N in 1 2 3; do
  echo "{\"scale\": $N}" > model/weights.json
  tiffin model create -f model.yml --set version=$N
done
MODEL_VERSION=$(tiffin model show --name scaler --label latest --query version -o tsv)
echo "latest model version: $MODEL_VERSION"
# </register_models>

# <create_endpoint>
tiffin online-endpoint create --name $ENDPOINT_NAME
# </create_endpoint>

# <create_deployments>
for N in 1 2 3; do
  tiffin online-deployment create -f deployment.yml --endpoint-name $ENDPOINT_NAME --set name=v$N --set model=azureml:scaler:$N
done
tiffin online-endpoint update --name $ENDPOINT_NAME --traffic "v1=100"
# </create_deployments>

# The registered copies are what the deployments serve: the source folder may go.
rm -rf model

# <test_deployments>
for N in 1 2 3; do
  echo "v$N: $(tiffin online-endpoint invoke --name $ENDPOINT_NAME --deployment-name v$N --request-file sample-request.json)"
done
# </test_deployments>

# <show_model_id>
MODEL_ID=$(tiffin model show --name scaler --version 2 --query id -o tsv)
tiffin online-deployment show --name v2 --endpoint-name $ENDPOINT_NAME --query model -o tsv
echo "model id: $MODEL_ID"
# </show_model_id>

# <delete_endpoint>
tiffin online-endpoint delete --name $ENDPOINT_NAME --yes
# </delete_endpoint>

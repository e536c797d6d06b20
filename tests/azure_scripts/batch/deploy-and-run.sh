set -e

# <set_variables>
export ENDPOINT_NAME="<YOUR_ENDPOINT_NAME>"
# </set_variables>

ENDPOINT_SUFIX=$(cat /dev/urandom | tr -dc 'a-z0-9' | fold -w ${1:-5} | head -n 1)
ENDPOINT_NAME="diabetes-$ENDPOINT_SUFIX"

# <register_model>
MODEL_NAME='diabetes-mlflow'
tiffin model create --name $MODEL_NAME --type "mlflow_model" --path "model"
# </register_model>

# <register_dataset>
tiffin data create -f diabetes-dataset-unlabeled.yml
# </register_dataset>

echo "Creating compute"
# <create_compute>
tiffin compute create -n batch-cluster --type amlcompute --min-instances 0 --max-instances 5
# </create_compute>

echo "Creating batch endpoint $ENDPOINT_NAME"
# <create_batch_endpoint>
tiffin batch-endpoint create -n $ENDPOINT_NAME -f endpoint.yml
# </create_batch_endpoint>

# <create_batch_deployment_set_default>
tiffin batch-deployment create --file deployment-simple/deployment.yml --endpoint-name $ENDPOINT_NAME --set-default
# </create_batch_deployment_set_default>

DEPLOYMENT_NAME="classifier-mlflow"
# <check_batch_deployment_detail>
tiffin batch-deployment show --name $DEPLOYMENT_NAME --endpoint-name $ENDPOINT_NAME --query model -o tsv
# </check_batch_deployment_detail>

echo "Invoking batch endpoint"
# <start_batch_scoring_job>
JOB_NAME=$(tiffin batch-endpoint invoke --name $ENDPOINT_NAME --input azureml:diabetes-unlabeled@latest --query name -o tsv)
# </start_batch_scoring_job>

echo "Stream job logs to console"
# <stream_job_logs_to_console>
tiffin job stream -n $JOB_NAME
# </stream_job_logs_to_console>

# <check_job_status>
STATUS=$(tiffin job show -n $JOB_NAME --query status -o tsv)
echo $STATUS
if [[ $STATUS == "Completed" ]]
then
  echo "Job completed"
elif [[ $STATUS ==  "Failed" ]]
then
  echo "Job failed"
  exit 1
else
  echo "Job status not failed or completed"
  exit 2
fi
# </check_job_status>

echo "Download scores to local path"
# <download_scores>
tiffin job download --name $JOB_NAME --output-name score --download-path ./
# </download_scores>

echo "Delete resources"
# <delete_endpoint>
tiffin batch-endpoint delete --name $ENDPOINT_NAME --yes
# </delete_endpoint>

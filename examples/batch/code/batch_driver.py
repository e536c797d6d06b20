# Azure ML's batch driver for an MLflow model, as Azure's docs give it ("Customizing MLflow models
# deployments with a scoring script"), unmodified.
import os
import mlflow
import pandas as pd

def init():
    global model

    # AZUREML_MODEL_DIR is an environment variable created during deployment
    # It is the path to the model folder
    model_path = os.path.join(os.environ["AZUREML_MODEL_DIR"], "model")
    model = mlflow.pyfunc.load_model(model_path)

def run(mini_batch):
    results = pd.DataFrame(columns=['file', 'predictions'])

    for file_path in mini_batch:
        data = pd.read_csv(file_path)
        pred = model.predict(data)

        df = pd.DataFrame(pred, columns=['predictions'])
        df['file'] = os.path.basename(file_path)
        results = pd.concat([results, df])

    return results

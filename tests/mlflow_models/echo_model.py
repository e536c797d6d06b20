"""A custom pyfunc model logged "from code" (MLflow's models-from-code), used by tests/test_mlflow.py."""

import mlflow
import pandas as pd


class EchoModel(mlflow.pyfunc.PythonModel):
    """Doubles column x and echoes the label: enough to see a custom pyfunc served end to end."""

    def predict(self, context, model_input: pd.DataFrame, params=None):
        return pd.DataFrame({"double": model_input["x"] * 2, "label": model_input["label"]})


mlflow.models.set_model(EchoModel())

"""Save an MLflow model of an xgboost regressor with this interpreter's mlflow and xgboost.

    ENV/bin/python log_model.py OUT_FOLDER

MLflow writes the model's own environment beside it (python_env.yaml, requirements.txt, conda.yaml), as
``mlflow.xgboost.log_model`` does in a run. Prints, as JSON, the versions used, three input rows and what the
model predicts for them.
"""

import json
import platform
import sys

import mlflow
import numpy as np
import pandas as pd
import xgboost
from mlflow.models import infer_signature

out = sys.argv[1]
x = pd.DataFrame({"a": np.arange(20, dtype="float64"), "b": np.arange(20, dtype="float64") % 3})
y = x["a"] * 2 + x["b"]
model = xgboost.XGBRegressor(n_estimators=20, max_depth=3).fit(x, y)
mlflow.xgboost.save_model(model, out, signature=infer_signature(x, model.predict(x)))
rows = x.head(3)
print(
    json.dumps(
        {
            "xgboost": xgboost.__version__,
            "mlflow": mlflow.__version__,
            "python": platform.python_version(),
            "rows": rows.to_dict(orient="records"),
            "expected": model.predict(rows).tolist(),
        }
    )
)

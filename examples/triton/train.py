"""Train the example's model once and write it in the two formats its deployments serve.

* ``model/``: an MLflow model (scikit-learn Ridge on the diabetes data bundled with scikit-learn, with a
  signature), served by the blue deployment with no scoring script (``type: mlflow_model``);
* ``models/diabetes/1/weights.json``: the same coefficients for the Triton Python-backend model in the
  ``models/`` repository, served by the green deployment (``type: triton_model``).

    python train.py [OUT_DIR]      # default: next to this file
"""

import json
import shutil
import sys
from pathlib import Path

import mlflow.sklearn
from mlflow.models import infer_signature
from sklearn.datasets import load_diabetes
from sklearn.linear_model import Ridge

here = Path(__file__).resolve().parent
out = Path(sys.argv[1]).resolve() if len(sys.argv) > 1 else here
if out != here:  # the Triton repository's config and code go along
    shutil.copytree(here / "models", out / "models", dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
x, y = load_diabetes(return_X_y=True, as_frame=True)
model = Ridge(alpha=0.5).fit(x, y)

target = out / "model"
shutil.rmtree(target, ignore_errors=True)
mlflow.sklearn.save_model(model, target, signature=infer_signature(x, model.predict(x)))

weights = {"columns": list(x.columns), "coef": model.coef_.tolist(), "intercept": float(model.intercept_)}
(out / "models" / "diabetes" / "1").mkdir(parents=True, exist_ok=True)
(out / "models" / "diabetes" / "1" / "weights.json").write_text(json.dumps(weights, indent=1) + "\n")
print(f"wrote {target} and {out / 'models/diabetes/1/weights.json'}")

"""Train the example's model and write its input data.

* ``model/``: an MLflow model (scikit-learn Ridge on the diabetes data bundled with scikit-learn, with a
  signature);
* ``data/``: ``--files`` CSV files of unlabeled rows to score (default 8 files of 500 rows).

    python train.py [--files 8] [--rows 500]
"""

import argparse
import shutil
from pathlib import Path

import mlflow.sklearn
from mlflow.models import infer_signature
from sklearn.datasets import load_diabetes
from sklearn.linear_model import Ridge

parser = argparse.ArgumentParser()
parser.add_argument("--files", type=int, default=8)
parser.add_argument("--rows", type=int, default=500)
args = parser.parse_args()

here = Path(__file__).resolve().parent
x, y = load_diabetes(return_X_y=True, as_frame=True)
model = Ridge(alpha=0.5).fit(x, y)
shutil.rmtree(here / "model", ignore_errors=True)
mlflow.sklearn.save_model(model, here / "model", signature=infer_signature(x, model.predict(x)))

data = here / "data"
shutil.rmtree(data, ignore_errors=True)
data.mkdir()
for i in range(args.files):
    x.sample(args.rows, replace=True, random_state=i).to_csv(data / f"diabetes-unlabeled-{i}.csv", index=False)
print(f"wrote {here / 'model'} and {args.files} files of {args.rows} rows in {data}")

"""Train the quickstart's model: a Ridge regression on scikit-learn's bundled diabetes data.

Azure's `model-1` sample ships a pickled `sklearn_regression_model.pkl`; pickles only load on the
scikit-learn version that wrote them, so tiffin's example trains its own at set-up time instead.
Usage: python train.py [OUTPUT_DIR]
With no argument it writes both deployments' models next to this file: model/ for blue (alpha=1.0) and
model-2/model/ for green (alpha=0.1); each deployment's model.path points at one of them, so score.py
finds $AZUREML_MODEL_DIR/model/sklearn_regression_model.pkl in both.
"""

import sys
from pathlib import Path

import joblib
from sklearn.datasets import load_diabetes
from sklearn.linear_model import Ridge


def train(out: Path, alpha: float) -> None:
    out.mkdir(parents=True, exist_ok=True)
    x, y = load_diabetes(return_X_y=True)
    joblib.dump(Ridge(alpha=alpha).fit(x, y), out / "sklearn_regression_model.pkl")
    print(f"wrote {out / 'sklearn_regression_model.pkl'}")


def main() -> None:
    if len(sys.argv) > 1:
        train(Path(sys.argv[1]), alpha=1.0)
        return
    here = Path(__file__).parent
    train(here / "model", alpha=1.0)
    # model-2 is a folder holding model/, as Azure lays out a model registered from a folder "model".
    train(here / "model-2" / "model", alpha=0.1)


if __name__ == "__main__":
    main()

"""Train the quickstart's model: a Ridge regression on scikit-learn's bundled diabetes data.

Azure's `model-1` sample ships a pickled `sklearn_regression_model.pkl`; pickles only load on the
scikit-learn version that wrote them, so tiffin's example trains its own at set-up time instead.
Usage: python train.py [OUTPUT_DIR]   (default: model/ next to this file)
"""

import sys
from pathlib import Path

import joblib
from sklearn.datasets import load_diabetes
from sklearn.linear_model import Ridge


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "model"
    out.mkdir(parents=True, exist_ok=True)
    x, y = load_diabetes(return_X_y=True)
    model = Ridge(alpha=1.0).fit(x, y)
    joblib.dump(model, out / "sklearn_regression_model.pkl")
    print(f"wrote {out / 'sklearn_regression_model.pkl'}")


if __name__ == "__main__":
    main()

"""Fit a small tree regressor and pickle it with joblib under this interpreter's scikit-learn.

    ENV/bin/python train.py OUT.pkl SCALE      (predictions: SCALE * 10 * (x + 1) at x = 0, 1, 2, 3)

A tree, not a linear model: its pickled node array changed layout in scikit-learn 1.3, so a 1.2 pickle does
not load under a current scikit-learn (as in Azure's own samples), which is the point of a per-deployment
environment.
"""

import json
import platform
import sys

import joblib
import sklearn
from sklearn.tree import DecisionTreeRegressor

out, scale = sys.argv[1], float(sys.argv[2])
x = [[0.0], [1.0], [2.0], [3.0]]
y = [scale * 10 * (i + 1) for i in range(4)]
joblib.dump(DecisionTreeRegressor(random_state=0).fit(x, y), out)
print(json.dumps({"sklearn": sklearn.__version__, "python": platform.python_version()}))

import json
import logging
import os
import platform

import joblib
import numpy
import sklearn


def init():
    global model
    # AZUREML_MODEL_DIR holds the registered file as registered: model.pkl.
    model = joblib.load(os.path.join(os.getenv("AZUREML_MODEL_DIR"), "model.pkl"))
    logging.info("Init complete")


def run(raw_data):
    data = numpy.array(json.loads(raw_data)["data"])
    return {
        "predictions": model.predict(data).tolist(),
        "sklearn": sklearn.__version__,
        "python": platform.python_version(),
    }

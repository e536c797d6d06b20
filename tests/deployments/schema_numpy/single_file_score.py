import json
import os


def init():
    global scale
    # A model registered from one file appears directly under AZUREML_MODEL_DIR.
    with open(os.path.join(os.environ["AZUREML_MODEL_DIR"], "weights.json")) as f:
        scale = json.load(f)["scale"]


def run(data):
    return {"scale": scale, "listing": sorted(os.listdir(os.environ["AZUREML_MODEL_DIR"]))}

"""Call the endpoint with tritonclient, as Azure's Triton samples do (the V2 model name is the endpoint's).

    python infer_v2.py --base_url=SCORING_URI --token=KEY [--deployment blue|green]

(``--token=KEY`` with the ``=``: a key may start with '-', which would otherwise read as an option.)
"""

import argparse
import json
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import tritonclient.http as tritonhttpclient

parser = argparse.ArgumentParser()
parser.add_argument("--base_url", required=True, help="the endpoint's scoring URI")
parser.add_argument("--token", required=True, help="a key or token of the endpoint")
parser.add_argument("--deployment", default=None)
args = parser.parse_args()

# tritonclient wants host:port/path without the scheme; the model is served under the endpoint's URL.
parts = urlsplit(args.base_url)
base, model_name = parts.path.rsplit("/", 1)[0], parts.path.rstrip("/").split("/")[-2]
client = tritonhttpclient.InferenceServerClient(url=parts.netloc + base)
headers = {"Authorization": f"Bearer {args.token}"}
if args.deployment:
    headers["azureml-model-deployment"] = args.deployment

print("Is server ready -", client.is_server_ready(headers=headers))
print("Is model ready -", client.is_model_ready(model_name, headers=headers))

request = json.loads((Path(__file__).parent / "sample-request.json").read_text())["inputs"]
inputs = []
for name, values in request.items():
    tensor = tritonhttpclient.InferInput(name, [len(values)], "FP64")
    tensor.set_data_from_numpy(np.asarray(values, dtype=np.float64))
    inputs.append(tensor)
result = client.infer(model_name, inputs, outputs=[tritonhttpclient.InferRequestedOutput("predictions")], headers=headers)
print("answered by", result.get_response().get("model_name"), "-", json.dumps(result.as_numpy("predictions").tolist()))

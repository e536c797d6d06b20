"""A Triton Python-backend model: the diabetes Ridge regression, one FP64 input tensor per column."""

import json
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        weights = json.loads((Path(__file__).parent / "weights.json").read_text())
        self.columns = weights["columns"]
        self.coef = np.asarray(weights["coef"], dtype=np.float64)
        self.intercept = weights["intercept"]

    def execute(self, requests):
        responses = []
        for request in requests:
            x = np.stack([pb_utils.get_input_tensor_by_name(request, c).as_numpy() for c in self.columns], axis=-1)
            predictions = x @ self.coef + self.intercept
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("predictions", predictions)]))
        return responses

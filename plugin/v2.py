"""The Open Inference Protocol (KServe V2, what Triton speaks) over any runner: pure translation.

Transport-agnostic, as KServe's ``dataplane.py``: the replica's HTTP layer calls these functions and
sends what they return. JSON tensors only (the binary-data extension answers 400 with a message).

* An infer request's input tensors become one JSON object ``{input_name: nested list}`` and go to the
  runner as a scoring request; runners that want a wrapper key (MLflow: ``inputs``) say so.
* The runner's JSON answer becomes the output tensors: a dict gives one tensor per key, anything else one
  tensor named ``output``. Requested outputs (``"outputs": [{"name": ...}]``) filter them.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from tiffin.errors import BadRequestError

__all__ = ["DATATYPES", "decode_infer_request", "encode_infer_response", "model_metadata"]

DATATYPES: dict[str, Any] = {
    "BOOL": np.bool_, "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64,
    "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64,
    "FP16": np.float16, "FP32": np.float32, "FP64": np.float64, "BYTES": np.object_,
}  # fmt: skip
_BY_KIND = {"b": "BOOL", "i": "INT64", "u": "UINT64", "f": "FP64"}


def model_metadata(name: str, platform: str, versions: tuple[str, ...] = ("1",)) -> dict[str, Any]:
    """``GET /v2/models/{name}``: tiffin does not know tensor shapes ahead of time, so inputs and
    outputs are listed empty (Triton lists them; V2 allows clients to send what the model takes)."""
    return {"name": name, "versions": list(versions), "platform": platform, "inputs": [], "outputs": []}


def decode_infer_request(body: bytes, headers: dict[str, str]) -> tuple[dict[str, Any], list[str] | None, Any]:
    """(inputs as ``{name: nested list}``, names of the outputs asked for or None, request id)."""
    if "inference-header-content-length" in headers:
        raise BadRequestError(
            "the binary tensor data extension is not supported; send JSON tensors (binary_data=False in tritonclient)"
        )
    try:
        document = json.loads(body)
    except ValueError as exc:
        raise BadRequestError(f"the infer request is not JSON: {exc}") from None
    if not isinstance(document, dict) or not isinstance(document.get("inputs"), list) or not document["inputs"]:
        raise BadRequestError("an infer request needs 'inputs': a list of tensors with name, shape, datatype, data")
    inputs: dict[str, Any] = {}
    for tensor in document["inputs"]:
        if not isinstance(tensor, dict) or not {"name", "shape", "datatype", "data"} <= set(tensor):
            raise BadRequestError("each input tensor needs name, shape, datatype and data")
        name, datatype = tensor["name"], str(tensor["datatype"]).upper()
        if datatype not in DATATYPES:
            raise BadRequestError(f"input '{name}': datatype {datatype} is not one of {', '.join(DATATYPES)}")
        try:
            array = np.asarray(tensor["data"], dtype=DATATYPES[datatype]).reshape(tensor["shape"])
        except (TypeError, ValueError) as exc:
            raise BadRequestError(f"input '{name}': data does not fit shape {tensor['shape']}: {exc}") from None
        inputs[name] = array.tolist()
    wanted = document.get("outputs")
    names = [o["name"] for o in wanted if isinstance(o, dict) and "name" in o] if isinstance(wanted, list) else None
    return inputs, names or None, document.get("id")


def encode_infer_response(
    model: str, result: Any, wanted: list[str] | None, request_id: Any = None, version: str = "1"
) -> dict[str, Any]:
    """The infer response for the runner's decoded JSON ``result``."""
    tensors = result if isinstance(result, dict) else {"output": result}
    outputs = []
    for name, value in tensors.items():
        if wanted is not None and name not in wanted:
            continue
        outputs.append(_tensor(name, value))
    if wanted is not None:
        missing = sorted(set(wanted) - {o["name"] for o in outputs})
        if missing:
            raise BadRequestError(f"unknown output(s) {', '.join(missing)}; the model returns {', '.join(tensors)}")
    response: dict[str, Any] = {"model_name": model, "model_version": version, "outputs": outputs}
    if request_id is not None:
        response["id"] = request_id
    return response


def _tensor(name: str, value: Any) -> dict[str, Any]:
    array = np.asarray(value)
    if array.dtype.kind in _BY_KIND:
        datatype = _BY_KIND[array.dtype.kind]
        if datatype == "FP64" and array.dtype == np.float32:
            datatype = "FP32"
        data = array.reshape(-1).tolist()
    else:  # strings, mixed lists, records: BYTES of their JSON text where they are not plain strings
        datatype = "BYTES"
        flat = array.reshape(-1) if array.dtype.kind in "UO" and array.ndim else np.asarray([value], dtype=object)
        data = [v if isinstance(v, str) else json.dumps(v) for v in flat.tolist()]
        if not (array.dtype.kind in "UO" and array.ndim):
            return {"name": name, "shape": [1], "datatype": datatype, "data": data}
    return {"name": name, "shape": list(array.shape), "datatype": datatype, "data": data}

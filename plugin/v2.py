"""The Open Inference Protocol (KServe V2, what Triton speaks) over any runner: pure translation.

Transport-agnostic, as KServe's ``dataplane.py``: the replica's HTTP layer calls these functions and
sends what they return. Tensors come as JSON or as binary data (Triton's binary tensor extension, which
``tritonclient`` uses by default); outputs go back as binary data where the request asks for it.

* An infer request's input tensors become one JSON object ``{input_name: nested list}`` and go to the
  runner as a scoring request; runners that want a wrapper key (MLflow: ``inputs``) say so.
* The runner's JSON answer becomes the output tensors: a dict gives one tensor per key, anything else one
  tensor named ``output``. Requested outputs (``"outputs": [{"name": ...}]``) filter them.

The other way round, for models that speak V2 themselves (Triton): :func:`tensors_from_json` types a JSON
scoring body ``{"inputs": {name: value}}`` (or ``{name: value}``) by the model's V2 metadata, and
:func:`tensors_to_json` turns output tensors back into ``{name: value}``.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tiffin.errors import BadRequestError, RunnerError, ValidationError

if TYPE_CHECKING:
    import numpy as np

# numpy is imported where tensors are made (_numpy), not here: a replica imports this module whatever it serves, and
# a scoring script's environment need not have numpy (tiffin.environments.runtime).

__all__ = [
    "V2_MODEL_HEADER",
    "V2_UPSTREAM_HEADER",
    "InferRequest",
    "alias_model",
    "decode_infer_request",
    "encode_infer_response",
    "model_metadata",
    "schema_from_metadata",
    "tensors_from_json",
    "tensors_to_json",
]

V2_UPSTREAM_HEADER = b"x-tiffin-v2-upstream"
"""Sent by a replica on ``GET /`` (its health route, which the supervisor probes): the URL of the model
server behind it that answers V2 requests itself (Triton). It becomes :attr:`tiffin.routing.Replica.v2_url`."""
V2_MODEL_HEADER = b"x-tiffin-v2-model"
"""Beside :data:`V2_UPSTREAM_HEADER`: the model that the endpoint's name stands for on that server."""

_DATATYPE_NAMES = (
    "BOOL", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64", "FP16", "FP32", "FP64", "BYTES",
)  # fmt: skip
_BY_KIND = {"b": "BOOL", "i": "INT64", "u": "UINT64", "f": "FP64"}
_DATATYPES: dict[str, Any] = {}


def _numpy() -> Any:
    """numpy, and :data:`DATATYPES` filled in on first use; RunnerError (500, named) where it is not installed."""
    try:
        import numpy as np
    except ImportError:
        raise RunnerError(
            "V2 (Open Inference Protocol) tensors need numpy, which the deployment's environment lacks; add numpy "
            "to its requirements (conda_file)"
        ) from None

    if not _DATATYPES:
        _DATATYPES.update(
            BOOL=np.bool_, INT8=np.int8, INT16=np.int16, INT32=np.int32, INT64=np.int64, UINT8=np.uint8,
            UINT16=np.uint16, UINT32=np.uint32, UINT64=np.uint64, FP16=np.float16, FP32=np.float32,
            FP64=np.float64, BYTES=np.object_,
        )  # fmt: skip
    return np


def __getattr__(name: str) -> Any:
    # DATATYPES ({V2 datatype: numpy type}) imports numpy when first asked for.
    if name == "DATATYPES":
        _numpy()
        return _DATATYPES
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def model_metadata(name: str, platform: str, versions: tuple[str, ...] = ("1",)) -> dict[str, Any]:
    """``GET /v2/models/{name}``: tiffin does not know tensor shapes ahead of time, so inputs and
    outputs are listed empty (Triton lists them; V2 allows clients to send what the model takes)."""
    return {"name": name, "versions": list(versions), "platform": platform, "inputs": [], "outputs": []}


@dataclass(frozen=True)
class InferRequest:
    """A decoded ``/infer`` request."""

    inputs: dict[str, Any]
    """``{input_name: nested list}``, typed by each tensor's datatype."""
    outputs: list[str] | None = None
    """Names of the outputs asked for, or None for all."""
    binary_outputs: frozenset[str] | bool = False
    """Outputs to send as binary data: a set of names, or True for all (``binary_data_output``)."""
    id: Any = None


def decode_infer_request(body: bytes, headers: Mapping[str, str]) -> InferRequest:
    """Decode an infer request, JSON tensors or binary ones (the ``Inference-Header-Content-Length`` extension,
    what ``tritonclient`` sends by default)."""
    header_length = headers.get("inference-header-content-length")
    if header_length is not None:
        if not header_length.isdigit() or int(header_length) > len(body):
            raise BadRequestError("Inference-Header-Content-Length must be the length of the JSON part of the body")
        body, binary = body[: int(header_length)], memoryview(body)[int(header_length) :]
    else:
        binary = memoryview(b"")
    try:
        document = json.loads(body)
    except ValueError as exc:
        raise BadRequestError(f"the infer request is not JSON: {exc}") from None
    except RecursionError:  # json's decoder recurses once per level
        raise BadRequestError("the infer request is nested too deeply to decode") from None
    if not isinstance(document, dict) or not isinstance(document.get("inputs"), list) or not document["inputs"]:
        raise BadRequestError("an infer request needs 'inputs': a list of tensors with name, shape, datatype, data")
    inputs: dict[str, Any] = {}
    offset = 0
    for tensor in document["inputs"]:
        size = _binary_size(tensor)
        if not isinstance(tensor, dict) or not {"name", "shape", "datatype"} <= set(tensor):
            raise BadRequestError("each input tensor needs name, shape, datatype and data")
        name, datatype = tensor["name"], str(tensor["datatype"]).upper()
        if datatype not in _DATATYPE_NAMES:
            raise BadRequestError(f"input '{name}': datatype {datatype} is not one of {', '.join(_DATATYPE_NAMES)}")
        np = _numpy()
        try:
            if size is not None:
                if offset + size > len(binary):
                    raise ValueError(f"binary_data_size {size} runs past the end of the body")
                array = _from_binary(binary[offset : offset + size], datatype)
                offset += size
            elif "data" in tensor:
                array = np.asarray(tensor["data"], dtype=_DATATYPES[datatype])
            else:
                raise ValueError("no data and no binary_data_size")
            array = array.reshape(tensor["shape"])
        except (TypeError, ValueError) as exc:
            raise BadRequestError(f"input '{name}': data does not fit shape {tensor['shape']}: {exc}") from None
        inputs[name] = array.tolist()
    if offset != len(binary):
        raise BadRequestError(f"{len(binary) - offset} bytes of binary data follow the last input tensor")
    wanted = document.get("outputs")
    wanted = [o for o in wanted if isinstance(o, dict) and "name" in o] if isinstance(wanted, list) else []
    params = document.get("parameters") if isinstance(document.get("parameters"), dict) else {}
    binary_outputs: frozenset[str] | bool = bool(params.get("binary_data_output")) or frozenset(
        o["name"] for o in wanted if isinstance(o.get("parameters"), dict) and o["parameters"].get("binary_data")
    )
    return InferRequest(inputs, [o["name"] for o in wanted] or None, binary_outputs, document.get("id"))


def _binary_size(tensor: Any) -> int | None:
    params = tensor.get("parameters") if isinstance(tensor, dict) else None
    size = params.get("binary_data_size") if isinstance(params, dict) else None
    return int(size) if isinstance(size, int) and size >= 0 else None


def _from_binary(data: memoryview, datatype: str) -> np.ndarray:
    np = _numpy()
    if datatype != "BYTES":
        return np.frombuffer(data, dtype=np.dtype(_DATATYPES[datatype]).newbyteorder("<"))
    items, offset = [], 0
    while offset < len(data):  # each element: a 4-byte little-endian length, then its bytes
        if offset + 4 > len(data):
            raise ValueError("a BYTES element's length is cut short")
        (length,) = struct.unpack_from("<I", data, offset)
        items.append(bytes(data[offset + 4 : offset + 4 + length]).decode("utf-8", errors="replace"))
        offset += 4 + length
    return np.asarray(items, dtype=np.object_)


def encode_infer_response(
    model: str, result: Any, request: InferRequest | None = None, version: str = "1"
) -> tuple[bytes, int | None]:
    """The infer response for the runner's decoded JSON ``result``: (body, JSON header length or None).

    A header length comes back when outputs are sent as binary data; it goes in the
    ``Inference-Header-Content-Length`` response header.
    """
    tensors = result if isinstance(result, dict) else {"output": result}
    wanted = request.outputs if request is not None else None
    binary_outputs = request.binary_outputs if request is not None else False
    outputs, chunks = [], []
    for name, value in tensors.items():
        if wanted is not None and name not in wanted:
            continue
        tensor = _tensor(name, value)
        if binary_outputs is True or (binary_outputs and name in binary_outputs):
            raw = _to_binary(tensor)
            tensor = {k: v for k, v in tensor.items() if k != "data"}
            tensor["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        outputs.append(tensor)
    if wanted is not None:
        missing = sorted(set(wanted) - {o["name"] for o in outputs})
        if missing:
            raise BadRequestError(f"unknown output(s) {', '.join(missing)}; the model returns {', '.join(tensors)}")
    response: dict[str, Any] = {"model_name": model, "model_version": version, "outputs": outputs}
    if request is not None and request.id is not None:
        response["id"] = request.id
    head = json.dumps(response).encode()
    return (head + b"".join(chunks), len(head)) if chunks else (head, None)


def _to_binary(tensor: dict[str, Any]) -> bytes:
    if tensor["datatype"] != "BYTES":
        np = _numpy()
        return np.asarray(tensor["data"], dtype=np.dtype(_DATATYPES[tensor["datatype"]]).newbyteorder("<")).tobytes()
    parts = []
    for item in tensor["data"]:
        raw = item.encode() if isinstance(item, str) else bytes(item)
        parts.append(struct.pack("<I", len(raw)) + raw)
    return b"".join(parts)


def _tensor(name: str, value: Any) -> dict[str, Any]:
    np = _numpy()
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


# --- models that speak V2 themselves (Triton) ----------------------------------------------------------

_MODELS = b"/v2/models/"


def alias_model(target: bytes, aliases: tuple[bytes, ...], model: bytes) -> bytes:
    """``target`` (a request path, maybe with a query) with a model name in ``aliases`` replaced by ``model``:
    ``/v2/models/my-endpoint/infer`` → ``/v2/models/densenet/infer``. Other targets come back as they are."""
    if not target.startswith(_MODELS):
        return target
    start = len(_MODELS)
    end = start
    while end < len(target) and target[end] not in b"/?":
        end += 1
    if target[start:end] not in aliases:
        return target
    return _MODELS + model + target[end:]


_JSON_SCHEMA_TYPES = {"BOOL": "boolean", "BYTES": "string"}


def tensors_from_json(document: Any, inputs: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
    """A decoded JSON scoring body as one typed array per input of a model with V2 metadata ``inputs``
    (``[{"name", "datatype", "shape"}]``, -1 for a free dimension).

    The body is ``{"inputs": {name: value}}`` (MLflow's and TF Serving's columnar form) or ``{name: value}``.
    Values are nested lists; one whose rank differs from the model's is reshaped when it fits (a flat list
    for a ``[-1, 1]`` input). ValidationError (422) names the input that is missing, unknown or does not fit.
    """
    if isinstance(document, dict) and isinstance(document.get("inputs"), dict):
        document = document["inputs"]
    by_name = {str(meta["name"]): meta for meta in inputs}
    takes = ", ".join(by_name) or "nothing"
    if not isinstance(document, dict):
        raise ValidationError(f'send a JSON object {{"inputs": {{name: value}}}}; the model takes {takes}')
    unknown = sorted(set(document) - set(by_name))
    if unknown:
        raise ValidationError(f"unknown input(s) {', '.join(unknown)}; the model takes {takes}")
    missing = [name for name in by_name if name not in document]
    if missing:
        raise ValidationError(f"missing input(s) {', '.join(missing)}; the model takes {takes}")
    return {name: _typed(name, document[name], meta) for name, meta in by_name.items()}


def _typed(name: str, value: Any, meta: Mapping[str, Any]) -> np.ndarray:
    datatype = str(meta.get("datatype", "")).upper()
    np = _numpy()
    dtype = _DATATYPES.get(datatype)
    if dtype is None:
        raise ValidationError(f"input '{name}': the model's datatype {datatype} cannot be sent as JSON")
    try:
        array = np.asarray(value, dtype=dtype)
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"input '{name}' must hold {datatype} values: {exc}") from None
    shape = [int(d) for d in meta.get("shape", [])]
    if not shape or _fits(array.shape, shape):
        return array
    free = shape.count(-1)
    fixed = int(np.prod([d for d in shape if d != -1])) if len(shape) > free else 1
    if free <= 1 and fixed and array.size % fixed == 0 and (free or array.size == fixed):
        return array.reshape(shape)
    raise ValidationError(f"input '{name}': data of shape {list(array.shape)} does not fit the model's shape {shape}")


def _fits(actual: tuple[int, ...], wanted: list[int]) -> bool:
    return len(actual) == len(wanted) and all(w in (-1, actual[i]) for i, w in enumerate(wanted))


def tensors_to_json(outputs: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """Output tensors as ``{name: nested list}``; BYTES elements as text."""
    result: dict[str, Any] = {}
    for name, array in outputs.items():
        if array.dtype.kind in "OS":
            np = _numpy()
            array = np.vectorize(_text, otypes=[object])(array) if array.size else array
        result[name] = array.tolist()
    return result


def _text(value: Any) -> Any:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else value


def schema_from_metadata(metadata: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """JSON schemas of the ``{name: value}`` request and response of a model with V2 ``metadata``."""

    def tensors(entries: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        properties = {}
        for meta in entries:
            leaf: dict[str, Any] = {"type": _JSON_SCHEMA_TYPES.get(str(meta.get("datatype")), "number")}
            if str(meta.get("datatype", "")).startswith(("INT", "UINT")):
                leaf = {"type": "integer"}
            for _ in meta.get("shape", []) or [-1]:
                leaf = {"type": "array", "items": leaf}
            properties[str(meta["name"])] = leaf
        return {"type": "object", "properties": properties, "required": list(properties)}

    inputs = tensors(metadata.get("inputs", []))
    request = {"type": "object", "properties": {"inputs": inputs}, "required": ["inputs"]}
    return request, tensors(metadata.get("outputs", []))

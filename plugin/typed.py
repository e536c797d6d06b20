"""``@tiffin.typed``: a scoring ``run()`` whose inputs and output are typed by its type hints.

Azure's contract (``init()`` / ``run(raw_data)``) stays as it is; decorate ``run`` to have tiffin
parse the JSON request body for you and publish an OpenAPI schema::

    import numpy as np
    import tiffin
    from pydantic import BaseModel

    class Prediction(BaseModel):
        values: list[float]

    @tiffin.typed(example={"data": [[0.1, 0.2, 0.3]]})
    def run(data: np.ndarray) -> Prediction:
        return Prediction(values=model.predict(data).tolist())

The request body is a JSON object whose keys are ``run``'s parameter names (the same shape the
``inference-schema`` package uses). Each value is converted by its parameter's annotation:

* ``numpy.ndarray`` / ``numpy.typing.NDArray[dtype]`` → ``numpy.asarray(value, dtype)``;
* ``pandas.DataFrame`` → from a list of records, ``{"columns": [...], "data": [...]}`` (pandas'
  ``split`` orientation) or a dict of columns;
* anything pydantic understands (models, ``list[float]``, ``dict[str, int]``, ``Literal``…) → validated
  by pydantic.

A value that does not fit answers 422 with the parameter and the reason; a missing parameter without
a default answers 422 too. The return annotation converts the result back to JSON and describes it.
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import TypeAdapter
from pydantic import ValidationError as PydanticValidationError

from tiffin.errors import ValidationError

__all__ = ["TypedSchema", "typed"]


@dataclass(frozen=True)
class TypedSchema:
    """What ``@typed`` learned from ``run``'s hints: JSON schemas for the body and the result."""

    input: dict[str, Any]
    output: dict[str, Any]
    parameters: tuple[str, ...]


class _Adapter:
    """Converts one JSON value to a Python value of the annotated type, and back."""

    def __init__(self, hint: Any) -> None:
        self.hint = hint
        self.kind = _kind_of(hint)
        self._pydantic = TypeAdapter(hint) if self.kind == "pydantic" else None

    def load(self, value: Any) -> Any:
        if self.kind == "ndarray":
            import numpy as np

            return np.asarray(value, dtype=_ndarray_dtype(self.hint))
        if self.kind == "dataframe":
            import pandas as pd

            if isinstance(value, dict) and "columns" in value and "data" in value:
                return pd.DataFrame(value["data"], columns=value["columns"], index=value.get("index"))
            return pd.DataFrame(value)
        if self.kind == "any":
            return value
        assert self._pydantic is not None
        return self._pydantic.validate_python(value)

    def dump(self, value: Any) -> Any:
        if self.kind == "ndarray" or type(value).__module__.startswith("numpy"):
            return value.tolist()
        if self.kind == "dataframe":
            return value.to_dict(orient="records")
        if self._pydantic is not None:
            return self._pydantic.dump_python(value, mode="json")
        return value

    def json_schema(self) -> dict[str, Any]:
        if self.kind == "ndarray":
            return {"type": "array", "items": {}, "description": "an n-dimensional array (nested lists)"}
        if self.kind == "dataframe":
            return {
                "type": "array",
                "items": {"type": "object"},
                "description": "table rows as records, or {'columns': [...], 'data': [[...]]}",
            }
        if self._pydantic is None:
            return {}
        return self._pydantic.json_schema()


def _kind_of(hint: Any) -> str:
    if hint is inspect.Parameter.empty or hint is Any:
        return "any"
    origin = typing.get_origin(hint) or hint
    module = getattr(origin, "__module__", "")
    name = getattr(origin, "__name__", "")
    if module.startswith("numpy") and name == "ndarray":
        return "ndarray"
    if module.startswith("pandas") and name == "DataFrame":
        return "dataframe"
    return "pydantic"


def _ndarray_dtype(hint: Any) -> Any:
    # NDArray[np.float64] is ndarray[tuple[int, ...], dtype[np.float64]]; plain ndarray has no dtype.
    args = typing.get_args(hint)
    if len(args) == 2:
        dtype_args = typing.get_args(args[1])
        if dtype_args and dtype_args[0] is not Any:
            return dtype_args[0]
    return None


def typed(func: Callable[..., Any] | None = None, *, example: dict[str, Any] | None = None) -> Any:
    """Decorate a scoring ``run`` so its JSON body is converted by its type hints (see module doc)."""

    def decorate(run: Callable[..., Any]) -> Callable[..., Any]:
        hints = typing.get_type_hints(run)
        signature = inspect.signature(run)
        params = {
            name: (_Adapter(hints.get(name, inspect.Parameter.empty)), p.default)
            for name, p in signature.parameters.items()
            if name != "request_headers"
        }
        output = _Adapter(hints.get("return", inspect.Parameter.empty))
        wants_headers = "request_headers" in signature.parameters

        @functools.wraps(run)
        def wrapper(request_headers: dict[str, str] | None = None, **kwargs: Any) -> Any:
            unknown = sorted(set(kwargs) - set(params))
            if unknown:
                raise ValidationError(
                    f"unexpected field(s) {', '.join(unknown)}; run() takes {', '.join(params) or 'nothing'}"
                )
            converted: dict[str, Any] = {}
            for name, (adapter, default) in params.items():
                if name not in kwargs:
                    if default is inspect.Parameter.empty:
                        raise ValidationError(f"field '{name}' is required")
                    continue
                try:
                    converted[name] = adapter.load(kwargs[name])
                except PydanticValidationError as exc:
                    first = exc.errors()[0]
                    where = ".".join(str(p) for p in (name, *first["loc"]))
                    raise ValidationError(f"field '{where}': {first['msg']}") from None
                except (TypeError, ValueError) as exc:
                    raise ValidationError(f"field '{name}': {exc}") from None
            if wants_headers:
                converted["request_headers"] = request_headers or {}
            return output.dump(run(**converted))

        required = [n for n, (_, d) in params.items() if d is inspect.Parameter.empty]
        input_schema: dict[str, Any] = {
            "type": "object",
            "properties": {n: a.json_schema() for n, (a, _) in params.items()},
            "required": required,
        }
        if example is not None:
            input_schema["example"] = example
        wrapper.__tiffin_schema__ = TypedSchema(  # type: ignore[attr-defined]
            input=input_schema, output=output.json_schema(), parameters=tuple(params)
        )
        return wrapper

    return decorate(func) if func is not None else decorate

"""Unit tests of the pure pieces of scoring: the @typed decorator and the swagger builder."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from numpy.typing import NDArray
from pydantic import BaseModel

from tiffin import typed
from tiffin.errors import ValidationError
from tiffin.swagger import build_swagger


class Point(BaseModel):
    x: float
    y: float = 0.0


def test_typed_converts_each_parameter_by_its_hint():
    @typed
    def run(data: NDArray[np.int64], frame: pd.DataFrame, point: Point, tags: list[str] | None = None) -> dict:
        return {
            "dtype": str(data.dtype),
            "rows": len(frame),
            "cols": list(frame.columns),
            "point": point,
            "tags": tags,
        }

    out = run(data=[[1, 2]], frame={"columns": ["a", "b"], "data": [[1, 2], [3, 4]]}, point={"x": 1})
    assert out == {"dtype": "int64", "rows": 2, "cols": ["a", "b"], "point": {"x": 1.0, "y": 0.0}, "tags": None}
    assert run(data=[1], frame=[{"a": 1}], point={"x": 2}, tags=["t"])["tags"] == ["t"]


def test_typed_errors_name_the_field():
    @typed
    def run(point: Point, n: int) -> int:
        return n

    with pytest.raises(ValidationError, match=r"field 'point.x': Field required"):
        run(point={}, n=1)
    with pytest.raises(ValidationError, match=r"field 'n'"):
        run(point={"x": 1}, n="many")
    with pytest.raises(ValidationError, match=r"field 'n' is required"):
        run(point={"x": 1})
    with pytest.raises(ValidationError, match=r"unexpected field\(s\) extra"):
        run(point={"x": 1}, n=1, extra=2)


def test_typed_output_and_schema():
    @typed(example={"values": [1.0]})
    def run(values: list[float]) -> NDArray[np.float64]:
        return np.asarray(values) * 2

    assert run(values=[1, 2]) == [2.0, 4.0]
    schema = run.__tiffin_schema__
    assert schema.input["properties"]["values"] == {"items": {"type": "number"}, "type": "array"}
    assert schema.input["required"] == ["values"]
    assert schema.input["example"] == {"values": [1.0]}
    assert schema.output["type"] == "array"


def test_typed_passes_request_headers_only_when_declared():
    @typed
    def run(a: int, request_headers: dict) -> dict:
        return {"a": a, "h": request_headers.get("x")}

    assert run(a=1, request_headers={"x": "y"}) == {"a": 1, "h": "y"}
    assert run.__tiffin_schema__.parameters == ("a",)


def test_swagger_hoists_pydantic_defs_for_both_versions():
    inner = {"$defs": {"P": {"type": "object", "properties": {"x": {"type": "number"}}}}, "$ref": "#/$defs/P"}
    doc2 = build_swagger("2", inner, None, title="t")
    assert doc2["swagger"] == "2.0"
    assert doc2["definitions"]["ServiceInput"] == {"$ref": "#/definitions/P"}
    assert doc2["definitions"]["P"]["properties"]["x"]["type"] == "number"
    assert doc2["definitions"]["ServiceOutput"] == {"type": "object", "example": {}}
    doc3 = build_swagger("3", inner, None, title="t", path_prefix="/endpoints/e")
    assert doc3["components"]["schemas"]["ServiceInput"] == {"$ref": "#/components/schemas/P"}
    assert "/endpoints/e/score" in doc3["paths"]
    # The caller's schema is not modified.
    assert inner["$ref"] == "#/$defs/P"

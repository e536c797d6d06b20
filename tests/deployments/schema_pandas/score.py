import pandas as pd
from inference_schema.parameter_types.pandas_parameter_type import PandasParameterType
from inference_schema.parameter_types.standard_py_parameter_type import StandardPythonParameterType
from inference_schema.schema_decorators import input_schema, output_schema

sample = pd.DataFrame({"age": [31], "income": [52000.0], "city": ["Lisbon"]})


def init():
    pass


@input_schema("frame", PandasParameterType(sample))
@output_schema(StandardPythonParameterType([{"city": "Lisbon", "score": 1.0}]))
def run(frame, request_headers):
    assert isinstance(frame, pd.DataFrame)
    out = frame.assign(score=frame["income"] / 1000 + frame["age"])[["city", "score"]]
    records = out.to_dict(orient="records")
    records.append({"header": request_headers.get("X-Custom", request_headers.get("x-custom"))})
    return records

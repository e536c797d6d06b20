import numpy as np
from inference_schema.parameter_types.numpy_parameter_type import NumpyParameterType
from inference_schema.parameter_types.standard_py_parameter_type import StandardPythonParameterType
from inference_schema.schema_decorators import input_schema, output_schema


def init():
    pass


@input_schema("data", NumpyParameterType(np.array([[1.0, 2.0, 3.0]])))
@input_schema("factor", StandardPythonParameterType(1.0))
@output_schema(StandardPythonParameterType({"total": [6.0], "dtype": "float64"}))
def run(data, factor=1.0):
    # inference-schema hands over a real numpy array, typed by the sample.
    assert isinstance(data, np.ndarray)
    return {"total": (data.sum(axis=1) * factor).tolist(), "dtype": str(data.dtype)}

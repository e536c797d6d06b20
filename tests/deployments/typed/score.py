import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel

import tiffin


class Options(BaseModel):
    scale: float = 1.0
    label: str


class Result(BaseModel):
    label: str
    totals: list[float]


def init():
    pass


@tiffin.typed(example={"data": [[1, 2], [3, 4]], "options": {"label": "x", "scale": 2}})
def run(data: NDArray[np.float32], options: Options) -> Result:
    assert data.dtype == np.float32
    return Result(label=options.label, totals=(data.sum(axis=1) * options.scale).tolist())

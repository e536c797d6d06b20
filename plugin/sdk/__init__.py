"""tiffin's Python SDK: a client of ``tiffin serve`` shaped like azure-ai-ml's ``MLClient``.

from tiffin.sdk import TiffinClient

client = TiffinClient()
client.online_endpoints.create_or_update({"name": "my-endpoint"})
client.online_deployments.create_or_update(deployment, endpoint_name="my-endpoint", all_traffic=True)
print(client.online_endpoints.invoke("my-endpoint", body={"data": [[1, 2, 3]]}))
"""

from ._assets import ComputeOperations, DataOperations, EnvironmentOperations, ModelOperations
from ._batch import BatchDeploymentOperations, BatchEndpointOperations, JobOperations
from ._client import TiffinClient
from ._deployments import OnlineDeploymentOperations, Progress
from ._endpoints import OnlineEndpointOperations
from ._poller import Poller

__all__ = [
    "BatchDeploymentOperations",
    "BatchEndpointOperations",
    "ComputeOperations",
    "DataOperations",
    "EnvironmentOperations",
    "JobOperations",
    "ModelOperations",
    "OnlineDeploymentOperations",
    "OnlineEndpointOperations",
    "Poller",
    "Progress",
    "TiffinClient",
]

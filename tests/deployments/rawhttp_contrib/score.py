# The older import path of Azure's samples (azureml-examples' "binary payloads" and "custom container"
# scripts): Azure's inference server aliases it to its own api modules at start, and so does tiffin.
from azureml.contrib.services.aml_request import AMLRequest, rawhttp
from azureml.contrib.services.aml_response import AMLResponse


def init():
    pass


@rawhttp
def run(request: AMLRequest):
    return AMLResponse(request.get_data()[::-1], 200, {"Content-Type": "application/octet-stream"})

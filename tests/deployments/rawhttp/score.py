from azureml_inference_server_http.api.aml_request import AMLRequest, rawhttp
from azureml_inference_server_http.api.aml_response import AMLResponse


def init():
    pass


@rawhttp
def run(request: AMLRequest):
    if request.method == "GET":
        return AMLResponse(f"query={request.args.get('q')}", 200, {"Content-Type": "text/plain"})
    body = request.get_data()
    return AMLResponse(body[::-1], 201, {"Content-Type": "application/octet-stream", "X-Reversed": "yes"})

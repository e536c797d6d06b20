import json


def init():
    pass


def run(raw_data):
    data = json.loads(raw_data)
    if data.get("fail"):
        raise ValueError("secret internal detail 12345")
    if data.get("unencodable"):
        return object()
    return "ok"

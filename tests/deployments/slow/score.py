import json
import os
import time


def init():
    pass


def run(raw_data):
    data = json.loads(raw_data) if raw_data else {}
    time.sleep(float(data.get("sleep", 0)))
    if data.get("fail"):
        raise RuntimeError("failing on purpose")
    return {"slept": data.get("sleep", 0), "pid": os.getpid(), "echo": data.get("echo")}

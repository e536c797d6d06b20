import platform

import six


def init():
    pass


def run(raw_data):
    return {"six": six.__version__, "python": platform.python_version()}

"""Azure's batch I/O contract (issue 12, item 7): inputs named as Azure's samples name them (a registered data
asset, an ``https://`` file), ``AZUREML_BI_OUTPUT_PATH``, outputs laid out and rows written as Azure does, read
back exactly the way Azure's published notebooks read them.

URL inputs are served by an HTTP server the tests start on 127.0.0.1; nothing leaves loopback. Integration
tests run one real ``tiffin serve`` for the module (its endpoint keys may name URLs under
``TIFFIN_INPUT_URL_PREFIXES``, set to the loopback server's ``/public/``).
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import http.server
import io
import json
import re
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tiffin.batch.downloads import UrlLimits, check_url, fetch_url, url_allowed
from tiffin.errors import SpecError, TiffinError
from tiffin.resource_ids import asset_id
from tiffin.store import Store
from tiffin.testing import serve_tiffin

SCRIPTS = Path(__file__).parent / "batch_scripts"
ENDED = ("Completed", "Failed", "Canceled")


# --- a file server on loopback ----------------------------------------------------------------------


class Files:
    """What the loopback server serves (``/public/NAME``, ``/private/NAME``; ``/plain/NAME`` without ETag or
    Last-Modified; ``/slow/NAME`` 64 KiB every 50 ms; ``/moved/NAME`` redirects to ``/private/NAME``) and the
    requests it saw."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.seen: list[tuple[str, int]] = []
        self.lock = threading.Lock()


def _handler(files: Files) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            area, _, name = self.path.lstrip("/").partition("/")
            body = files.files.get(name)
            if area == "moved":
                status, body = 302, b""
            elif body is None or area not in ("public", "private", "plain", "slow"):
                status, body = 404, b"not found"
            else:
                etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
                status = 304 if area != "plain" and self.headers.get("If-None-Match") == etag else 200
            with files.lock:
                files.seen.append((self.path, status))
            self.send_response(status)
            if area == "moved":
                self.send_header("Location", f"/private/{name}")
            if status in (200, 304) and area != "plain":
                self.send_header("ETag", etag)
            if status != 304:
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if status != 304:
                step = 1 << 16 if area == "slow" else len(body) or 1
                for start in range(0, len(body), step):
                    with contextlib.suppress(OSError):  # the client may give up: that is what slow is for
                        self.wfile.write(body[start : start + step])
                        self.wfile.flush()
                    if area == "slow":
                        time.sleep(0.05)

        def log_message(self, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture(scope="module")
def files() -> Iterator[tuple[Files, str]]:
    """The loopback file server and its base URL (``http://127.0.0.1:PORT``); stopped after the module."""
    served = Files()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(served))
    thread = threading.Thread(target=server.serve_forever, name="test-files", daemon=True)
    thread.start()
    try:
        yield served, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def heart_csv(rows: int, seed: int) -> bytes:
    """A small CSV of three numeric columns (a, b, c)."""
    lines = ["a,b,c"] + [f"{(seed + k) % 7},{(seed * k) % 5},{k % 3}" for k in range(rows)]
    return ("\n".join(lines) + "\n").encode()


# --- rows as Azure writes them ----------------------------------------------------------------------


class _Model:
    """Stands for an MLflow pyfunc model: ``predict`` gives one value per row, or a DataFrame of its own."""

    def __init__(self, frame: bool = False) -> None:
        self.frame = frame

    def predict(self, data: Any) -> Any:
        import pandas as pd

        values = (data["a"] * 2 + 0.5).tolist()
        return pd.DataFrame({"file": ["mine"] * len(values), "score": values}) if self.frame else values


def test_mlflow_rows_are_row_prediction_file_as_azures_notebook_reads_them(tmp_path: Path) -> None:
    import pandas as pd

    from tiffin.runners.batch import MLflowBatchScorer

    (tmp_path / "heart-0.csv").write_text("a\n1\n2\n3\n")
    (tmp_path / "heart, 1.csv").write_text("a\n4\n")
    scorer = MLflowBatchScorer("unused")
    scorer._state["model"] = _Model()
    output = scorer.score([str(tmp_path / "heart-0.csv"), str(tmp_path / "heart, 1.csv")])
    assert output.rows == 4
    score = pd.read_csv(io.BytesIO(output.csv), names=["row", "prediction", "file"])
    assert score.values.tolist() == [
        [0, 2.5, "heart-0.csv"], [1, 4.5, "heart-0.csv"], [2, 6.5, "heart-0.csv"], [0, 8.5, "heart, 1.csv"],
    ]  # fmt: skip
    # A model answering a DataFrame: its columns in place of prediction, even one named like Azure's.
    scorer._state["model"] = _Model(frame=True)
    output = scorer.score([str(tmp_path / "heart, 1.csv")])
    assert pd.read_csv(io.BytesIO(output.csv), header=None).values.tolist() == [[0, "mine", 8.5, "heart, 1.csv"]]


# --- the URL rules and the download cache (pure, and against the loopback server) --------------------


def test_url_allowed_matches_scheme_host_port_and_a_path_boundary() -> None:
    prefixes = ["https://data.example.com/public/", "http://127.0.0.1:8080/in"]
    assert url_allowed("https://data.example.com/public/heart.csv", prefixes)
    assert url_allowed("https://DATA.example.com:443/public/a/b.csv", prefixes)
    assert url_allowed("http://127.0.0.1:8080/in/x.csv", prefixes)
    for url in (
        "https://data.example.com/publicity/x.csv",  # not at a / boundary
        "https://data.example.com.evil.test/public/x.csv",  # another host
        "http://data.example.com/public/x.csv",  # another scheme
        "https://data.example.com:8443/public/x.csv",  # another port
        "https://data.example.com/public/../private/x.csv",  # climbs out
        "https://data.example.com/public/%2e%2e/private/x.csv",  # the same, encoded
        "http://127.0.0.1:8081/in/x.csv",
        "http://169.254.169.254/latest/meta-data/",
    ):
        assert not url_allowed(url, prefixes), url
    assert not url_allowed("https://data.example.com/public/x.csv", [])


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("https://user:secret@data.example.com/x.csv", "cannot carry credentials"),
        ("ftp://data.example.com/x.csv", "not an http(s) URL"),
        ("https:///x.csv", "not an http(s) URL"),
        ("https://data.example.com/a b.csv", "percent-encode"),
    ],
)
def test_check_url_refuses_what_is_no_plain_file_url(url: str, message: str) -> None:
    with pytest.raises(SpecError, match=re.escape(message)):
        check_url(url)


def test_a_url_is_downloaded_once_then_revalidated_with_its_etag(files: tuple[Files, str], tmp_path: Path) -> None:
    served, base = files
    served.files["once.csv"] = heart_csv(5, 1)
    url = f"{base}/public/once.csv"
    first, said = fetch_url(url, tmp_path, UrlLimits())
    assert first.name == "once.csv" and first.read_bytes() == served.files["once.csv"], said
    again, said = fetch_url(url, tmp_path, UrlLimits())
    assert again == first and "unchanged" in said
    assert [s for p, s in served.seen if p == "/public/once.csv"] == [200, 304]
    served.files["once.csv"] = heart_csv(6, 2)  # the file changed on the server: a new version, the old kept
    changed, said = fetch_url(url, tmp_path, UrlLimits())
    assert changed != first and changed.read_bytes() == served.files["once.csv"] and first.is_file(), said


def test_a_url_without_validators_is_downloaded_once(files: tuple[Files, str], tmp_path: Path) -> None:
    served, base = files
    served.files["plain.csv"] = heart_csv(3, 3)
    url = f"{base}/plain/plain.csv"
    first, _ = fetch_url(url, tmp_path, UrlLimits())
    second, said = fetch_url(url, tmp_path, UrlLimits())
    assert first == second and "downloaded before" in said
    assert [s for p, s in served.seen if p == "/plain/plain.csv"] == [200]


def test_a_download_over_the_size_limit_fails_and_leaves_no_file(files: tuple[Files, str], tmp_path: Path) -> None:
    served, base = files
    served.files["big.csv"] = b"x" * 5000
    with pytest.raises(TiffinError, match="larger than 1000 bytes"):
        fetch_url(f"{base}/public/big.csv", tmp_path, UrlLimits(max_bytes=1000))
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file() and p.name not in (".lock",)]
    with pytest.raises(TiffinError, match="HTTP 404"):
        fetch_url(f"{base}/public/absent.csv", tmp_path, UrlLimits())


def test_a_download_stops_when_asked_or_past_its_time_leaving_nothing(files: tuple[Files, str], tmp_path: Path) -> None:
    from tiffin.batch.downloads import DownloadStopped

    served, base = files
    served.files["slow.csv"] = b"y" * (4 << 20)  # 64 chunks of 64 KiB, 50 ms apart: over 3 s
    asked = []
    started = time.monotonic()
    with pytest.raises(DownloadStopped):
        fetch_url(f"{base}/slow/slow.csv", tmp_path, UrlLimits(), stopped=lambda: asked.append(1) or True)
    assert asked and time.monotonic() - started < 3, "stopped at the first check, not at the end"
    with pytest.raises(TiffinError, match=re.escape("took more than 0.5s")):
        fetch_url(f"{base}/slow/slow.csv", tmp_path, UrlLimits(timeout_s=0.5))
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file() and p.name != ".lock"]


def test_a_redirect_is_not_followed_unless_asked(files: tuple[Files, str], tmp_path: Path) -> None:
    served, base = files
    served.files["secret.csv"] = b"a\n1\n"
    with pytest.raises(TiffinError, match="redirect"):
        fetch_url(f"{base}/moved/secret.csv", tmp_path, UrlLimits())
    got, _ = fetch_url(f"{base}/moved/secret.csv", tmp_path, UrlLimits(), follow_redirects=True)
    assert got.read_bytes() == b"a\n1\n"


# --- a real server --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(files: tuple[Files, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    _, base = files
    env = {"TIFFIN_INPUT_URL_PREFIXES": f"{base}/public/"}
    with serve_tiffin(tmp_path_factory.mktemp("batch-io") / "home", env=env) as running:
        yield running


def cli(server: Any, *args: str, cwd: Path | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "tiffin.cli", *args], capture_output=True, text=True, env=server.env, timeout=180,
        cwd=cwd,
    )  # fmt: skip
    if check:
        assert done.returncode == 0, f"tiffin {' '.join(args)} -> {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done


def register_data(server: Any, name: str, spec: dict[str, Any], version: str | None = None) -> str:
    """A data asset registered straight in the server's store; its version."""
    store = Store.open(home=server.home)
    try:
        return store.create_asset("data", name, {"name": name, **spec}, version=version).version
    finally:
        with contextlib.suppress(Exception):
            store.close()


_TRAIN = r"""
import json, sys
from pathlib import Path
import mlflow, pandas as pd
from sklearn.linear_model import LinearRegression
root, inputs = Path(sys.argv[1]), Path(sys.argv[2])
train = pd.concat([pd.read_csv(p) for p in sorted(inputs.glob("*.csv"))], ignore_index=True)
model = LinearRegression().fit(train, 3.0 * train["a"] - train["b"] + 0.5 * train["c"])
mlflow.sklearn.save_model(model, str(root / "model"))
print(json.dumps({p.name: model.predict(pd.read_csv(p)).tolist() for p in sorted(inputs.glob("*.csv"))}))
"""


def mlflow_model(tmp_path: Path, inputs: Path) -> dict[str, list[float]]:
    """An MLflow model at ``tmp_path/model`` trained on ``inputs``; its predictions per input file."""
    done = subprocess.run(
        [sys.executable, "-c", _TRAIN, str(tmp_path), str(inputs)], capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_azures_mlflow_sample_with_a_data_asset_read_back_as_its_notebook_does(
    server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """heart-classifier-mlflow's deploy-and-run.sh and notebook: a uri_folder data asset, an MLflow deployment
    with no script, `invoke --input azureml:heart-dataset-unlabeled@latest`, `job download --output-name
    score`, and `pd.read_csv("named-outputs/score/predictions.csv", names=["row", "prediction", "file"])`."""
    import pandas as pd

    data = tmp_path / "data"
    data.mkdir()
    sizes = {"heart-unlabeled-0.csv": 7, "heart-unlabeled-1.csv": 4, "heart-unlabeled-2.csv": 9}
    for n, (name, rows) in enumerate(sizes.items()):
        (data / name).write_bytes(heart_csv(rows, n + 1))
    expected = mlflow_model(tmp_path, data)
    register_data(server, "heart-dataset-unlabeled", {"type": "uri_folder", "path": str(data / "nothing")}, "1")
    latest = register_data(server, "heart-dataset-unlabeled", {"type": "uri_folder", "path": str(data)})
    assert latest == "2"
    with server.client() as client:
        client.batch_endpoints.create({"name": "heart-classifier"})
        client.batch_deployments.create_or_update({
            "name": "classifier-mlflow", "endpoint_name": "heart-classifier", "type": "model",
            "model": {"path": str(tmp_path / "model"), "type": "mlflow_model"},
            "settings": {"mini_batch_size": 2, "output_file_name": "predictions.csv"},
        })  # fmt: skip

    job = cli(
        server, "batch-endpoint", "invoke", "--name", "heart-classifier",
        "--input", "azureml:heart-dataset-unlabeled@latest", "--query", "name", "-o", "tsv",
    ).stdout.strip()  # fmt: skip
    cli(server, "job", "stream", "-n", job)
    assert cli(server, "job", "show", "-n", job, "--query", "status", "-o", "tsv").stdout.strip() == "Completed"
    shown = json.loads(cli(server, "job", "show", "-n", job, "-o", "json").stdout)
    assert shown["inputs"]["data_asset"] == "azureml:heart-dataset-unlabeled:2", "pinned when invoked"
    assert shown["inputs"]["input_files"] == 3

    download = tmp_path / "download"
    cli(server, "job", "download", "--name", job, "--output-name", "score", "--download-path", str(download))
    assert sorted(p.relative_to(download).as_posix() for p in download.rglob("*") if p.is_file()) == [
        "named-outputs/score/predictions.csv"
    ]
    monkeypatch.chdir(download)  # the notebook's working directory
    score = pd.read_csv("named-outputs/score/predictions.csv", names=["row", "prediction", "file"])
    assert Counter(score["file"]) == sizes
    for name, predictions in expected.items():
        rows = score[score["file"] == name]
        assert rows["row"].tolist() == list(range(sizes[name]))
        assert rows["prediction"].tolist() == pytest.approx(predictions, rel=1e-9, abs=1e-9), name

    # An exact version resolves; one that does not exist is refused at invoke, naming how to list versions.
    exact = cli(server, "batch-endpoint", "invoke", "-n", "heart-classifier", "--input",
                "azureml:heart-dataset-unlabeled:9", check=False)  # fmt: skip
    assert exact.returncode == 1 and "tiffin data list --name heart-dataset-unlabeled" in exact.stderr, exact.stderr
    absent = cli(server, "batch-endpoint", "invoke", "-n", "heart-classifier", "--input", "azureml:nope@latest",
                 check=False)  # fmt: skip
    assert absent.returncode == 1 and "tiffin data list" in absent.stderr and "Traceback" not in absent.stderr

    # The SDK, as azure-ai-ml's notebook: Input(type=uri_folder, path=data_asset.id), here a mapping like it.
    with server.client() as client:
        job = client.batch_endpoints.invoke(
            "heart-classifier", {"type": "uri_folder", "path": asset_id("data", "heart-dataset-unlabeled", "2")}
        )
        assert job["inputs"]["data_asset"] == "azureml:heart-dataset-unlabeled:2"
        assert client.jobs.stream(job["name"], interval=0.2, timeout=180)["status"] == "Completed"


_CUSTOM_OUTPUT = """
import os
import re
from pathlib import Path
import pandas as pd

def init():
    global output_path
    output_path = os.environ["AZUREML_BI_OUTPUT_PATH"]

def run(mini_batch):
    for file_path in mini_batch:
        data = pd.read_csv(file_path)
        data["prediction"] = data["a"] * 2
        data.to_parquet(os.path.join(output_path, Path(file_path).stem + ".parquet"))
    return mini_batch
"""

_SCORE_WITH_PATH = """
import os
import re
import pandas as pd

def init():
    pass

def run(mini_batch):
    return pd.DataFrame({"file": [os.path.basename(p) for p in mini_batch],
                         "rows": [len(pd.read_csv(p)) for p in mini_batch],
                         "where": os.environ["AZUREML_BI_OUTPUT_PATH"]})
"""


def _script_deployment(code: Path, name: str, endpoint: str, script: str, action: str) -> dict[str, Any]:
    (code / f"{name}.py").write_text(script)
    return {
        "name": name, "endpoint_name": endpoint, "type": "model", "model": {"path": str(SCRIPTS / "model")},
        "code_configuration": {"code": str(code), "scoring_script": f"{name}.py"},
        "settings": {"mini_batch_size": 2, "output_action": action, "retry_settings": {"max_retries": 0}},
    }  # fmt: skip


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_custom_outputs_written_to_azureml_bi_output_path_come_back_as_named_outputs(
    server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Azure's custom-outputs-parquet sample: a summary_only driver writes one parquet file per input into
    AZUREML_BI_OUTPUT_PATH; the notebook reads them with glob("named-outputs/score/*.parquet"). An append_row
    driver sees the folder its predictions.csv lands in, and its DataFrame rows read back with sep=" "."""
    import pandas as pd

    data = tmp_path / "data"
    data.mkdir()
    for n in range(3):
        (data / f"part-{n}.csv").write_bytes(heart_csv(4 + n, n))
    code = tmp_path / "code"
    code.mkdir()
    with server.client() as client:
        client.batch_endpoints.create({"name": "custom-outputs"})
        client.batch_deployments.create_or_update(
            _script_deployment(code, "parquet", "custom-outputs", _CUSTOM_OUTPUT, "summary_only")
        )
        client.batch_deployments.create_or_update(
            _script_deployment(code, "rows", "custom-outputs", _SCORE_WITH_PATH, "append_row")
        )
        custom = client.batch_endpoints.invoke("custom-outputs", data, deployment_name="parquet")
        rows = client.batch_endpoints.invoke("custom-outputs", data, deployment_name="rows")
        for job in (custom, rows):
            final = client.jobs.stream(job["name"], interval=0.2, timeout=180)
            assert final["status"] == "Completed", (final, client.jobs.read_log(job["name"])[0])
        assert client.jobs.get(custom["name"])["outputs"]["score"]["type"] == "uri_folder"
        client.jobs.download(custom["name"], tmp_path / "custom", output_name="score")
        written = client.jobs.download(rows["name"], tmp_path / "rows", output_name="score")
        assert written == tmp_path / "rows" / "named-outputs" / "score" / "predictions.csv"
        output_file = Path(client.jobs.get(rows["name"])["outputs"]["score"]["path"])

    monkeypatch.chdir(tmp_path / "custom")
    output_files = glob.glob("named-outputs/score/*.parquet")
    assert sorted(Path(f).name for f in output_files) == ["part-0.parquet", "part-1.parquet", "part-2.parquet"]
    score = pd.concat(pd.read_parquet(f) for f in sorted(output_files))
    assert score["prediction"].tolist() == (score["a"] * 2).tolist() and len(score) == 4 + 5 + 6

    frame = pd.read_csv(written, header=None, names=["file", "rows", "where"], sep=" ")
    assert frame["file"].tolist() == ["part-0.csv", "part-1.csv", "part-2.csv"]
    assert frame["rows"].tolist() == [4, 5, 6]
    assert set(frame["where"]) == {str(output_file.parent)}, "AZUREML_BI_OUTPUT_PATH is the output's folder"

    # Into a folder of the caller's (--output-path): the files are there, and a download does not hand out
    # the folder, which may hold files no job wrote.
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "unrelated.txt").write_text("not the job's")
    with server.client() as client:
        job = client.batch_endpoints.invoke("custom-outputs", data, deployment_name="parquet", output_path=mine)
        assert client.jobs.stream(job["name"], interval=0.2, timeout=180)["status"] == "Completed"
        assert sorted(p.name for p in mine.iterdir())[-1] == "unrelated.txt" and len(list(mine.iterdir())) == 4
        with pytest.raises(TiffinError, match="a folder of yours, not of the job"):
            client.jobs.download(job["name"], tmp_path / "mine-dl", output_name="score")


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_an_https_input_is_downloaded_once_and_a_key_may_name_only_allowed_urls(
    server: Any, files: tuple[Files, str], tmp_path: Path
) -> None:
    """`invoke --input https://.../file.csv` as Azure's samples do: the admin token any URL; the endpoint's key
    only URLs under TIFFIN_INPUT_URL_PREFIXES (never loopback services or cloud metadata otherwise)."""
    import pandas as pd

    served, base = files
    served.files["heart.csv"] = heart_csv(6, 4)
    code = tmp_path / "code"
    code.mkdir()
    with server.client() as client:
        client.batch_endpoints.create({"name": "url-inputs", "auth_mode": "key"})
        client.batch_deployments.create_or_update(
            _script_deployment(code, "rows", "url-inputs", _SCORE_WITH_PATH, "append_row")
        )
        key = client.batch_endpoints.get_keys("url-inputs")["primaryKey"]
        jobs = [client.batch_endpoints.invoke("url-inputs", f"{base}/private/heart.csv") for _ in range(2)]
        for job in jobs:
            assert job["inputs"]["url"] == f"{base}/private/heart.csv"
            final = client.jobs.stream(job["name"], interval=0.2, timeout=180)
            assert final["status"] == "Completed", (final, client.jobs.read_log(job["name"])[0])
        target = client.jobs.download(jobs[1]["name"], tmp_path / "dl", output_name="score")
    frame = pd.read_csv(target, header=None, names=["file", "rows", "where"], sep=" ")
    assert frame[["file", "rows"]].values.tolist() == [["heart.csv", 6]]
    assert [s for p, s in served.seen if p == "/private/heart.csv"] == [200, 304], "downloaded once"

    invoke = f"{server.url}/api/batch-endpoints/url-inputs/jobs"
    headers = {"Authorization": f"Bearer {key}"}
    for url in (
        f"{base}/private/heart.csv",
        f"{base}/public/../private/heart.csv",
        "http://169.254.169.254/latest/meta-data/",
        f"{server.url}/api/batch-endpoints",
    ):
        refused = httpx.post(invoke, json={"input": url}, headers=headers, timeout=30)
        assert refused.status_code == 422, (url, refused.text)
        assert "TIFFIN_INPUT_URL_PREFIXES" in refused.json()["message"], refused.text
    allowed = httpx.post(invoke, json={"input": f"{base}/public/heart.csv"}, headers=headers, timeout=30)
    assert allowed.status_code in (200, 201), allowed.text
    folder = httpx.post(
        invoke, json={"input": f"{base}/public/", "input_type": "uri_folder"}, headers=headers, timeout=30
    )
    assert folder.status_code == 422 and "cannot be listed over plain HTTP" in folder.json()["message"]
    with server.client() as client:
        final = client.jobs.stream(allowed.json()["name"], interval=0.2, timeout=180)
    assert final["status"] == "Completed", final

    # A job canceled while its input downloads drops the download at once (nothing half-written stays).
    served.files["huge.csv"] = b"z" * (40 << 20)  # 640 chunks 50 ms apart: half a minute
    cache = server.home / "cache" / "inputs"
    with server.client() as client:
        job = client.batch_endpoints.invoke("url-inputs", f"{base}/slow/huge.csv")
        deadline = time.monotonic() + 60
        while not list(cache.rglob(".huge.csv.tmp-*")):
            assert time.monotonic() < deadline, "the download never started"
            time.sleep(0.1)
        client.jobs.cancel(job["name"])
        canceled = time.monotonic()
        while list(cache.rglob(".huge.csv.tmp-*")):
            assert time.monotonic() - canceled < 10, "the download went on after the job was canceled"
            time.sleep(0.1)
        assert client.jobs.get(job["name"])["status"] == "Canceled"
    assert not list(cache.rglob("huge.csv"))


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_data_assets_registered_with_the_cli_resolve_to_their_stored_files_and_urls(
    server: Any, files: tuple[Files, str], tmp_path: Path
) -> None:
    """`tiffin data create` as Azure's scripts run it (a local uri_folder copied into the content store, a
    uri_file URL kept as it is), then `invoke --input azureml:NAME@latest`: the job scores the stored copy
    (the source may change afterwards) and downloads the URL; a key may use both."""
    import pandas as pd

    served, base = files
    served.files["remote.csv"] = heart_csv(3, 9)
    data = tmp_path / "data"
    data.mkdir()
    (data / "local-0.csv").write_bytes(heart_csv(2, 1))
    (data / "local-1.csv").write_bytes(heart_csv(5, 2))
    cli(server, "data", "create", "--name", "local-rows", "--type", "uri_folder", "--path", str(data))
    cli(server, "data", "create", "--name", "remote-rows", "--type", "uri_file", "--path", f"{base}/private/remote.csv")
    (data / "local-1.csv").write_bytes(heart_csv(50, 2))  # the source changes; the registered copy does not
    (data / "local-2.csv").write_bytes(heart_csv(1, 3))
    code = tmp_path / "code"
    code.mkdir()
    with server.client() as client:
        client.batch_endpoints.create({"name": "asset-inputs", "auth_mode": "key"})
        client.batch_deployments.create_or_update(
            _script_deployment(code, "rows", "asset-inputs", _SCORE_WITH_PATH, "append_row")
        )
        key = client.batch_endpoints.get_keys("asset-inputs")["primaryKey"]
    invoke = f"{server.url}/api/batch-endpoints/asset-inputs/jobs"
    headers = {"Authorization": f"Bearer {key}"}
    expected = {"azureml:local-rows@latest": [["local-0.csv", 2], ["local-1.csv", 5]],
                "azureml:remote-rows:1": [["remote.csv", 3]]}  # fmt: skip
    for source, rows in expected.items():
        answer = httpx.post(invoke, json={"input": source}, headers=headers, timeout=30)
        assert answer.status_code in (200, 201), answer.text
        job = answer.json()
        with server.client() as client:
            final = client.jobs.stream(job["name"], interval=0.2, timeout=180)
            assert final["status"] == "Completed", (final, client.jobs.read_log(job["name"])[0])
            target = client.jobs.download(job["name"], tmp_path / job["name"], output_name="score")
        frame = pd.read_csv(target, header=None, names=["file", "rows", "where"], sep=" ")
        assert frame[["file", "rows"]].values.tolist() == rows, source


def test_a_url_job_planned_on_another_node_reads_this_nodes_copy(files: tuple[Files, str], tmp_path: Path) -> None:
    """A job taken over from another node (servers sharing a store) has a plan naming that node's cached copy
    of its URL; this node downloads (or finds) its own and scores it."""
    import pandas as pd

    from tiffin.batch.runner import JobRunner

    served, base = files
    served.files["taken.csv"] = heart_csv(4, 5)
    home = tmp_path / "home"
    code = tmp_path / "code"
    code.mkdir()
    spec = _script_deployment(code, "rows", "ep", _SCORE_WITH_PATH, "append_row")
    url = f"{base}/public/taken.csv"
    with Store.open(f"sqlite:///{tmp_path / 'tiffin.db'}", home=home) as store:
        store.create_endpoint("batch", "ep", {})
        store.create_job("j", "ep", "rows", {"input": url, "url": url, "url_redirects": False, "files": []}, spec)
        assert store.claim_queued_jobs("a", 1, 1) == ["j"]
        store.plan_job("j", [["/elsewhere/node-b/cache/inputs/0123/abcd/taken.csv"]])  # as node b planned it
        assert JobRunner(store, "j", home, node_id="a").run() == "Completed", (home / "jobs/j/job.log").read_text()
        output = Path(store.get_job("j").outputs["score"]["path"])
    frame = pd.read_csv(output, header=None, names=["file", "rows", "where"], sep=" ")
    assert frame[["file", "rows"]].values.tolist() == [["taken.csv", 4]]

"""The studio (``/studio``) in a real browser (its file server, in-process: tests/test_studio_files.py).

The browser tests start a real ``tiffin serve`` with the quickstart endpoint (two deployments, blue and green),
a batch endpoint of ``tests/batch_scripts/driver.py`` and a registered model, all made through the SDK; the
page is then driven in Debian's Chromium (``/usr/bin/chromium``) by Playwright, as a user would: sign in,
change the traffic split, send a test request, watch a batch job finish. What the page claims is checked
against the gateway (``azureml-model-deployment`` of real requests) and the API.

``TIFFIN_STUDIO_SCREENSHOTS=1`` saves the main pages to docs/images/studio-*.png (docs/studio.md shows them).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import eventually

from tiffin.specs.traffic import traffic_problem
from tiffin.testing import serve_tiffin

pytestmark = pytest.mark.usefixtures("quickstart_models")  # examples/quickstart's models, trained once

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "examples" / "quickstart"
BATCH_SCRIPTS = Path(__file__).parent / "batch_scripts"
CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = ROOT / "docs" / "images" if os.environ.get("TIFFIN_STUDIO_SCREENSHOTS") else None
BROWSER_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                "--no-first-run"]  # fmt: skip


@pytest.fixture(scope="module")
def server() -> Iterator[Any]:
    with serve_tiffin() as running:
        with running.client() as client:
            from tiffin.specs import OnlineDeployment, load_spec

            client.online_endpoints.create_or_update({"name": "my-endpoint", "auth_mode": "key"})
            for name in ("blue", "green"):
                spec = load_spec(QUICKSTART / f"{name}-deployment.yml", OnlineDeployment).spec.to_yaml_dict()
                client.online_deployments.create_or_update(spec, "my-endpoint")
            client.online_endpoints.set_traffic("my-endpoint", {"blue": 100})
            client.models.create_or_update(
                {"name": "quickstart-model", "version": "1", "path": str(QUICKSTART / "model")}
            )
            image = "mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu20.04"
            conda = str(QUICKSTART / "environment" / "conda.yaml")
            client.environments.create_or_update({"name": "quickstart-env", "version": "1", "image": image,
                                                  "conda_file": conda})  # fmt: skip
            # the compute the batch deployment names (once one is registered, a deployment must name one)
            client.compute.create_or_update({"name": "batch-cluster", "type": "amlcompute", "size": "Standard_DS3_v2",
                                             "max_instances": 2})  # fmt: skip
            client.batch_endpoints.create({"name": "words", "auth_mode": "aad_token"})
            client.batch_deployments.create_or_update(_batch_deployment("words"))
        yield running


def _batch_deployment(endpoint: str) -> dict[str, Any]:
    return {
        "name": "driver",
        "endpoint_name": endpoint,
        "type": "model",
        "model": {"path": str(BATCH_SCRIPTS / "model")},
        "code_configuration": {"code": str(BATCH_SCRIPTS), "scoring_script": "driver.py"},
        "compute": "azureml:batch-cluster",
        "resources": {"instance_count": 1},
        # Slow enough that the page sees the job running before it completes.
        "settings": {
            "mini_batch_size": 2,
            "max_concurrency_per_instance": 1,
            "output_action": "append_row",
            "retry_settings": {"max_retries": 1, "timeout": 60},
            # a mini-batch holding a file named *bad* fails (the failures column)
            "environment_variables": {"BATCH_SLEEP": "0.7", "BATCH_FAIL_BAD": "1"},
        },
    }


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.skip("Debian's Chromium is not installed at /usr/bin/chromium (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("the playwright package is missing (pip install -e '.[test]')")
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=BROWSER_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser: Any, server: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 860}, base_url=server.url)
    opened = context.new_page()
    opened.set_default_timeout(20_000)
    problems: list[str] = []
    opened.on("pageerror", lambda error: problems.append(str(error)))
    opened.on("console", lambda m: problems.append(m.text) if "Content Security Policy" in m.text else None)
    try:
        yield opened
    finally:
        context.close()
    assert problems == [], problems  # no uncaught error, nothing the CSP had to block


def sign_in(page: Any, token: str, where: str = "", origin: str = "") -> None:
    page.goto(f"{origin}/studio/{where}")
    page.fill("#token", token)
    page.click("#sign-in-form button[type=submit]")
    page.wait_for_selector("#main:not([hidden])")


def wait_until(page: Any, function: str, arg: Any = None, timeout: float = 20.0) -> Any:
    """Poll the JavaScript ``function(arg)`` until it returns something true. Not page.wait_for_function: that
    evaluates its predicate with eval() inside the page, which the studio's CSP (rightly) refuses."""
    return eventually(lambda: page.evaluate(function, arg), timeout=timeout, interval=0.2)


def shot(page: Any, name: str) -> None:
    if SCREENSHOTS is not None:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.wait_for_timeout(300)  # let the last poll draw
        page.screenshot(path=str(SCREENSHOTS / f"studio-{name}.png"), full_page=True)


slow = pytest.mark.slow


@slow
@pytest.mark.timeout(300)
def test_a_browser_at_the_root_lands_on_the_studio_and_a_wrong_token_is_refused(page, server):
    r = httpx.get(server.url + "/", headers={"Accept": "text/html"})
    assert r.status_code == 302 and r.headers["location"] == "/studio/"
    assert httpx.get(server.url + "/").json()["api"] == "/api/openapi.json"  # clients still get the document
    assert "script-src 'self'" in httpx.get(server.url + "/studio/").headers["content-security-policy"]
    page.goto("/")
    assert page.url.endswith("/studio/")
    page.wait_for_selector("#sign-in:not([hidden])")
    page.fill("#token", "not-the-token")
    page.click("#sign-in-form button[type=submit]")
    wait_until(page, "() => document.querySelector('#sign-in-error').textContent.length > 0")
    assert "admin token is not valid" in page.text_content("#sign-in-error")
    assert page.is_hidden("#main") and page.is_hidden("#nav") and page.evaluate("sessionStorage.length") == 0
    shot(page, "sign-in")
    # Signed in, then the token stops being valid (replaced on the server): the next call brings the form back.
    sign_in(page, server.admin_token)
    page.wait_for_selector("#endpoints")
    page.evaluate("sessionStorage.setItem('tiffin.adminToken', 'replaced')")
    page.click("#nav a[data-page=assets]")
    page.wait_for_selector("#sign-in:not([hidden])")
    assert "admin token is not valid" in page.text_content("#sign-in-error") and page.is_hidden("#main")


@slow
@pytest.mark.timeout(300)
def test_endpoints_page_hides_keys_until_asked(page, server):
    sign_in(page, server.admin_token)
    page.wait_for_selector("#endpoints a[href='#/endpoints/my-endpoint']")
    key = server.client().online_endpoints.get_keys("my-endpoint")["primaryKey"]
    assert key not in page.content()
    assert "/endpoints/my-endpoint/score" in page.text_content("#endpoints")
    shot(page, "endpoints")
    page.click("[data-action=show-keys]")
    page.wait_for_selector(".keys dl")
    assert key in page.text_content(".keys")
    assert server.admin_token not in page.content()


POINTS_AT_LEAST = """([name, n]) => {
    const line = document.querySelector(`[data-chart='Requests per second'] polyline[data-series=${name}]`);
    return Boolean(line) && line.getAttribute('points').split(' ').length >= n;
}"""
ABOVE_BASELINE = """(name) => {
    const chart = "[data-chart='Requests per second']";
    const line = document.querySelector(`${chart} polyline[data-series=${name}]`);
    const base = Number(document.querySelector(`${chart} line.axis`).getAttribute('y1'));
    return Boolean(line) && line.getAttribute('points').split(' ').some((p) => Number(p.split(',')[1]) < base);
}"""


@slow
@pytest.mark.timeout(300)
def test_a_traffic_change_made_in_the_page_moves_the_gateways_split(page, server):
    sign_in(page, server.admin_token, "#/endpoints/my-endpoint/traffic")
    page.wait_for_selector("#traffic-editor")
    # Azure's rules, checked before anything is sent: 100 + 30 is refused, and so is mirroring to a live one.
    page.fill("[data-traffic=green]", "30")
    assert "add up to 100" in page.text_content("#traffic-problem") and page.is_disabled("#traffic-save")
    page.fill("[data-traffic=blue]", "70")
    page.fill("[data-mirror=green]", "10")
    assert "cannot also receive mirrored traffic" in page.text_content("#traffic-problem")
    page.fill("[data-mirror=green]", "0")
    page.fill("[data-mirror=blue]", "60")
    assert "at most 50%" in page.text_content("#traffic-problem")
    page.fill("[data-mirror=blue]", "0")
    page.fill("[data-traffic=blue]", "40")
    page.fill("[data-traffic=green]", "60")
    assert page.text_content("#traffic-problem") == "" and page.is_enabled("#traffic-save")
    page.click("#traffic-save")
    page.wait_for_selector("#traffic-result.ok")
    assert "blue 40%, green 60%" in page.text_content("#traffic-result")
    assert page.text_content("#endpoint-traffic") == "blue 40%, green 60%"
    shot(page, "traffic")

    endpoint = server.client().online_endpoints.get("my-endpoint")
    assert endpoint["traffic"] == {"blue": 40, "green": 60}
    # The monitor tab is open while the requests go: its charts must show them arriving.
    page.goto("/studio/#/endpoints/my-endpoint/monitor")
    page.wait_for_selector("[data-chart='Requests per second']")
    key = server.client().online_endpoints.get_keys("my-endpoint")["primaryKey"]
    body = (QUICKSTART / "sample-request.json").read_bytes()
    seen: Counter[str] = Counter()
    with httpx.Client(headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"}) as client:
        for _ in range(600):
            r = client.post(f"{server.url}/endpoints/my-endpoint/score", content=body)
            assert r.status_code == 200, r.text
            seen[r.headers["azureml-model-deployment"]] += 1
    # 600 random draws at 40/60: the standard deviation is 2 points; 8 points is a 4-sigma band (1 in 16,000),
    # and a split left at 100/0 or 0/100 is 20 sigma away.
    assert abs(seen["green"] / 600 - 0.60) <= 0.08, seen

    wait_until(page, "(n) => document.querySelector('#totals')?.textContent.includes(n)", f"{seen['green']} requests")
    # A rate above zero drawn for both deployments: some point of each line is above the chart's baseline.
    for name in ("blue", "green"):
        wait_until(page, ABOVE_BASELINE, name)
    # and the fall back to zero once they stop: a line of at least three samples
    wait_until(page, POINTS_AT_LEAST, ["green", 3])
    shot(page, "monitor")


@slow
@pytest.mark.timeout(300)
def test_the_servers_422_is_shown_when_it_refuses_what_the_page_allowed(page, server):
    from tiffin.specs import OnlineDeployment, load_spec

    client = server.client()
    spec = load_spec(QUICKSTART / "blue-deployment.yml", OnlineDeployment, overrides=["name=red"]).spec.to_yaml_dict()
    client.online_deployments.create_or_update(spec, "my-endpoint")
    sign_in(page, server.admin_token, "#/endpoints/my-endpoint/traffic")
    page.wait_for_selector("[data-traffic=red]")
    before = client.online_endpoints.get("my-endpoint")["traffic"]
    client.online_deployments.delete("red", "my-endpoint")  # meanwhile, elsewhere
    page.fill("[data-traffic=red]", "0")  # the page's own check passes: it still lists red
    page.click("#traffic-save")
    page.wait_for_selector("#traffic-result.error")
    assert "deployment 'red' does not exist on this endpoint" in page.text_content("#traffic-result")
    assert client.online_endpoints.get("my-endpoint")["traffic"] == before


@slow
@pytest.mark.timeout(300)
def test_mirrored_traffic_set_in_the_page_shows_in_the_mirror_chart(page, server):
    sign_in(page, server.admin_token, "#/endpoints/my-endpoint/traffic")
    page.fill("[data-traffic=blue]", "100")
    page.fill("[data-traffic=green]", "0")
    page.fill("[data-mirror=green]", "20")
    page.click("#traffic-save")
    page.wait_for_selector("#traffic-result.ok")
    try:
        assert server.client().online_endpoints.get("my-endpoint")["mirror_traffic"] == {"blue": 0, "green": 20}
        page.click("[data-tab=monitor]")
        page.wait_for_selector("[data-chart='Requests per second']")
        key = server.client().online_endpoints.get_keys("my-endpoint")["primaryKey"]
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        with httpx.Client(headers=headers) as client:
            for _ in range(200):
                r = client.post(
                    f"{server.url}/endpoints/my-endpoint/score", content=b'{"data": [[1,2,3,4,5,6,7,8,9,10]]}'
                )
                assert r.headers["azureml-model-deployment"] == "blue"
        chart = "[data-chart='Mirror copies answered 2xx (%)']"
        wait_until(page, "(c) => Boolean(document.querySelector(`${c} polyline[data-series=green]`))", chart)
        assert page.text_content(chart + " .legend").strip() == "green 100%"
        wait_until(page, POINTS_AT_LEAST, ["blue", 3])  # the requests' rise and fall, for the picture
        shot(page, "mirror")
    finally:
        server.client().online_endpoints.set_traffic("my-endpoint", {"blue": 40, "green": 60}, {"green": 0})


@slow
@pytest.mark.timeout(300)
def test_the_test_tab_sends_a_request_and_says_which_deployment_answered(page, server, tmp_path):
    # Opened as localhost, while the API's scoring URI names 127.0.0.1: the page calls the gateway on its own
    # origin (the CSP allows no other), by the URI's path.
    sign_in(
        page, server.admin_token, "#/endpoints/my-endpoint/test", origin=server.url.replace("127.0.0.1", "localhost")
    )
    page.wait_for_selector("#test-body")
    assert "127.0.0.1" in page.text_content("#main")
    page.fill("#test-body", (QUICKSTART / "sample-request.json").read_text())
    page.select_option("#test-deployment", "green")
    page.click("#test-send")
    page.wait_for_selector("#test-answered-by")
    assert page.text_content("#test-status").startswith("200")
    assert page.text_content("#test-answered-by") == "green"
    answer = json.loads(page.text_content("#test-answer"))
    assert isinstance(answer, list) and len(answer) == 2
    shot(page, "test")
    # a file instead of the text: sent as it is, with its type
    sample = tmp_path / "request.json"
    sample.write_bytes((QUICKSTART / "sample-request.json").read_bytes())
    page.set_input_files("#test-file", str(sample))
    page.select_option("#test-deployment", "blue")
    page.click("#test-send")
    wait_until(page, "() => document.querySelector('#test-answered-by')?.textContent === 'blue'")
    assert len(json.loads(page.text_content("#test-answer"))) == 2
    page.set_input_files("#test-file", [])
    # the swagger document, fetched with the endpoint's key
    page.click("#swagger")
    wait_until(
        page, "() => document.querySelector('#test-result pre')?.textContent.includes('/endpoints/my-endpoint/score')"
    )
    page.fill("#test-body", "{not json")
    page.click("#test-send")
    page.wait_for_selector("#test-result .error")
    assert "not valid JSON" in page.text_content("#test-result")


@slow
@pytest.mark.timeout(300)
def test_deployments_tab_shows_state_settings_and_console_log(page, server):
    sign_in(page, server.admin_token, "#/endpoints/my-endpoint/deployments")
    page.wait_for_selector("[data-deployment=green] [data-state=Succeeded]")
    # The console log's tail (the API's get-logs), whatever the scoring script printed last.
    wait_until(page, "() => document.querySelector('[data-deployment=blue] pre.logs').textContent.includes('blue-0')")
    # az's --container: storage-initializer is what readied the deployment (its environment), not the replica
    page.select_option("[data-deployment=blue] select.container", "storage-initializer")
    wait_until(
        page, "() => document.querySelector('[data-deployment=blue] pre.logs').textContent.includes('environment')"
    )
    assert "blue-0 |" not in page.text_content("[data-deployment=blue] pre.logs")
    page.select_option("[data-deployment=blue] select.container", "inference-server")
    # The event log, where the server has one (GET .../events): the replica became ready.
    if any(p.endswith("/events") for p in httpx.get(server.url + "/api/openapi.json").json()["paths"]):
        wait_until(
            page, "() => document.querySelector('[data-deployment=blue] .events').textContent.includes('ReplicaReady')"
        )
    assert "max_concurrent_requests_per_instance" in page.text_content("[data-deployment=blue]")
    shot(page, "deployments")


@slow
@pytest.mark.timeout(300)
def test_a_batch_jobs_bar_reaches_100_percent_and_its_output_downloads(page, server, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(8):
        (folder / f"doc{i}.txt").write_text(f"word{i} " * (i + 1))
    sign_in(page, server.admin_token, "#/batch")
    page.wait_for_selector("[data-batch-endpoint=words]")
    job = server.client().batch_endpoints.invoke("words", folder)["name"]
    bar = f"[data-job='{job}'] [role=progressbar]"
    page.wait_for_selector(bar)
    wait_until(page, "(bar) => document.querySelector(bar)?.getAttribute('aria-valuenow') === '100'", bar, 120)
    row = page.locator(f"tr:has([data-job='{job}'])")
    row.locator("[data-state=Completed]").wait_for()
    assert "4/4 mini-batches, 8 rows" in row.text_content()
    with page.expect_download() as download:
        row.locator("[data-output]").click()
    saved = tmp_path / "predictions.csv"
    download.value.save_as(saved)
    assert len(saved.read_text().splitlines()) == 8

    # A job with a failing mini-batch: the bar still ends at 100% (done or failed), the failure is listed.
    (folder / "doc0.txt").rename(folder / "bad.txt")
    failing = server.client().batch_endpoints.invoke("words", folder)["name"]
    row = page.locator(f"tr:has([data-job='{failing}'])")
    row.locator("[data-state=Completed]").wait_for(timeout=120_000)
    text = row.text_content()
    assert "1 mini-batch(es) failed" in text and "bad.txt" in text and "cannot score" in text, text
    assert row.locator("[role=progressbar]").get_attribute("aria-valuenow") == "100"
    shot(page, "batch")


@slow
@pytest.mark.timeout(300)
def test_assets_page_lists_the_registered_model(page, server):
    sign_in(page, server.admin_token, "#/assets")
    page.wait_for_selector("[data-assets=models] td")
    assert "quickstart-model" in page.text_content("[data-assets=models]")
    assert "quickstart-env" in page.text_content("[data-assets=environments]")
    assert "batch-cluster" in page.text_content("[data-assets=computes]")
    shot(page, "assets")


@slow
@pytest.mark.timeout(300)
def test_an_endpoint_that_does_not_exist_says_so_in_the_page(page, server):
    sign_in(page, server.admin_token, "#/endpoints/no-such-endpoint/deployments")
    page.wait_for_selector("#page-error")
    assert "no-such-endpoint" in page.text_content("#page-error")


@slow
@pytest.mark.timeout(300)
def test_the_pages_pure_functions(page, server):
    """The chart's axis, and the monitor reading the stats defensively (the latency window may be absent)."""
    page.goto("/studio/")
    found = page.evaluate(
        """async () => {
            const { niceMax } = await import('/studio/js/chart.js');
            const { latency, Series } = await import('/studio/js/live.js');
            const { plain } = await import('/studio/js/dom.js');
            const series = new Series(['blue', 'green']);
            series.add({ requests: { blue: 10 }, statuses: { blue: { '200': 10 } } }, 0);
            series.add({ requests: { blue: 30, green: 4 },
                         statuses: { blue: { '200': 26, '503': 4 }, green: { '200': 4 } },
                         recent: { blue: { latency_ms: { p50: 1.5, p99: 9 } } } }, 2);
            return {
                nice: [0, 0.3, 1, 7, 10, 120, 999].map(niceMax),
                recent: latency({ recent: { blue: { latency_ms: { p50: 1.5 } } } }, 'blue', 'p50'),
                absent: [latency({}, 'blue', 'p50'), latency({ recent: { blue: null } }, 'blue', 'p99')],
                rps: series.points.blue.rps, errors: series.points.blue.errors, green: series.points.green.rps,
                p99: series.points.blue.p99,
                plain: plain({ request_timeout_ms: 5000, probe: { period: 10 } }),
            };
        }"""
    )
    assert found["nice"] == [1, 0.5, 1, 10, 10, 200, 1000]
    assert found["recent"] == 1.5 and found["absent"] == [None, None]
    assert found["rps"] == [[2, 10]] and found["errors"] == [[2, 2]] and found["green"] == [[2, 2]]
    assert found["p99"] == [[0, None], [2, 9]]
    assert found["plain"] == "request_timeout_ms: 5000, probe: {period: 10}"


TRAFFIC_CASES = [
    ({"blue": 100}, {}, ["blue", "green"]),
    ({"blue": 70, "green": 30}, {}, ["blue", "green"]),
    ({"blue": 70, "green": 20}, {}, ["blue", "green"]),
    ({"blue": 0, "green": 0}, {}, ["blue", "green"]),
    ({"blue": 100}, {"green": 10}, ["blue", "green"]),
    ({"blue": 100}, {"green": 51}, ["blue", "green"]),
    ({"blue": 100}, {"blue": 10}, ["blue", "green"]),
    ({"blue": 100, "green": 0}, {"green": 10, "red": 10}, ["blue", "green", "red"]),
    ({"blue": 100}, {"green": 0, "red": 0}, ["blue", "green", "red"]),
    ({"blue": 150}, {}, ["blue"]),
    ({"blue": -5, "green": 105}, {}, ["blue", "green"]),
    ({"blue": 1.5}, {}, ["blue"]),
    ({"purple": 100}, {}, ["blue", "green"]),
    ({"blue": 100}, {"gray": 5}, []),
]


@slow
@pytest.mark.timeout(300)
def test_the_pages_traffic_rules_are_tiffins(page, server):
    page.goto("/studio/")
    found = page.evaluate(
        """async (cases) => {
            const { trafficProblem } = await import('/studio/js/traffic.js');
            return cases.map(([t, m, d]) => trafficProblem(t, m, d));
        }""",
        TRAFFIC_CASES,
    )
    for (traffic, mirror, deployments), seen in zip(TRAFFIC_CASES, found, strict=True):
        expected = traffic_problem(traffic, mirror, deployments)
        assert seen == (None if expected is None else {"field": expected.field, "message": expected.message}), traffic

// One endpoint, live: charts from the gateway's statistics, and a "Test" tab that calls the scoring URI.

import { get, messageOf, seg } from "./api.js";
import { COLORS, lineChart } from "./chart.js";
import { action, h, kv, put } from "./dom.js";

const POLL_MS = 2000;
const KEEP = 120;  // samples per series (four minutes at one every two seconds)

/** The credential to call an endpoint with: its primary key, or a fresh token in token modes. */
export async function endpointCredential(name) {
  const creds = await get(`/online-endpoints/${seg(name)}/credentials`);
  return creds.primaryKey || creds.accessToken;
}

/** fetch() a path of the gateway with the endpoint's credential (same origin: the gateway shares the port). */
export async function gatewayFetch(endpoint, url, init = {}) {
  const credential = await endpointCredential(endpoint.name);
  // The path only: the API's URIs name the server's public URL, which may not be the host this page came from.
  const { pathname, search } = new URL(url, location.href);
  return fetch(pathname + search, { ...init, headers: { ...(init.headers || {}), Authorization: `Bearer ${credential}` } });
}

const sumErrors = (statuses) => Object.entries(statuses || {}).filter(([code]) => Number(code) >= 400)
  .reduce((total, [, n]) => total + n, 0);

/**
 * A deployment's latency percentile in ms from whatever shape the stats carry (the gateway's latency window
 * is newer than its counters, and off with TIFFIN_METRICS=0): stats.recent[d].latency_ms.p50 first.
 */
export function latency(stats, deployment, q) {
  const places = [stats.recent?.[deployment]?.latency_ms, stats.latency_ms?.[deployment], stats.latency?.[deployment], stats.deployments?.[deployment]?.latency_ms,
    stats.deployments?.[deployment]?.latency, stats.deployments?.[deployment]];
  for (const place of places) {
    if (place && typeof place === "object") {
      const value = place[q] ?? place[`${q}_ms`];
      if (typeof value === "number") return value;
    }
  }
  return null;
}

/** Turns successive stats documents into per-deployment series: req/s and errors/s from counter deltas. */
export class Series {
  constructor(names) {
    this.names = names;
    this.points = {};
    for (const n of names) this.points[n] = { rps: [], errors: [], p50: [], p99: [], mirror: [] };
    this.last = null;
  }

  add(stats, t) {
    const last = this.last;
    for (const n of this.names) {
      const p = this.points[n];
      const push = (key, v) => { p[key].push([t, v]); if (p[key].length > KEEP) p[key].shift(); };
      if (last) {
        const dt = Math.max(t - last.t, 0.001);
        push("rps", Math.max(0, ((stats.requests?.[n] || 0) - (last.stats.requests?.[n] || 0)) / dt));
        push("errors", Math.max(0, (sumErrors(stats.statuses?.[n]) - sumErrors(last.stats.statuses?.[n])) / dt));
      }
      push("p50", latency(stats, n, "p50"));
      push("p99", latency(stats, n, "p99"));
      const m = stats.mirror?.[n];
      if (m) {
        const ok = Object.entries(m.statuses || {}).filter(([c]) => c.startsWith("2")).reduce((a, [, v]) => a + v, 0);
        const agreement = typeof m.agreement === "number" ? m.agreement * 100 : (m.completed ? (100 * ok) / m.completed : null);
        push("mirror", agreement);
      }
    }
    this.last = { stats, t };
  }
}

export function monitorTab(body, endpoint, deployments) {
  const names = deployments.map((d) => d.name);
  const series = new Series(names);
  const charts = h("div", { class: "grid", id: "charts" });
  const totals = h("div", { id: "totals" });
  const error = h("p", { class: "error" });
  put(body, h("p", { class: "muted" }, `From the gateway's statistics of ${endpoint.name}, read every ${POLL_MS / 1000} s.`),
    error, charts, totals);
  const started = performance.now();
  const draw = () => {
    // A deployment keeps its colour in every chart, the mirror chart (of some deployments only) included.
    const line = (n, key) => ({ name: n, points: series.points[n][key], color: COLORS[names.indexOf(n) % COLORS.length] });
    const per = (key) => names.map((n) => line(n, key));
    const mirrored = names.filter((n) => series.points[n].mirror.length);
    put(charts,
      lineChart("Requests per second", per("rps")),
      lineChart("Latency P50 (ms)", per("p50"), { unit: " ms" }),
      lineChart("Latency P99 (ms)", per("p99"), { unit: " ms" }),
      lineChart("Errors per second (4xx/5xx)", per("errors")),
      mirrored.length ? lineChart("Mirror copies answered 2xx (%)", mirrored.map((n) => line(n, "mirror")), { unit: "%" }) : null);
  };
  const tick = async () => {
    try {
      const stats = await get(`/online-endpoints/${seg(endpoint.name)}/stats`);
      series.add(stats, (performance.now() - started) / 1000);
      error.textContent = "";
      draw();
      put(totals, h("h3", {}, "Since the gateway started"), kv([
        ...names.map((n) => [n, `${stats.requests?.[n] || 0} requests, statuses ${JSON.stringify(stats.statuses?.[n] || {})}`]),
        ["Refused by the gateway", JSON.stringify(stats.rejected || {})],
      ]));
    } catch (e) {
      error.textContent = e.message;
    }
  };
  tick();
  const timer = setInterval(tick, POLL_MS);
  return () => clearInterval(timer);
}

export function testTab(body, endpoint, deployments) {
  const text = h("textarea", { id: "test-body", spellcheck: "false" });
  text.value = JSON.stringify({ data: [[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]] });
  const file = h("input", { type: "file", id: "test-file" });
  const target = h("select", { id: "test-deployment" }, h("option", { value: "" }, "by the traffic split"),
    deployments.map((d) => h("option", { value: d.name }, d.name)));
  const send = h("button", { id: "test-send" }, "Send");
  const out = h("div", { id: "test-result" });
  send.addEventListener("click", async () => {
    send.disabled = true;
    put(out, h("p", { class: "muted" }, "Sending…"));
    try {
      const headers = {};
      let payload;
      if (file.files.length) {
        payload = file.files[0];
        headers["Content-Type"] = payload.type || "application/octet-stream";
      } else {
        try { JSON.parse(text.value); } catch (e) { throw new Error(`the body is not valid JSON: ${e.message}`); }
        payload = text.value;
        headers["Content-Type"] = "application/json";
      }
      if (target.value) headers["azureml-model-deployment"] = target.value;
      const began = performance.now();
      const response = await gatewayFetch(endpoint, endpoint.scoring_uri, { method: "POST", headers, body: payload });
      const ms = performance.now() - began;
      let answer = await response.text();
      try { answer = JSON.stringify(JSON.parse(answer), null, 2); } catch { /* not JSON: shown as is */ }
      put(out, kv([
        ["Status", h("span", { id: "test-status", class: response.ok ? "ok" : "error" }, `${response.status} ${response.statusText}`)],
        ["Answered by", h("b", { id: "test-answered-by" }, response.headers.get("azureml-model-deployment") || "(the gateway)")],
        ["Time", `${ms.toFixed(0)} ms`],
        ["Request id", response.headers.get("x-request-id")],
      ]), h("pre", { id: "test-answer" }, answer));
    } catch (e) {
      put(out, h("p", { class: "error" }, e.message));
    } finally {
      send.disabled = false;
    }
  });
  const swagger = h("button", { class: "quiet", id: "swagger" }, "Swagger document");
  swagger.addEventListener("click", action(async () => {
    const response = await gatewayFetch(endpoint, endpoint.openapi_uri);
    put(out, response.ok ? h("pre", {}, JSON.stringify(await response.json(), null, 2))
      : h("p", { class: "error" }, await messageOf(response)));
  }));
  put(body,
    h("p", { class: "muted" }, "Sends a request to ", h("code", {}, endpoint.scoring_uri),
      " with the endpoint's key, fetched from the API when you press Send."),
    h("label", {}, "JSON body"), text,
    h("div", { class: "row" }, h("label", {}, "or a file ", file), h("label", {}, "Deployment ", target), send, swagger),
    out);
}

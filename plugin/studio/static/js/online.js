// Online endpoints: the list, and one endpoint's deployments and traffic editor (monitor and test: live.js).

import { api, get, routes, seg } from "./api.js";
import { action, h, kv, put, state, table } from "./dom.js";
import { monitorTab, testTab } from "./live.js";
import { trafficProblem } from "./traffic.js";

const split = (shares) => Object.entries(shares || {}).filter(([, p]) => p > 0).map(([n, p]) => `${n} ${p}%`).join(", ");

/** A "Show keys" button that asks the API for the credentials only when pressed. */
function keysButton(name) {
  const out = h("div", { class: "keys mono" });
  const button = h("button", { class: "quiet", "data-action": "show-keys" }, "Show keys");
  button.addEventListener("click", action(async () => {
    if (out.childElementCount) {
      put(out);
      button.textContent = "Show keys";
      return;
    }
    const creds = await get(`/online-endpoints/${seg(name)}/credentials`);
    put(out, kv(Object.entries(creds)));
    button.textContent = "Hide keys";
  }));
  return h("div", {}, button, out);
}

export async function endpointsPage(main) {
  const endpoints = await get("/online-endpoints");
  put(main, h("h1", {}, "Online endpoints"),
    table(["Name", "State", "Auth", "Traffic", "Scoring URI", "Swagger", "Keys"], endpoints.map((e) => [
      h("a", { href: `#/endpoints/${seg(e.name)}` }, e.name),
      state(e.provisioning_state),
      e.auth_mode,
      split(e.traffic) + (split(e.mirror_traffic) ? ` (mirror ${split(e.mirror_traffic)})` : ""),
      h("span", { class: "mono" }, e.scoring_uri),
      e.openapi_uri ? h("a", { href: `#/endpoints/${seg(e.name)}/test` }, "swagger.json") : "",
      keysButton(e.name),
    ]), { id: "endpoints" }),
    h("p", { class: "muted" }, "The swagger document needs the endpoint's key: the Test tab fetches it with one."));
}

const TABS = [["deployments", "Deployments"], ["traffic", "Traffic"], ["monitor", "Monitor"], ["test", "Test"]];

export async function endpointPage(main, name, tab) {
  const base = `/online-endpoints/${seg(name)}`;
  const [endpoint, deployments] = await Promise.all([get(base), get(`${base}/deployments`)]);
  const body = h("div", {});
  put(main,
    h("h1", {}, h("a", { href: "#/endpoints" }, "Online endpoints"), " / ", endpoint.name, " ", state(endpoint.provisioning_state)),
    kv([["Scoring URI", endpoint.scoring_uri], ["Auth mode", endpoint.auth_mode],
      ["Traffic", h("span", { id: "endpoint-traffic" }, split(endpoint.traffic) || "none")],
      ["Mirror", h("span", { id: "endpoint-mirror" }, split(endpoint.mirror_traffic) || "none")]]),
    h("nav", { class: "tabs" }, TABS.map(([id, label]) =>
      h("a", { href: `#/endpoints/${seg(name)}/${id}`, class: id === tab ? "active" : "", "data-tab": id }, label))),
    body);
  if (tab === "traffic") return trafficTab(body, endpoint, deployments);
  if (tab === "monitor") return monitorTab(body, endpoint, deployments);
  if (tab === "test") return testTab(body, endpoint, deployments);
  return deploymentsTab(body, endpoint, deployments);
}

/** The events route R adds, if this server has it (its path names a deployment and ends in /events). */
async function eventsPath() {
  const paths = Object.keys(await routes());
  return paths.find((p) => p.includes("{deployment}") && p.endsWith("/events")) || null;
}

/** The log route's `container` choices (az's --container), where this server has them. */
async function logContainers() {
  const logs = (await routes())["/online-endpoints/{name}/deployments/{deployment}/logs"];
  const param = (logs?.get?.parameters || []).find((p) => p.name === "container");
  return param?.schema?.enum || [];
}

async function deploymentsTab(body, endpoint, deployments) {
  const [events, containers] = await Promise.all([eventsPath(), logContainers()]);
  put(body, h("div", { class: "stack" }, deployments.map((d) => deploymentCard(endpoint, d, events, containers))));
}

function deploymentCard(endpoint, d, eventsRoute, containers) {
  const where = `/online-endpoints/${seg(endpoint.name)}/deployments/${seg(d.name)}`;
  const logs = h("pre", { class: "logs" }, "…");
  const events = h("div", { class: "events" });
  const container = containers.length
    ? h("select", { class: "container" }, containers.map((c) => h("option", { value: c }, c))) : null;
  const load = async () => {
    try {
      const query = container ? `&container=${encodeURIComponent(container.value)}` : "";
      logs.textContent = (await get(`${where}/logs?lines=40${query}`)) || "(empty)";
      logs.scrollTop = logs.scrollHeight;  // the newest lines in view, as a terminal shows them
    } catch (error) {
      logs.textContent = `no logs: ${error.message}`;
    }
    if (!eventsRoute) {
      put(events, h("p", { class: "muted" }, "This server has no event log route; the console log is below."));
      return;
    }
    try {
      const path = eventsRoute.replace("{name}", seg(endpoint.name)).replace("{deployment}", seg(d.name));
      const found = await get(path);
      const list = Array.isArray(found) ? found : found.events || found.value || [];
      put(events, table(["Time", "Event", "Details"], list.slice(-15).map((e) => [
        h("span", { title: e.time || "" }, e.time ? new Date(e.time).toLocaleTimeString() : ""),
        e.name || e.event || e.type || "",
        `${e.instance ? `${e.instance}: ` : ""}${e.message || e.reason || ""}`,
      ])));
    } catch (error) {
      put(events, h("p", { class: "muted" }, `no events: ${error.message}`));
    }
  };
  container?.addEventListener("change", load);
  load();
  const traffic = (endpoint.traffic || {})[d.name] || 0;
  const mirror = (endpoint.mirror_traffic || {})[d.name] || 0;
  return h("section", { class: "card", "data-deployment": d.name },
    h("h2", {}, d.name, " ", state(d.provisioning_state)),
    kv([
      ["Traffic", `${traffic}%${mirror ? ` (mirror ${mirror}%)` : ""}`],
      ["Instances", `${d.instance_count ?? "?"} × ${d.instance_type || "default"}`],
      ["Reason", d.reason],
      ["Model", d.model && (d.model.path || d.model.name || d.model)],
      ["Code", d.code_configuration && `${d.code_configuration.code} (${d.code_configuration.scoring_script})`],
      ["Environment", d.environment && (d.environment.conda_file || d.environment.image || d.environment)],
      ["Request settings", d.request_settings],
      ["Scale", d.scale_settings],
      ["Readiness probe", d.readiness_probe],
      ["Updated", d.updated_at],
    ]),
    h("h3", {}, "Recent events"), events,
    h("div", { class: "row" }, h("h3", {}, "Console log"), container, h("button", { class: "quiet", onclick: load }, "Refresh")),
    logs);
}

function trafficTab(body, endpoint, deployments) {
  const names = deployments.map((d) => d.name);
  const inputs = {};
  const number = (value) => h("input", { type: "number", min: 0, max: 100, step: 1, value: value || 0 });
  const rows = deployments.map((d) => {
    inputs[d.name] = { traffic: number(endpoint.traffic?.[d.name]), mirror: number(endpoint.mirror_traffic?.[d.name]) };
    inputs[d.name].traffic.dataset.traffic = d.name;
    inputs[d.name].mirror.dataset.mirror = d.name;
    return [d.name, state(d.provisioning_state), inputs[d.name].traffic, inputs[d.name].mirror];
  });
  const problem = h("p", { class: "error", id: "traffic-problem", role: "alert" });
  const result = h("p", { id: "traffic-result" });
  const save = h("button", { id: "traffic-save" }, "Save");
  const read = () => {
    const take = (kind) => Object.fromEntries(names.map((n) => [n, Number(inputs[n][kind].value)]));
    return { traffic: take("traffic"), mirror_traffic: take("mirror") };
  };
  const check = () => {
    const { traffic, mirror_traffic: mirror } = read();
    const found = trafficProblem(traffic, mirror, names);
    problem.textContent = found ? `${found.field}: ${found.message}` : "";
    save.disabled = Boolean(found);
    return found;
  };
  body.addEventListener("input", () => { result.textContent = ""; check(); });
  save.addEventListener("click", async () => {
    if (check()) return;
    save.disabled = true;
    result.className = "";
    result.textContent = "Saving…";
    try {
      const saved = await api("PUT", `/online-endpoints/${seg(endpoint.name)}/traffic`, read());
      result.className = "ok";
      document.getElementById("endpoint-traffic").textContent = split(saved.traffic) || "none";
      document.getElementById("endpoint-mirror").textContent = split(saved.mirror_traffic) || "none";
      result.textContent = `Saved: ${split(saved.traffic) || "no live traffic"}${split(saved.mirror_traffic) ? `; mirror ${split(saved.mirror_traffic)}` : ""}`;
    } catch (error) {
      result.className = "error";
      result.textContent = error.message;  // the API's own 422 message
    } finally {
      save.disabled = Boolean(check());
    }
  });
  put(body,
    h("p", { class: "muted" }, "Live shares add up to 100 (or all 0); one deployment may get up to 50% mirrored, ",
      "and not one that gets live traffic. The server checks the same rules again."),
    table(["Deployment", "State", "Traffic %", "Mirror %"], rows, { id: "traffic-editor" }),
    h("div", { class: "row" }, save, problem), result);
  check();
}

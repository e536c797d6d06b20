// Batch endpoints: deployments and jobs, with each job's progress, failures and output download.

import { api, get, seg } from "./api.js";
import { action, bar, h, put, state, table } from "./dom.js";

const ENDED = new Set(["Completed", "Failed", "Canceled"]);
const POLL_MS = 1500;

/** Fetch a job output with the admin token and hand it to the browser as a download. */
async function download(job, output, fileName) {
  const response = await api("GET", `/jobs/${seg(job)}/outputs/${seg(output)}`, undefined, { raw: true });
  const url = URL.createObjectURL(await response.blob());
  const link = h("a", { href: url, download: fileName || `${job}-${output}` });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

function failures(job) {
  const p = job.progress || {};
  const lines = [];
  if (p.mini_batches_failed) lines.push(`${p.mini_batches_failed} mini-batch(es) failed`);
  if (p.items_failed) lines.push(`${p.items_failed} item(s) failed`);
  for (const e of (job.errors || []).slice(0, 5)) {
    if (typeof e !== "object" || e === null) lines.push(String(e));
    else if (e.mini_batch !== undefined) {
      const items = Array.isArray(e.items) ? e.items.map((i) => String(i).split("/").pop()).join(", ") : "";
      lines.push(`mini-batch ${e.mini_batch}${items ? ` (${items})` : ""}, ${e.attempts ?? "?"} attempt(s): ${e.error}`);
    } else lines.push(e.message || JSON.stringify(e));
  }
  if (job.error) lines.push(typeof job.error === "string" ? job.error : job.error.message || JSON.stringify(job.error));
  return lines.length ? h("div", { class: "error" }, lines.map((l) => h("div", {}, l))) : h("span", { class: "muted" }, "none");
}

function jobRow(job) {
  const p = job.progress || {};
  const outputs = Object.entries(job.outputs || {}).map(([name, o]) => {
    const button = h("button", { class: "quiet", "data-output": name }, `${o.output_file_name || name} ↓`);
    button.addEventListener("click", action(() => download(job.name, name, o.output_file_name)));
    return button;
  });
  const total = p.mini_batches_total || 0;
  const done = (p.mini_batches_completed || 0) + (p.mini_batches_failed || 0);
  return [
    h("span", { class: "mono" }, job.name),
    job.deployment_name || "",
    state(job.status),
    h("div", { "data-job": job.name }, bar(...(job.status === "Completed" && !total ? [1, 1] : [done, total, p.mini_batches_failed || 0])),
      h("span", { class: "muted" }, `${p.mini_batches_completed || 0}/${total} mini-batches, ${p.rows_scored || 0} rows`)),
    failures(job),
    job.start_time ? new Date(job.start_time).toLocaleTimeString() : "",
    outputs.length ? outputs : h("span", { class: "muted" }, ENDED.has(job.status) ? "none" : "when done"),
  ];
}

export async function batchPage(main) {
  let timer = null;
  const render = async () => {
    const endpoints = await get("/batch-endpoints");
    const sections = await Promise.all(endpoints.map(async (e) => {
      const [deployments, jobs] = await Promise.all([get(`/batch-endpoints/${seg(e.name)}/deployments`),
        get(`/batch-endpoints/${seg(e.name)}/jobs`)]);
      return { e, deployments, jobs };
    }));
    put(main, h("h1", {}, "Batch endpoints"),
      sections.length ? null : h("p", { class: "muted" }, "No batch endpoint yet: `tiffin batch-endpoint create`."),
      sections.map(({ e, deployments, jobs }) => h("section", { class: "card", "data-batch-endpoint": e.name },
        h("h2", {}, e.name, " ", state(e.provisioning_state)),
        h("p", { class: "mono muted" }, e.scoring_uri),
        h("h3", {}, "Deployments"),
        table(["Name", "State", "Default", "Instances", "Mini-batch size", "Output"], deployments.map((d) => [
          d.name, state(d.provisioning_state), e.defaults?.deployment_name === d.name ? "default" : "",
          String(d.resources?.instance_count ?? ""), String(d.settings?.mini_batch_size ?? ""),
          `${d.settings?.output_action || ""} → ${d.settings?.output_file_name || ""}`,
        ])),
        h("h3", {}, "Jobs"),
        table(["Job", "Deployment", "Status", "Progress", "Failures", "Started", "Output"],
          jobs.slice().reverse().slice(0, 20).map(jobRow), { class: "jobs" }))));
    const running = sections.some(({ jobs }) => jobs.some((j) => !ENDED.has(j.status)));
    timer = setTimeout(again, running ? POLL_MS : POLL_MS * 4);
  };
  // Later reads: a failure is flashed and retried (a 401 signs out, which stops this page's timer).
  const again = action(async () => {
    try {
      await render();
    } catch (error) {
      timer = setTimeout(again, POLL_MS * 4);
      throw error;
    }
  });
  await render();
  return () => clearTimeout(timer);
}

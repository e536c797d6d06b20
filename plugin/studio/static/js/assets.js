// Registered assets: models, data, environments (latest versions as the API lists them) and computes.

import { get } from "./api.js";
import { h, put, table } from "./dom.js";

const text = (v) => (v === undefined || v === null ? "" : typeof v === "object" ? JSON.stringify(v) : String(v));
const cell = (v) => (text(v).length > 40 ? h("span", { class: "long" }, text(v)) : text(v));  // paths may break anywhere

const KINDS = [
  ["models", "Models", ["Name", "Version", "Type", "Path", "Description"], (a) => [a.name, a.version, a.type, a.path, a.description]],
  ["data", "Data", ["Name", "Version", "Type", "Path", "Description"], (a) => [a.name, a.version, a.type, a.path, a.description]],
  ["environments", "Environments", ["Name", "Version", "Image", "Conda file", "Description"],
    (a) => [a.name, a.version, a.image, a.conda_file && "yes", a.description]],
  ["computes", "Computes", ["Name", "Type", "Size", "Instances", "Description"],
    (a) => [a.name, a.type, a.size, a.max_instances ?? a.scale_settings?.max_instances, a.description]],
];

export async function assetsPage(main) {
  const lists = await Promise.all(KINDS.map(([path]) => get(`/${path}`).catch((e) => e)));
  put(main, h("h1", {}, "Registered assets"), KINDS.map(([path, title, headers, cells], i) => {
    const found = lists[i];
    const items = Array.isArray(found) ? found : found?.value;
    return h("section", { class: "card", "data-assets": path }, h("h2", {}, title),
      Array.isArray(items) ? table(headers, items.map((a) => cells(a).map(cell)))
        : h("p", { class: "error" }, found?.message || "could not be listed"));
  }));
}

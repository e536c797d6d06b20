// Building the page from nodes, never from HTML strings: every string from the API becomes a text node, never markup.

const SVG_NS = "http://www.w3.org/2000/svg";

function fill(node, attrs, children) {
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") node.addEventListener(name.slice(2), value);
    else if (name === "text") node.textContent = String(value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** An HTML element: h("a", {href: "#/x", class: "y"}, "text", otherNode). */
export function h(tag, attrs = {}, ...children) {
  return fill(document.createElement(tag), attrs, children);
}

/** An SVG element (charts). */
export function s(tag, attrs = {}, ...children) {
  return fill(document.createElementNS(SVG_NS, tag), attrs, children);
}

/** Replace the children of `node`. */
export function put(node, ...children) {
  node.replaceChildren();
  return fill(node, {}, children);
}

/** A provisioning or job state as a coloured badge. */
export function state(value) {
  const text = value || "Unknown";
  return h("span", { class: `state ${text}`, "data-state": text }, text);
}

/** A setting for people: `{a: 1, b: {c: 2}}` as "a: 1, b: {c: 2}". */
export function plain(value) {
  if (value === null || typeof value !== "object") return String(value);
  if (Array.isArray(value)) return value.map(plain).join(", ");
  return Object.entries(value).map(([k, v]) => `${k}: ${typeof v === "object" && v !== null ? `{${plain(v)}}` : v}`).join(", ");
}

/** A definition list of [label, value] pairs; values may be nodes. */
export function kv(pairs) {
  return h("dl", { class: "kv" }, pairs.filter(([, v]) => v !== undefined && v !== null && v !== "")
    .flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, typeof v === "object" && !(v instanceof Node) ? plain(v) : v)]));
}

/** A table from rows of cells (strings or nodes). */
export function table(headers, rows, attrs = {}) {
  return h("table", attrs,
    h("thead", {}, h("tr", {}, headers.map((x) => h("th", {}, x)))),
    h("tbody", {}, rows.length ? rows.map((r) => h("tr", {}, r.map((c) => h("td", {}, c))))
      : h("tr", {}, h("td", { colspan: headers.length, class: "muted" }, "none yet"))));
}

/** A progress bar: `done` of `total` finished, the last `failed` of them in red. */
export function bar(done, total, failed = 0) {
  const percent = total > 0 ? Math.round((100 * done) / total) : 0;
  const good = h("span", {});
  const bad = h("span", { class: "failed" });
  // CSSOM, not a style attribute: the CSP allows no inline styles
  good.style.width = `${total > 0 ? (100 * (done - failed)) / total : 0}%`;
  bad.style.left = good.style.width;
  bad.style.width = `${total > 0 ? (100 * failed) / total : 0}%`;
  return h("div", { class: "bar", role: "progressbar", "aria-valuenow": percent, "aria-valuemin": 0, "aria-valuemax": 100 },
    good, bad, h("b", {}, `${percent}%`));
}

/** Show an error the page could not show in place (it fades after a while). */
export function flash(message) {
  const box = document.getElementById("flash");
  box.textContent = message;
  box.hidden = false;
  clearTimeout(flash.timer);
  flash.timer = setTimeout(() => { box.hidden = true; }, 8000);
}

/** A click handler whose failure is flashed, not lost as an unhandled rejection (a 401 signs out instead). */
export function action(handler) {
  return async (event) => {
    try {
      await handler(event);
    } catch (error) {
      if (error.status !== 401) flash(error.message);
    }
  };
}

// The studio's shell: sign-in, navigation by the URL's #fragment, and a page per route.

import { api, session } from "./api.js";
import { h, put } from "./dom.js";
import { assetsPage } from "./assets.js";
import { batchPage } from "./batch.js";
import { endpointPage, endpointsPage } from "./online.js";

const $ = (id) => document.getElementById(id);
let leave = () => {};  // stops the current page's timers when another is shown

function showSignIn(message = "") {
  leave();
  session.clear();
  $("main").hidden = true;
  $("nav").hidden = true;
  $("sign-out").hidden = true;
  $("sign-in").hidden = false;
  $("sign-in-error").textContent = message;
  $("token").focus();
}

/** Route `#/a/b/c` to a page; each page renders into `main` and returns its clean-up. */
async function route() {
  if (!session.get()) return showSignIn();
  leave();
  leave = () => {};
  $("sign-in").hidden = true;
  $("main").hidden = false;
  $("nav").hidden = false;
  $("sign-out").hidden = false;
  const parts = location.hash.replace(/^#\/?/, "").split("/").filter(Boolean).map(decodeURIComponent);
  const [page = "endpoints", ...rest] = parts;
  for (const link of document.querySelectorAll("#nav a")) link.classList.toggle("active", link.dataset.page === page);
  const main = put($("main"));
  const pages = {
    endpoints: () => (rest.length ? endpointPage(main, rest[0], rest[1] || "deployments") : endpointsPage(main)),
    batch: () => batchPage(main),
    assets: () => assetsPage(main),
  };
  try {
    const cleanup = await (pages[page] || pages.endpoints)();
    if (typeof cleanup === "function") leave = cleanup;
  } catch (error) {
    if (error.status === 401) return;  // the sign-in form is back, with the message
    put(main, h("p", { class: "error", id: "page-error" }, error.message));  // a 404 for a deleted endpoint...
  }
}

$("sign-in-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const token = $("token").value.trim();
  $("sign-in-error").textContent = "";
  try {
    await api("GET", "/online-endpoints", undefined, { token });  // refused with 401 when the token is wrong
  } catch (error) {
    $("sign-in-error").textContent = error.message;
    return;
  }
  session.set(token);
  $("token").value = "";
  if (!location.hash) location.hash = "#/endpoints";
  else route();
});

$("sign-out").addEventListener("click", () => showSignIn());
window.addEventListener("tiffin:unauthorized", (event) => showSignIn(event.detail));
window.addEventListener("hashchange", route);
route();

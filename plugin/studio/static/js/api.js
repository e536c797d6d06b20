// The one way the studio talks to tiffin: the REST API under /api, with the admin token of this tab.

const TOKEN = "tiffin.adminToken";

export const session = {
  get: () => sessionStorage.getItem(TOKEN),
  set: (token) => sessionStorage.setItem(TOKEN, token),
  clear: () => sessionStorage.removeItem(TOKEN),
};

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/** `{"message": ...}` of an error answer, or its status line. */
export async function messageOf(response) {
  try {
    const body = await response.json();
    if (body && typeof body.message === "string") return body.message;
  } catch { /* not JSON */ }
  return `${response.status} ${response.statusText}`;
}

/** Call the REST API; returns parsed JSON (or text), throws ApiError with the API's own message. */
export async function api(method, path, body, { raw = false, token = session.get() } = {}) {
  const headers = { Authorization: `Bearer ${token}` };
  const init = { method, headers };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(`/api${path}`, init);
  if (!response.ok) {
    const error = new ApiError(response.status, await messageOf(response));
    if (response.status === 401) window.dispatchEvent(new CustomEvent("tiffin:unauthorized", { detail: error.message }));
    throw error;
  }
  if (raw) return response;
  if (response.status === 204) return null;
  const type = response.headers.get("content-type") || "";
  return type.includes("json") ? response.json() : response.text();
}

export const get = (path, options) => api("GET", path, undefined, options);

/** A path segment from a name (endpoint, deployment, job names are user input). */
export const seg = (name) => encodeURIComponent(name);

let openapi = null;
/** The API's OpenAPI document (public), read once: which optional routes this server has. */
export async function routes() {
  if (openapi === null) {
    const response = await fetch("/api/openapi.json");
    openapi = response.ok ? (await response.json()).paths || {} : {};
  }
  return openapi;
}

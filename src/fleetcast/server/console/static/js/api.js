// The management API client: the console's only way to the server.
// Every call goes to the public /api/v1 with the operator's bearer token.

const TOKEN_KEY = "fleetcast.token";

// The console lives at <root>/ui/, the API at <root>/api/v1/ (works behind a path prefix).
const API_ROOT = new URL("../api/v1/", new URL(".", window.location.href));

export class ApiError extends Error {
  constructor(status, code, message, details) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details ?? null;
  }
}

export const session = {
  get token() {
    return window.sessionStorage.getItem(TOKEN_KEY);
  },
  set token(value) {
    if (value) window.sessionStorage.setItem(TOKEN_KEY, value);
    else window.sessionStorage.removeItem(TOKEN_KEY);
  },
  me: null, // {id, name, scope} from GET /tokens/me
  get canWrite() {
    return this.me !== null && this.me.scope !== "read-only";
  },
};

let onUnauthorized = () => {};
export function whenUnauthorized(handler) {
  onUnauthorized = handler;
}

export function apiUrl(path, query) {
  const url = new URL(path.replace(/^\//, ""), API_ROOT);
  for (const [key, value] of Object.entries(query ?? {})) {
    if (value === undefined || value === null || value === "") continue;
    for (const v of Array.isArray(value) ? value : [value]) url.searchParams.append(key, v);
  }
  return url;
}

function errorFrom(status, statusText, data) {
  const error = data && data.error;
  return new ApiError(
    status,
    error ? error.code : "http_error",
    error ? error.message : `${status} ${statusText}`,
    error ? error.details : null,
  );
}

export async function api(method, path, { query, body } = {}) {
  const headers = { Accept: "application/json", Authorization: `Bearer ${session.token}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(apiUrl(path, query), {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
    });
  } catch (e) {
    throw new ApiError(0, "network", "The server cannot be reached.", null);
  }
  if (response.status === 204) return null;
  const data = await response.json().catch(() => null);
  if (!response.ok) {
    const error = errorFrom(response.status, response.statusText, data);
    if (response.status === 401) onUnauthorized(error);
    throw error;
  }
  return data;
}

export const get = (path, query) => api("GET", path, { query });
export const post = (path, body) => api("POST", path, { body });
export const del = (path) => api("DELETE", path);

// Upload a file as the raw request body, reporting progress (fetch cannot).
export function upload(path, file, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", apiUrl(path));
    xhr.setRequestHeader("Authorization", `Bearer ${session.token}`);
    xhr.setRequestHeader("Content-Type", "application/octet-stream");
    xhr.setRequestHeader("Accept", "application/json");
    xhr.responseType = "json";
    xhr.upload.addEventListener("progress", (event) => {
      if (event.lengthComputable) onProgress(event.loaded, event.total);
    });
    xhr.addEventListener("load", () => {
      if (xhr.status >= 200 && xhr.status < 300) {
        resolve(xhr.response);
        return;
      }
      const error = errorFrom(xhr.status, xhr.statusText, xhr.response);
      if (xhr.status === 401) onUnauthorized(error);
      reject(error);
    });
    xhr.addEventListener("error", () =>
      reject(new ApiError(0, "network", "The upload was interrupted.", null)),
    );
    xhr.send(file);
  });
}

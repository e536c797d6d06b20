// Azure's rules for traffic and mirror_traffic, the same as tiffin.specs.traffic.traffic_problem (the server
// checks them again and its 422 message is shown as is; tests/test_studio.py runs both over the same cases).

export const MAX_MIRROR_PERCENT = 50;

const isPercent = (v) => Number.isInteger(v) && v >= 0 && v <= 100;
const sum = (shares) => Object.values(shares).reduce((a, b) => a + b, 0);

/** The first broken rule as {field, message}, or null. `deployments`: the endpoint's names, or null. */
export function trafficProblem(traffic, mirror, deployments = null) {
  for (const [field, shares] of [["traffic", traffic], ["mirror_traffic", mirror]]) {
    for (const [name, percent] of Object.entries(shares)) {
      if (deployments !== null && !deployments.includes(name)) {
        const known = [...deployments].sort().join(", ") || "none";
        return { field, message: `deployment '${name}' does not exist on this endpoint (deployments: ${known}); `
          + "create it first or remove it from the traffic map" };
      }
      if (!isPercent(percent)) {
        return { field, message: `'${name}' must be a whole percentage from 0 to 100 (got ${JSON.stringify(percent)})` };
      }
    }
  }
  const live = sum(traffic);
  if (live !== 0 && live !== 100) {
    return { field: "traffic", message: `percentages must add up to 100, or all be 0 (got ${live})` };
  }
  const mirrored = Object.entries(mirror).filter(([, p]) => p > 0).map(([n]) => n);
  if (mirrored.length > 1) {
    return { field: "mirror_traffic",
      message: `traffic can be mirrored to one deployment only, not ${mirrored.join(", ")}; set the others to 0` };
  }
  const total = sum(mirror);
  if (total > MAX_MIRROR_PERCENT) {
    return { field: "mirror_traffic", message: `at most ${MAX_MIRROR_PERCENT}% of the traffic can be mirrored (got ${total})` };
  }
  const both = mirrored.filter((n) => (traffic[n] || 0) > 0).sort();
  if (both.length) {
    return { field: "mirror_traffic",
      message: `deployment(s) ${both.join(", ")} get live traffic and cannot also receive mirrored traffic` };
  }
  return null;
}

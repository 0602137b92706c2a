// In synthetic mode, requests from the tenants listed in flag `qa-tenants`
// (comma-separated; the tenant is header `x-tenant`) go to the candidate as
// synthetic traffic. Everything else goes to stable as production.
import * as request from 'switchyard:policy/request@0.2.0';

let config; // the route config: function, mode, versions, flags
let tenants = [];

// The value of `key` in a list of [key, value] pairs.
const lookup = (pairs, key) => pairs.find(([k]) => k === key)?.[1];

// Once per route-config version: parse the flags here.
export function configure(routeConfig) {
  config = routeConfig;
  tenants = (lookup(config.flags, 'qa-tenants') ?? '')
    .split(',')
    .map((t) => t.trim())
    .filter((t) => t !== '');
}

function decision(role, traffic, reason) {
  let target = lookup(config.versions, role);
  if (target === undefined) {
    target = lookup(config.versions, 'stable') ?? 'stable';
    reason = `no '${role}' version configured; ${reason}`;
  }
  return { target: { tag: 'qualifier', val: target }, traffic, mirror: undefined, context: [], reason };
}

// Once per request.
export function evaluate() {
  if (config.mode === 'production') {
    return decision('stable', 'production', 'production mode');
  }
  const tenant = request.header('x-tenant');
  if (tenant != null && tenants.includes(tenant)) {
    return decision('candidate', 'synthetic', `QA tenant ${tenant}`);
  }
  return decision('stable', 'production', 'not a QA tenant');
}

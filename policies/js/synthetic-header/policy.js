// synthetic-header, ported from policies/synthetic-header (Rust): in synthetic
// mode a request whose synthetic header (flag `synthetic-header`, default
// `x-switchyard-synthetic`) is `1`/`true` goes to the candidate as synthetic
// traffic; everything else goes to stable as production, mirrored to the
// version of flag `mirror-role` when set.
//
// Build (QuickJS, the default) and test, from the repo root after `npm ci --prefix policies/js`:
//   switchyard policy build policies/js/synthetic-header
//   switchyard policy test policies/js/synthetic-header/target/synthetic-header.component.wasm policies/synthetic-header/cases.json
// (`--js-backend spidermonkey` builds with componentize-js instead.) The
// component imports only switchyard:policy.
// An option<T> import result is `undefined` (jco/SpiderMonkey) or `null` (QuickJS)
// when none, so test it with `== null`.
import * as request from 'switchyard:policy/request@0.2.0';

// First pair with the key wins, like guest-sdk's `lookup`.
function lookup(pairs, key) {
  for (const [k, v] of pairs) if (k === key) return v;
  return undefined;
}

// ASCII-only lower-casing, like Rust's `to_ascii_lowercase`.
const asciiLower = (s) => s.replace(/[A-Z]/g, (c) => String.fromCharCode(c.charCodeAt(0) + 32));
// Trim ASCII whitespace (space, tab, LF, VT, FF, CR) only.
const asciiTrim = (s) => s.replace(/^[ \t\n\v\f\r]+|[ \t\n\v\f\r]+$/g, '');

function stable(cfg) {
  const q = lookup(cfg.versions, 'stable');
  return { target: { tag: 'qualifier', val: q ?? 'stable' }, traffic: 'production', mirror: undefined, context: [], reason: '' };
}

function role(cfg, name) {
  const q = lookup(cfg.versions, name);
  if (q !== undefined) return { target: { tag: 'qualifier', val: q }, traffic: 'production', mirror: undefined, context: [], reason: '' };
  const d = stable(cfg);
  d.reason = `no '${name}' version configured; `;
  return d;
}

let cfg = null;
let header = 'x-switchyard-synthetic';
let mirrorRole; // undefined: no mirroring

function mirrored(d) {
  if (mirrorRole === undefined) return d;
  const q = lookup(cfg.versions, mirrorRole);
  if (q !== undefined) d.mirror = { tag: 'qualifier', val: q };
  return d;
}

function headerIsTrue(name) {
  const v = request.header(name);
  if (v == null) return false; // none: undefined (jco) or null (QuickJS)
  const t = asciiTrim(v);
  return t === '1' || asciiLower(t) === 'true';
}

export function configure(config) {
  cfg = config;
  header = asciiLower(lookup(config.flags, 'synthetic-header') ?? 'x-switchyard-synthetic');
  mirrorRole = lookup(config.flags, 'mirror-role');
}

export function evaluate() {
  if (cfg === null) throw new Error('evaluate called before configure');
  if (cfg.mode === 'production') {
    const d = mirrored(stable(cfg));
    d.reason += 'production mode: everything to stable';
    return d;
  }
  if (headerIsTrue(header)) {
    const d = role(cfg, 'candidate');
    d.traffic = 'synthetic';
    d.reason += `synthetic mode and ${header} is true`;
    return d;
  }
  const d = mirrored(stable(cfg));
  d.reason += `synthetic mode, no true ${header}`;
  return d;
}

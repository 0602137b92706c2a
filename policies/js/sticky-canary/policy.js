// sticky-canary, ported from policies/sticky-canary (Rust): `canary-percent`
// (0-100, resolution 0.01 %) of users go to the candidate, keyed by the header
// named in flag `sticky-header` (default `x-user-id`); a user is in the canary
// when the host's bucket of that header (salt: flag `sticky-salt`, default the
// function name) is below the percentage in basis points. No key: stable.
//
// Build (QuickJS, the default) and test, from the repo root after `npm ci --prefix policies/js`:
//   switchyard policy build policies/js/sticky-canary
//   switchyard policy test policies/js/sticky-canary/target/sticky-canary.component.wasm policies/sticky-canary/cases.json
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

// Rust's `{:?}` for str: quotes, \\ \" \t \r \n \0, and \u{hex} for chars
// Rust deems non-printable. Covered here: Cc, Zs (but ' '), Zl, Zp, Cf and Co.
// Not covered (printed as-is, unlike Rust): unassigned code points and
// grapheme-extend marks. (StarlingMonkey has no ICU, so no \p{..} classes.)
const UNPRINTABLE = [
  [0x00, 0x1f], [0x7f, 0x9f], [0xa0, 0xa0], [0xad, 0xad], [0x600, 0x605], [0x61c, 0x61c],
  [0x6dd, 0x6dd], [0x70f, 0x70f], [0x890, 0x891], [0x8e2, 0x8e2], [0x1680, 0x1680],
  [0x180e, 0x180e], [0x2000, 0x200f], [0x2028, 0x202f], [0x205f, 0x2064], [0x2066, 0x206f],
  [0x3000, 0x3000], [0xe000, 0xf8ff], [0xfeff, 0xfeff], [0xfff9, 0xfffb], [0x110bd, 0x110bd],
  [0x110cd, 0x110cd], [0x13430, 0x1343f], [0x1bca0, 0x1bca3], [0x1d173, 0x1d17a],
  [0xe0001, 0xe0001], [0xe0020, 0xe007f], [0xf0000, 0x10ffff],
];
const unprintable = (cp) => UNPRINTABLE.some(([lo, hi]) => cp >= lo && cp <= hi);
function rustDebugStr(s) {
  let out = '"';
  for (const c of s) {
    switch (c) {
      case '\\': out += '\\\\'; break;
      case '"': out += '\\"'; break;
      case '\t': out += '\\t'; break;
      case '\r': out += '\\r'; break;
      case '\n': out += '\\n'; break;
      case '\0': out += '\\0'; break;
      default:
        if (unprintable(c.codePointAt(0))) out += `\\u{${c.codePointAt(0).toString(16)}}`;
        else out += c;
    }
  }
  return out + '"';
}

// What Rust's `str::parse::<f64>` accepts.
const RUST_F64 = /^[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?$/;
const RUST_F64_SPECIAL = /^[+-]?(?:inf|infinity|nan)$/i;
function parseRustF64(s) {
  if (RUST_F64.test(s)) return Number(s);
  if (RUST_F64_SPECIAL.test(s)) return /nan/i.test(s) ? NaN : s[0] === '-' ? -Infinity : Infinity;
  return undefined;
}

// Canary share in basis points (0..=10000), or { error } with Rust's reason.
function basisPoints(raw) {
  if (raw === undefined) return { bp: 0 };
  const p = parseRustF64(asciiTrim(raw));
  if (p !== undefined && p >= 0 && p <= 100) {
    // f64::round: half away from zero (p * 100 is never negative here).
    const x = p * 100;
    let t = Math.trunc(x);
    if (x - t >= 0.5) t += 1;
    return { bp: t };
  }
  return { error: `canary-percent ${rustDebugStr(raw)} is not a number in 0..=100` };
}

let cfg = null;
let threshold = { bp: 0 };
let header = 'x-user-id';
let salt = '';

export function configure(config) {
  cfg = config;
  threshold = basisPoints(lookup(config.flags, 'canary-percent'));
  header = asciiLower(lookup(config.flags, 'sticky-header') ?? 'x-user-id');
  salt = lookup(config.flags, 'sticky-salt') ?? config.function;
}

export function evaluate() {
  if (cfg === null) throw new Error('evaluate called before configure');
  if (threshold.error !== undefined) {
    const d = stable(cfg);
    d.reason += threshold.error;
    return d;
  }
  const bucket = request.headerBucket(header, salt);
  if (bucket == null) { // none: undefined (jco) or null (QuickJS)
    const d = stable(cfg);
    d.reason += 'no sticky key';
    return d;
  }
  const d = bucket < threshold.bp ? role(cfg, 'candidate') : stable(cfg);
  d.reason += bucket < threshold.bp ? 'in canary' : 'not in canary';
  return d;
}

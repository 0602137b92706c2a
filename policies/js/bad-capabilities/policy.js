// A policy that reaches for what policies never get: the clock, randomness,
// the environment, the network. Header `x-try` picks which. Each attempt's
// outcome becomes the decision's reason, so the host's tests can check that
// nothing real came back: built with WASI stubbed out (QuickJS) or disabled
// (SpiderMonkey), a call either fails inside the policy or traps, and the
// host's fail-safe applies. (JavaScript engines have no file API at all.)
import * as request from 'switchyard:policy/request@0.2.0';

function attempt(what) {
  switch (what) {
    case 'clock':
      return String(Date.now());
    case 'random':
      return String(Math.random());
    case 'env':
      return typeof process === 'undefined' ? 'no process object' : JSON.stringify(process.env);
    case 'socket':
      if (typeof fetch === 'undefined') return 'no fetch';
      fetch(`http://127.0.0.1:${request.header('x-port') ?? '80'}/`);
      return 'connected: request sent';
    default:
      return 'nothing tried';
  }
}

export function configure(_config) {}

export function evaluate() {
  const what = request.header('x-try') ?? '';
  let outcome;
  try {
    outcome = 'got ' + attempt(what);
  } catch (e) {
    outcome = `failed: ${e}`;
  }
  return { target: { tag: 'qualifier', val: 'stable' }, traffic: 'production', mirror: undefined, context: [], reason: `${what} ${outcome}` };
}

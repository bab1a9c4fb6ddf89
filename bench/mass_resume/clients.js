'use strict';
// WebSocket clients for bench/mass_resume.py: many idle connections, a sample of them probing echoes.
//
//   node clients.js URL CONNECTIONS SAMPLE INTERVAL_MS [--concurrency K] [--drain-ms MS] [--open-timeout S]
//
// Opens CONNECTIONS WebSockets (at most K handshakes at a time, default 200) and prints
// {"event":"open",...}. SAMPLE of them, spread evenly over the opening order, are probes: each asks its
// backend's name (the text message "?", which bench/ws/echo.js answers with its NAME) and the script
// prints {"event":"asked",...}. Then it reads commands on stdin, one a line:
//
//   start            the probes start sending "<probe>:<seq>" every INTERVAL_MS (phases spread over one
//                    interval); t0 is now (CLOCK_MONOTONIC, as Python's time.monotonic_ns())
//   mark NAME NS     an instant on the timeline (NS: CLOCK_MONOTONIC nanoseconds)
//   stop             stop sending, wait --drain-ms (default 2000) for late echoes, ask each probe's backend
//                    again, print {"event":"result",...} and exit
//
// The result holds, per probe, the send and first-echo times of each seq (ms since t0, null when never
// echoed) and its backend before and after; and every connection's close before the end (time, code).

const path = require('path');
const WebSocket = require(path.join(__dirname, '..', 'ws', 'node_modules', 'ws'));
const { openOne } = require(path.join(__dirname, '..', 'ws', 'common.js'));

const HANDSHAKE_TIMEOUT_MS = 20000;

function emit(object) {
  return new Promise((resolve) => process.stdout.write(JSON.stringify(object) + '\n', resolve));
}

function usage() {
  console.error('usage: node clients.js URL CONNECTIONS SAMPLE INTERVAL_MS [--concurrency K] [--drain-ms MS] '
    + '[--open-timeout S]');
  process.exit(2);
}

function parseArgs(argv) {
  const positional = [];
  const options = { concurrency: 200, drainMs: 2000, openTimeout: 120 };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '--concurrency') options.concurrency = Number(argv[++i]);
    else if (arg === '--drain-ms') options.drainMs = Number(argv[++i]);
    else if (arg === '--open-timeout') options.openTimeout = Number(argv[++i]);
    else positional.push(arg);
  }
  if (positional.length !== 4) usage();
  const args = { url: positional[0], connections: Number(positional[1]), sample: Number(positional[2]),
    interval: Number(positional[3]), ...options };
  if (!Number.isInteger(args.connections) || args.connections < 1 || !Number.isInteger(args.sample)
      || args.sample < 1 || args.sample > args.connections || !(args.interval > 0) || !(args.concurrency >= 1)) {
    usage();
  }
  return args;
}

const nowNs = () => process.hrtime.bigint();
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const round3 = (x) => (Number.isFinite(x) ? Math.round(x * 1000) / 1000 : null);


async function main() {
  const args = parseArgs(process.argv.slice(2));
  for (const signal of ['SIGTERM', 'SIGINT']) process.on(signal, () => process.exit(1));
  const sockets = new Array(args.connections).fill(null);
  const errors = {};
  const closes = [];
  let t0 = null;
  const since = () => (t0 === null ? 0 : Number(nowNs() - t0) / 1e6);
  let ending = false;

  const began = Date.now();
  const deadline = began + args.openTimeout * 1000;
  let next = 0;
  const worker = async () => {
    while (next < args.connections && Date.now() < deadline) {
      const index = next++;
      const { socket, error } = await openOne(WebSocket, args.url, HANDSHAKE_TIMEOUT_MS);
      if (error) {
        errors[error] = (errors[error] || 0) + 1;
        continue;
      }
      sockets[index] = socket;
      socket.on('close', (code) => {
        if (!ending) closes.push([index, round3(since()), code]);
      });
      socket.on('error', () => {});
    }
  };
  await Promise.all(Array.from({ length: Math.min(args.concurrency, args.connections) }, worker));
  const opened = sockets.filter((s) => s).length;
  await emit({ event: 'open', opened, failed: args.connections - opened, errors, open_ms: Date.now() - began });
  if (opened === 0) process.exit(1);

  // The probes: SAMPLE connections spread evenly over the opening order.
  const probes = [];
  for (let i = 0; i < args.sample; i++) {
    // (+ i % 2: an even stride would pick every probe on one backend of a round robin)
    const index = Math.min(args.connections - 1, Math.floor((i * args.connections) / args.sample) + (i % 2));
    if (!sockets[index]) continue;
    probes.push({ id: i, index, socket: sockets[index], sent: [], echoed: [], names: [], nextSeq: 0, due: 0 });
  }
  for (const probe of probes) {
    probe.socket.on('message', (data) => {
      const text = data.toString();
      const colon = text.indexOf(':');
      if (colon < 0) {
        probe.names.push(text);
        return;
      }
      const seq = Number(text.slice(colon + 1));
      if (Number(text.slice(0, colon)) === probe.id && seq < probe.nextSeq && probe.echoed[seq] === null) {
        probe.echoed[seq] = since();
      }
    });
  }
  const ask = async () => {
    const before = probes.map((p) => p.names.length);
    for (const probe of probes) if (probe.socket.readyState === WebSocket.OPEN) probe.socket.send('?');
    const askDeadline = Date.now() + 5000;
    while (probes.some((p, i) => p.names.length === before[i] && p.socket.readyState === WebSocket.OPEN)
           && Date.now() < askDeadline) await sleep(10);
    return probes.map((p, i) => (p.names.length > before[i] ? p.names[p.names.length - 1] : null));
  };
  const namesBefore = await ask();
  const count = (names) => names.reduce((acc, n) => ({ ...acc, [n]: (acc[n] || 0) + 1 }), {});
  await emit({ event: 'asked', probes: probes.length, backends: count(namesBefore) });

  let ticker = null;
  const marks = {};
  let stopped;
  const stopping = new Promise((resolve) => { stopped = resolve; });
  const tick = () => {
    const t = since();
    for (const probe of probes) {
      if (probe.due > t || probe.socket.readyState !== WebSocket.OPEN) continue;
      probe.due += args.interval;
      const seq = probe.nextSeq++;
      probe.sent.push(t);
      probe.echoed.push(null);
      probe.socket.send(`${probe.id}:${seq}`);
    }
  };
  let buffer = '';
  process.stdin.setEncoding('utf8');
  process.stdin.on('data', (chunk) => {
    buffer += chunk;
    let newline;
    while ((newline = buffer.indexOf('\n')) >= 0) {
      const [word, name, ns] = buffer.slice(0, newline).trim().split(/\s+/);
      buffer = buffer.slice(newline + 1);
      if (word === 'start' && ticker === null) {
        t0 = nowNs();
        for (const probe of probes) probe.due = (probe.id * args.interval) / probes.length;
        ticker = setInterval(tick, 1);
        emit({ event: 'start', t0_ns: t0.toString() });
      } else if (word === 'mark' && name && t0 !== null) {
        marks[name] = round3(Number(BigInt(ns) - t0) / 1e6);
      } else if (word === 'stop') {
        stopped();
      }
    }
  });
  process.stdin.on('error', () => {});
  await stopping;
  if (ticker !== null) clearInterval(ticker);
  await sleep(args.drainMs);
  const namesAfter = await ask();
  ending = true;
  await emit({
    event: 'result',
    opened,
    end_ms: round3(since()),
    marks,
    closes,
    probes: probes.map((p, i) => ({ id: p.id, index: p.index, before: namesBefore[i], after: namesAfter[i],
      sent: p.sent.map(round3), echoed: p.echoed.map(round3) })),
  });
  for (const socket of sockets) if (socket) socket.terminate();
  process.exit(0);
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});

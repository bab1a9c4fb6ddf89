'use strict';
// WebSocket clients for bench/ws_resume.py: steady numbered text messages, checked echoes.
//
//   node clients.js URL CLIENTS INTERVAL_MS SECONDS
//       [--mark-at NAME=MS ...] [--drain-ms MS] [--open-timeout S] [--concurrency K] [--list-limit N]
//       [--gap-list-ms MS] [--wait-go]
//
// Opens CLIENTS WebSocket connections (at most K handshakes at a time), prints
// {"event":"open",...}, then {"event":"start","t0_ns":...}: from then on each client sends
// the text message "<client>:<seq>" (seq from 0) every INTERVAL_MS, the clients' phases
// spread evenly over one interval (a 1 ms ticker sends what is due). After SECONDS it stops sending, waits --drain-ms
// (default 3000) for late echoes, and prints one {"event":"result",...} line, then closes.
//
// Times in the result are milliseconds since t0. t0_ns is process.hrtime.bigint() at the
// start, i.e. CLOCK_MONOTONIC nanoseconds on Linux, the clock of Python's time.monotonic_ns(),
// so the caller can place its own events on the clients' timeline. Marks give instants at
// which the result counts messages in flight (sent at or before the mark, not echoed by it):
// --mark-at NAME=MS or --mark-at MS (ms since t0), or a line "mark NAME NS" on stdin (NS: CLOCK_MONOTONIC
// nanoseconds, e.g. taken by the caller right before it killed a backend).
//
// A client "disconnects" when its connection closes before the end of the drain. A message
// is lost when it was sent and never echoed (a client stops sending once it is closed),
// duplicated when echoed more than once, out of order when its first echo comes after the
// echo of a higher seq of the same client. Gaps are between consecutive echoes of a client;
// those longer than --gap-list-ms (default 100) are listed. Lists hold at most --list-limit
// entries (default 20000) each.
//
// Each mark also gives the longest silence of each client from the mark on: the longest stretch
// between consecutive first echoes that ends after the mark (for a client that closed, or whose last
// messages were never echoed, its last echo to the end counts as one), summarised as p50/p99/max over
// the clients still open at the end ("silence") and over those that closed ("silence_closed").
//
// --wait-go: after the open line, wait for a line "go" on stdin before starting, so several client
// processes (bench/upgrade_scenario.py runs one per WebSocket mode) start sending together.

const path = require('path');
const WebSocket = require(path.join(__dirname, '..', 'ws', 'node_modules', 'ws')); // bench/ws's ws module
const { openOne } = require(path.join(__dirname, '..', 'ws', 'common.js'));

const HANDSHAKE_TIMEOUT_MS = 10000;
const CLOSE_GRACE_MS = 2000;

/** Write one JSON line; resolves once it has been handed to the pipe (so exiting cannot truncate it). */
function emit(object) {
  return new Promise((resolve) => process.stdout.write(JSON.stringify(object) + '\n', resolve));
}

function usage() {
  console.error('usage: node clients.js URL CLIENTS INTERVAL_MS SECONDS [--mark-at NAME=MS ...] '
    + '[--drain-ms MS] [--open-timeout S] [--concurrency K] [--list-limit N] [--gap-list-ms MS] [--wait-go]');
  process.exit(2);
}

function parseArgs(argv) {
  const positional = [];
  const options = { marks: [], drainMs: 3000, openTimeout: 60, concurrency: 100, listLimit: 20000, gapListMs: 100,
    waitGo: false };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '--mark-at') {
      const value = String(argv[++i]); // NAME=MS, or just MS (named "at<MS>")
      const [name, ms] = value.includes('=') ? value.split('=') : [`at${value}`, value];
      if (!(Number(ms) >= 0)) usage();
      options.marks.push({ name, ms: Number(ms) });
    } else if (arg === '--drain-ms') options.drainMs = Number(argv[++i]);
    else if (arg === '--open-timeout') options.openTimeout = Number(argv[++i]);
    else if (arg === '--concurrency') options.concurrency = Number(argv[++i]);
    else if (arg === '--list-limit') options.listLimit = Number(argv[++i]);
    else if (arg === '--gap-list-ms') options.gapListMs = Number(argv[++i]);
    else if (arg === '--wait-go') options.waitGo = true;
    else positional.push(arg);
  }
  if (positional.length !== 4) usage();
  const args = {
    url: positional[0], clients: Number(positional[1]), interval: Number(positional[2]),
    seconds: Number(positional[3]), ...options,
  };
  if (!Number.isInteger(args.clients) || args.clients < 1 || !(args.interval > 0) || !(args.seconds > 0)
      || !(args.drainMs >= 0) || !(args.openTimeout > 0) || !(args.concurrency >= 1) || !(args.listLimit >= 0)
      || !(args.gapListMs >= 0)) {
    usage();
  }
  return args;
}

const nowNs = () => process.hrtime.bigint();

/** One connection and everything recorded about it. */
class Client {
  constructor(id, capacity) {
    this.id = id;
    this.socket = null;
    this.localPort = null;
    this.sent = new Float64Array(capacity).fill(NaN); // send time of each seq, ms since t0
    this.echoed = new Float64Array(capacity).fill(NaN); // first echo time of each seq
    this.echoes = new Uint16Array(capacity); // echoes received per seq
    this.nextSeq = 0;
    this.maxEchoed = -1;
    this.lastEcho = NaN;
    this.longestGap = { ms: 0, from: NaN, to: NaN };
    this.gaps = []; // [from, to] of gaps longer than --gap-list-ms
    this.closed = null; // {t, code, reason} when closed before the end
    this.outOfOrder = [];
    this.foreign = 0; // echoes naming another client or not parseable
    this.due = 0; // when the next message is due, ms since t0
  }
}


/** Open every client's connection, ``concurrency`` handshakes at a time, within ``timeoutMs``. */
async function openAll(args, clients) {
  const errors = {};
  let next = 0;
  const deadline = Date.now() + args.openTimeout * 1000;
  const worker = async () => {
    while (next < clients.length && Date.now() < deadline) {
      const client = clients[next++];
      const { socket, error } = await openOne(WebSocket, args.url, HANDSHAKE_TIMEOUT_MS);
      if (error) errors[error] = (errors[error] || 0) + 1;
      else client.socket = socket;
    }
  };
  await Promise.all(Array.from({ length: Math.min(args.concurrency, clients.length) }, worker));
  return errors;
}

function percentile(sorted, fraction) {
  if (sorted.length === 0) return null;
  return sorted[Math.min(sorted.length - 1, Math.floor(fraction * sorted.length))];
}

/**
 * A client's longest silence ending after ``t`` (ms since t0): the longest stretch between consecutive
 * first echoes, or from its last echo to ``endMs`` when it closed or a message sent after that echo never
 * came back (the stream stopped).
 */
function longestSilence(client, t, endMs) {
  const times = [];
  for (let seq = 0; seq < client.nextSeq; seq++) {
    if (Number.isFinite(client.echoed[seq])) times.push(client.echoed[seq]);
  }
  times.sort((a, b) => a - b);
  let longest = 0;
  let previous = times.length ? times[0] : 0;
  for (const echo of times) {
    if (echo > t) longest = Math.max(longest, echo - previous);
    previous = echo;
  }
  let stopped = client.closed !== null;
  for (let seq = client.nextSeq - 1; seq >= 0 && !stopped && client.sent[seq] >= previous; seq--) {
    stopped = !Number.isFinite(client.echoed[seq]);
  }
  if (stopped && endMs > t) longest = Math.max(longest, endMs - previous);
  return longest;
}

/** Longest silences from ``t`` on: p50/p99/max over the clients open at the end, and over those that closed. */
function silences(clients, t, endMs) {
  const summary = (group) => {
    const sorted = Float64Array.from(group.map((c) => longestSilence(c, t, endMs))).sort();
    return { clients: sorted.length, p50_ms: round3(percentile(sorted, 0.5)), p99_ms: round3(percentile(sorted, 0.99)),
      max_ms: round3(sorted.length ? sorted[sorted.length - 1] : null) };
  };
  const open = clients.filter((c) => c.socket);
  return { silence: summary(open.filter((c) => !c.closed)), silence_closed: summary(open.filter((c) => c.closed)) };
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const round3 = (x) => (Number.isFinite(x) ? Math.round(x * 1000) / 1000 : null);

async function main() {
  const args = parseArgs(process.argv.slice(2));
  for (const signal of ['SIGTERM', 'SIGINT']) process.on(signal, () => process.exit(1));
  const capacity = Math.ceil((args.seconds * 1000) / args.interval) + 2;
  const clients = Array.from({ length: args.clients }, (_, i) => new Client(i, capacity));
  const stdinMarks = [];
  let go = null; // with --wait-go: resolves the wait for the "go" line
  const goSaid = new Promise((resolve) => { go = resolve; });
  let stdinBuffer = '';
  process.stdin.setEncoding('utf8');
  process.stdin.on('data', (chunk) => {
    stdinBuffer += chunk;
    let newline;
    while ((newline = stdinBuffer.indexOf('\n')) >= 0) {
      const [word, name, ns] = stdinBuffer.slice(0, newline).trim().split(/\s+/);
      stdinBuffer = stdinBuffer.slice(newline + 1);
      if (word === 'mark' && name) stdinMarks.push({ name, ns: ns ? BigInt(ns) : nowNs() });
      else if (word === 'go' && go) go();
    }
  });
  process.stdin.on('error', () => {});

  const began = Date.now();
  const errors = await openAll(args, clients);
  const opened = clients.filter((c) => c.socket).length;
  await emit({ event: 'open', opened, failed: args.clients - opened, errors, open_ms: Date.now() - began });
  if (opened === 0) process.exit(1);
  if (args.waitGo) await goSaid;

  const t0 = nowNs();
  const since = () => Number(nowNs() - t0) / 1e6;
  let ending = false;
  for (const client of clients) {
    const socket = client.socket;
    if (!socket) continue;
    client.localPort = socket._socket ? socket._socket.localPort : null;
    socket.on('message', (data) => {
      const t = since();
      const text = data.toString();
      const colon = text.indexOf(':');
      const seq = Number(text.slice(colon + 1));
      if (colon < 0 || Number(text.slice(0, colon)) !== client.id || !Number.isInteger(seq) || seq < 0
          || seq >= client.nextSeq) {
        client.foreign++;
        return;
      }
      client.echoes[seq]++;
      if (client.echoes[seq] === 1) {
        client.echoed[seq] = t;
        if (seq < client.maxEchoed) {
          client.outOfOrder.push([seq, client.sent[seq], t]);
        } else {
          client.maxEchoed = seq;
        }
      }
      if (Number.isFinite(client.lastEcho)) {
        const gap = t - client.lastEcho;
        if (gap > client.longestGap.ms) client.longestGap = { ms: gap, from: client.lastEcho, to: t };
        if (gap > args.gapListMs && client.gaps.length < args.listLimit) client.gaps.push([client.lastEcho, t]);
      }
      client.lastEcho = t;
    });
    socket.on('close', (code, reason) => {
      if (!ending) client.closed = { t: since(), code, reason: reason.toString() };
    });
    socket.on('error', () => {});
  }
  await emit({ event: 'start', t0_ns: t0.toString(), opened });

  // One ticker for all clients, on an absolute schedule: seq n of client i is due at
  // phase(i) + n * interval. A client sends at most one message per tick, so after a
  // stall of the event loop it catches up over the next ticks rather than in one burst
  // (separate setIntervals would fire together after a stall and stay in step from then on).
  const connected = clients.filter((client) => client.socket);
  for (const client of connected) client.due = (client.id * args.interval) / args.clients;
  const sendingMs = args.seconds * 1000;
  const tick = () => {
    const t = since();
    for (const client of connected) {
      if (client.due > t || client.due >= sendingMs || client.closed || client.nextSeq >= capacity
          || client.socket.readyState !== WebSocket.OPEN) continue;
      client.due += args.interval;
      const seq = client.nextSeq++;
      client.sent[seq] = since();
      client.socket.send(`${client.id}:${seq}`);
    }
  };
  const ticker = setInterval(tick, 1);
  tick();
  await sleep(sendingMs);
  clearInterval(ticker);
  await sleep(args.drainMs);
  ending = true;
  const endMs = since();

  // Totals.
  const closeCodes = {};
  const disconnects = [];
  const lostList = [];
  const duplicateList = [];
  const outOfOrderList = [];
  const gapList = [];
  let sent = 0;
  let scheduled = 0; // sends due by the schedule while the client was open
  let echoed = 0;
  let lost = 0;
  let duplicated = 0;
  let duplicatedSeqs = 0;
  let outOfOrder = 0;
  let foreign = 0;
  let rtts = new Float64Array(1 << 16);
  let samples = 0;
  let gap = { ms: 0, from: null, to: null, client: null };
  for (const client of clients) {
    if (!client.socket) continue;
    if (client.closed) {
      const key = String(client.closed.code);
      closeCodes[key] = (closeCodes[key] || 0) + 1;
      disconnects.push({ client: client.id, t: round3(client.closed.t), code: client.closed.code,
        reason: client.closed.reason.slice(0, 80) });
    }
    foreign += client.foreign;
    const phase = (client.id * args.interval) / args.clients;
    const until = Math.min(client.closed ? client.closed.t : Infinity, args.seconds * 1000);
    scheduled += Math.max(0, Math.ceil((until - phase) / args.interval));
    for (let seq = 0; seq < client.nextSeq; seq++) {
      sent++;
      const count = client.echoes[seq];
      if (count === 0) {
        lost++;
        if (lostList.length < args.listLimit) lostList.push([client.id, seq, round3(client.sent[seq])]);
        continue;
      }
      echoed++;
      if (count > 1) {
        duplicated += count - 1;
        duplicatedSeqs++;
        if (duplicateList.length < args.listLimit) {
          duplicateList.push([client.id, seq, round3(client.sent[seq]), count - 1]);
        }
      }
      if (samples === rtts.length) {
        const bigger = new Float64Array(rtts.length * 2);
        bigger.set(rtts);
        rtts = bigger;
      }
      rtts[samples++] = client.echoed[seq] - client.sent[seq];
    }
    outOfOrder += client.outOfOrder.length;
    for (const [seq, s, e] of client.outOfOrder) {
      if (outOfOrderList.length < args.listLimit) outOfOrderList.push([client.id, seq, round3(s), round3(e)]);
    }
    for (const [from, to] of client.gaps) {
      if (gapList.length < args.listLimit) gapList.push([client.id, round3(from), round3(to)]);
    }
    if (client.longestGap.ms > gap.ms) {
      gap = { ms: client.longestGap.ms, from: client.longestGap.from, to: client.longestGap.to, client: client.id };
    }
  }
  const sorted = rtts.subarray(0, samples).sort();

  // Messages in flight at each mark: sent at or before it, not echoed by it.
  const marks = [
    ...args.marks.map((m) => ({ name: m.name, t: m.ms })),
    ...stdinMarks.map((m) => ({ name: m.name, t: Number(m.ns - t0) / 1e6 })),
  ].map(({ name, t }) => {
    let inFlight = 0;
    const perClient = {};
    for (const client of clients) {
      if (!client.socket) continue;
      let mine = 0;
      for (let seq = 0; seq < client.nextSeq && client.sent[seq] <= t; seq++) {
        if (!(client.echoed[seq] <= t)) mine++;
      }
      if (mine) perClient[client.id] = mine;
      inFlight += mine;
    }
    return { name, t: round3(t), in_flight: inFlight, per_client: perClient, ...silences(clients, t, endMs) };
  });

  await emit({
    event: 'result',
    clients: args.clients,
    opened,
    interval_ms: args.interval,
    seconds: args.seconds,
    end_ms: round3(endMs),
    disconnected: disconnects.length,
    close_codes: closeCodes,
    disconnects,
    sent,
    scheduled,
    echoed,
    lost,
    duplicated,
    out_of_order: outOfOrder,
    foreign,
    longest_gap_ms: round3(gap.ms),
    longest_gap: { client: gap.client, from: round3(gap.from), to: round3(gap.to) },
    p50_ms: round3(percentile(sorted, 0.5)),
    p99_ms: round3(percentile(sorted, 0.99)),
    max_ms: round3(samples ? sorted[samples - 1] : null),
    marks,
    local_ports: Object.fromEntries(clients.filter((c) => c.localPort).map((c) => [c.id, c.localPort])),
    lost_list: lostList,
    duplicate_list: duplicateList,
    out_of_order_list: outOfOrderList,
    gaps: gapList,
    lists_truncated: lostList.length < lost || duplicateList.length < duplicatedSeqs
      || outOfOrderList.length < outOfOrder,
  });

  // Close what is still open, then leave.
  const open = clients.filter((c) => c.socket && c.socket.readyState === WebSocket.OPEN);
  for (const client of open) client.socket.close(1000);
  const closeDeadline = Date.now() + CLOSE_GRACE_MS;
  while (open.some((c) => c.socket.readyState !== WebSocket.CLOSED) && Date.now() < closeDeadline) await sleep(20);
  process.exit(0);
}

if (require.main === module) {
  main().catch((error) => {
    console.error(error);
    process.exit(1);
  });
}

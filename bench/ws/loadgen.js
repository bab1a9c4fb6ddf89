'use strict';
// WebSocket load generator for bench/ws_bench.py (ws + native bufferutil).
//
//   node loadgen.js URL CLIENTS IN_FLIGHT SIZE SECONDS [--warmup S] [--concurrency K] [--open-timeout S]
//
// IN_FLIGHT > 0 (load): CLIENTS connections each keep IN_FLIGHT binary messages of SIZE
//   bytes outstanding, sending a new one whenever an echo comes back. After --warmup
//   seconds (default 1) it prints {"event":"start"}, measures for SECONDS, prints
//   {"event":"stop"}, drains, closes and prints the result: echoed messages in the
//   window, messages/s and round-trip percentiles in ms.
// IN_FLIGHT = 0 (idle): opens CLIENTS connections (at most K handshakes at a time,
//   default 200), prints {"event":"open",...}, keeps them idle until stdin closes or
//   SECONDS pass, closes them and prints the result.
// The sends prompted by the echoes of one read leave in one write (see common.js).
// Every line on stdout is one JSON object; the last one has "event":"result".

const { performance } = require('perf_hooks');
const WebSocket = require('ws');
const { batchedSender, requireNativeBufferutil } = require('./common');

const CLOSE_GRACE_MS = 3000;
const DRAIN_MS = 5000;
const HANDSHAKE_TIMEOUT_MS = 10000;

function emit(object) {
  process.stdout.write(JSON.stringify(object) + '\n');
}

function parseArgs(argv) {
  const usage = 'usage: node loadgen.js URL CLIENTS IN_FLIGHT SIZE SECONDS [--warmup S] [--concurrency K] [--open-timeout S]';
  const positional = [];
  const options = { warmup: 1, concurrency: 200, openTimeout: 120 };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '--warmup') options.warmup = Number(argv[++i]);
    else if (arg === '--concurrency') options.concurrency = Number(argv[++i]);
    else if (arg === '--open-timeout') options.openTimeout = Number(argv[++i]);
    else positional.push(arg);
  }
  if (positional.length !== 5) {
    console.error(usage);
    process.exit(2);
  }
  const [url, clients, inFlight, size, seconds] = positional;
  const args = {
    url, clients: Number(clients), inFlight: Number(inFlight), size: Number(size), seconds: Number(seconds), ...options,
  };
  const integers = ['clients', 'inFlight', 'size', 'concurrency'];
  if (integers.some((key) => !Number.isInteger(args[key]) || args[key] < 0) || args.clients < 1 || args.concurrency < 1
      || !(args.seconds > 0) || !(args.warmup >= 0) || !(args.openTimeout > 0)) {
    console.error(usage);
    process.exit(2);
  }
  return args;
}

/** Open `count` connections, at most `concurrency` handshakes at a time, within `timeoutMs`. */
function openAll(url, count, concurrency, timeoutMs, onEach) {
  return new Promise((resolve) => {
    const sockets = [];
    const errors = {};
    let started = 0;
    let settled = 0;
    let finished = false;
    const finish = () => {
      if (finished) return;
      finished = true;
      clearTimeout(timer);
      resolve({ sockets, failed: count - sockets.length, errors });
    };
    const timer = setTimeout(finish, timeoutMs);
    const next = () => {
      if (finished) return;
      if (started >= count) {
        if (settled >= count) finish();
        return;
      }
      started++;
      const socket = new WebSocket(url, { perMessageDeflate: false, handshakeTimeout: HANDSHAKE_TIMEOUT_MS });
      socket.binaryType = 'nodebuffer';
      let done = false;
      const settle = (error) => {
        if (done) return;
        done = true;
        settled++;
        if (error) {
          errors[error] = (errors[error] || 0) + 1;
          socket.terminate();
        } else {
          sockets.push(socket);
          onEach(socket);
        }
        next();
      };
      socket.once('open', () => settle(null));
      socket.once('error', (error) => settle(error.code || error.message));
      socket.once('unexpected-response', (request, response) => settle(`HTTP ${response.statusCode}`));
    };
    for (let i = 0; i < Math.min(concurrency, count); i++) next();
  });
}

/** Close every socket with a close handshake, terminating those still open after a grace period. */
function closeAll(sockets) {
  return new Promise((resolve) => {
    let open = 0;
    const timer = setTimeout(() => {
      for (const socket of sockets) socket.terminate();
      resolve();
    }, CLOSE_GRACE_MS);
    const closed = () => {
      if (--open === 0) {
        clearTimeout(timer);
        resolve();
      }
    };
    for (const socket of sockets) {
      if (socket.readyState === WebSocket.CLOSED) continue;
      open++;
      socket.once('close', closed);
      socket.close(1000);
    }
    if (open === 0) {
      clearTimeout(timer);
      resolve();
    }
  });
}

function percentile(sorted, fraction) {
  if (sorted.length === 0) return null;
  return sorted[Math.min(sorted.length - 1, Math.floor(fraction * sorted.length))];
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

async function runLoad(args) {
  const payload = Buffer.alloc(args.size, 0x61);
  const state = { running: true, measuring: false, messages: 0, bytes: 0, outstanding: 0, wrongSize: 0, closedEarly: 0 };
  let latencies = new Float64Array(1 << 16);
  let samples = 0;
  const record = (ms) => {
    if (samples === latencies.length) {
      const bigger = new Float64Array(latencies.length * 2);
      bigger.set(latencies);
      latencies = bigger;
    }
    latencies[samples++] = ms;
  };
  const wire = (socket) => {
    const send = batchedSender(socket);
    const sentAt = [];
    let head = 0;
    socket.on('message', (data) => {
      const now = performance.now();
      const sent = sentAt[head++];
      if (head > 1024) {  // drop consumed timestamps now and then
        sentAt.splice(0, head);
        head = 0;
      }
      state.outstanding--;
      if (data.length !== args.size) state.wrongSize++;
      if (state.measuring) {
        state.messages++;
        state.bytes += data.length;
        record(now - sent);
      }
      if (state.running) {
        sentAt.push(performance.now());
        state.outstanding++;
        send(payload, { binary: true });
      }
    });
    socket.on('close', () => {
      if (state.running) state.closedEarly++;
    });
    socket.on('error', () => {});
    socket.start = () => {
      for (let i = 0; i < args.inFlight; i++) {
        sentAt.push(performance.now());
        state.outstanding++;
        send(payload, { binary: true });
      }
    };
  };
  const opened = await openAll(args.url, args.clients, args.concurrency, args.openTimeout * 1000, wire);
  if (opened.failed > 0) {
    emit({ event: 'result', ok: false, opened: opened.sockets.length, failed: opened.failed, errors: opened.errors });
    await closeAll(opened.sockets);
    process.exit(1);
  }
  for (const socket of opened.sockets) socket.start();
  await sleep(args.warmup * 1000);
  state.measuring = true;
  const started = performance.now();
  emit({ event: 'start' });
  await sleep(args.seconds * 1000);
  state.measuring = false;
  const elapsed = (performance.now() - started) / 1000;
  emit({ event: 'stop' });
  state.running = false;
  const drainDeadline = performance.now() + DRAIN_MS;
  while (state.outstanding > 0 && performance.now() < drainDeadline) await sleep(10);
  const undrained = state.outstanding;
  await closeAll(opened.sockets);
  const sorted = latencies.subarray(0, samples).sort();
  emit({
    event: 'result',
    ok: state.closedEarly === 0 && state.wrongSize === 0 && undrained === 0,
    clients: args.clients,
    in_flight: args.inFlight,
    size: args.size,
    seconds: elapsed,
    messages: state.messages,
    bytes: state.bytes,
    rate: state.messages / elapsed,
    p50_ms: percentile(sorted, 0.5),
    p90_ms: percentile(sorted, 0.9),
    p99_ms: percentile(sorted, 0.99),
    p999_ms: percentile(sorted, 0.999),
    max_ms: samples ? sorted[samples - 1] : null,
    closed_early: state.closedEarly,
    wrong_size: state.wrongSize,
    undrained,
  });
}

async function runIdle(args) {
  const state = { holding: false, closedEarly: 0 };
  const wire = (socket) => {
    socket.on('close', () => {
      if (state.holding) state.closedEarly++;
    });
    socket.on('error', () => {});
  };
  const began = performance.now();
  const opened = await openAll(args.url, args.clients, args.concurrency, args.openTimeout * 1000, wire);
  const openSeconds = (performance.now() - began) / 1000;
  state.holding = true;
  emit({ event: 'open', opened: opened.sockets.length, failed: opened.failed, errors: opened.errors, open_seconds: openSeconds });
  await new Promise((resolve) => {
    const timer = setTimeout(resolve, args.seconds * 1000);
    process.stdin.on('data', () => {});
    process.stdin.once('end', () => {
      clearTimeout(timer);
      resolve();
    });
    process.stdin.resume();
  });
  const stillOpen = opened.sockets.filter((socket) => socket.readyState === WebSocket.OPEN).length;
  state.holding = false;
  await closeAll(opened.sockets);
  emit({
    event: 'result',
    ok: opened.failed === 0 && state.closedEarly === 0,
    opened: opened.sockets.length,
    failed: opened.failed,
    errors: opened.errors,
    open_seconds: openSeconds,
    still_open: stillOpen,
    closed_early: state.closedEarly,
  });
  process.stdin.pause();
}

async function main() {
  requireNativeBufferutil();
  const args = parseArgs(process.argv.slice(2));
  for (const signal of ['SIGTERM', 'SIGINT']) process.on(signal, () => process.exit(1));
  if (args.inFlight > 0) await runLoad(args);
  else await runIdle(args);
  process.exit(0);
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});

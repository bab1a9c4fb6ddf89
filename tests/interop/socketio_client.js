#!/usr/bin/env node
// The Socket.IO JavaScript client (npm socket.io-client) emitting with acks, driven by tests/test_engineio.py:
// the same run and the same lines as tests/eio/emitter.py (see there).
//
// Usage: node socketio_client.js http://HOST:PORT [upgrade|polling] [RUN_MS]
//
// Connects over the WebSocket transport only (with "upgrade": long polling first, then the upgrade; the client
// joins its namespaces over polling; with "polling": long polling only), to the namespaces "/" and "/chat" with the auth payload
// {"token": "secret-1"}, emits "tick" every 100 ms alternating namespaces, each with an ack callback, and prints
// ON <server>, MOVED <server>, DISCONNECTED <namespace> <reason>, DONE <json> or ERROR <text>, one per line.
"use strict";

const path = require("path");
const { Manager } = require(path.join(__dirname, "node_modules", "socket.io-client"));

const url = process.argv[2];
const mode = process.argv[3];
const RUN_MS = Number(process.argv[4] || 0); // emit for this long, then finish (0: until the deadline or a move)
const DEADLINE_MS = 25000;
const AFTER_MOVE_MS = 1500;
const LATE_ACKS_MS = 2000; // without an ack, after which the missing ones, older than the move, count as lost
const SETTLE_MS = 8000; // at most for the acks after the emits stopped: a guard (a loaded machine answers late)
const NAMESPACES = ["/", "/chat"];
const AUTH = { token: "secret-1" };

function say(line) {
  process.stdout.write(line + "\n");
}

const manager = new Manager(url, {
  transports: mode === "upgrade" ? ["polling", "websocket"] : mode === "polling" ? ["polling"] : ["websocket"],
  reconnection: false,
});
const sockets = NAMESPACES.map((ns) => manager.socket(ns, { auth: AUTH }));
const acked = new Set();
const servers = {};
let emitted = 0;
let first = null;
let movedAt = null;
let movedSeq = null; // the first emit made after the move was seen
let lastAck = Date.now();
let sid = null;
let sids = null;
let done = false;

setTimeout(() => { say(`ERROR timed out after ${DEADLINE_MS} ms`); process.exit(0); }, DEADLINE_MS + SETTLE_MS + 2000).unref();

sockets.forEach((socket, i) => {
  socket.on("disconnect", (reason) => { if (!done) say(`DISCONNECTED ${NAMESPACES[i]} ${reason}`); });
  socket.on("connect_error", (err) => say(`ERROR connect_error ${NAMESPACES[i]} ${err.message}`));
});

function ackedBy(seq, server) {
  acked.add(seq);
  lastAck = Date.now();
  servers[server] = (servers[server] || 0) + 1;
  if (first === null) {
    first = server;
    say(`ON ${server}`);
  } else if (server !== first && movedAt === null) {
    movedAt = Date.now();
    movedSeq = emitted;
    say(`MOVED ${server}`);
  }
}

// Every emit acked, or the missing acks all of emits older than the move and none came for LATE_ACKS_MS.
function settled() {
  const missing = [];
  for (let n = 0; n < emitted; n++) if (!acked.has(n)) missing.push(n);
  return missing.length === 0 || (movedSeq !== null && missing[missing.length - 1] < movedSeq
                                  && Date.now() - lastAck > LATE_ACKS_MS);
}

function finishWhenSettled() {
  const stopped = Date.now();
  const check = setInterval(() => {
    if (settled() || Date.now() - stopped > SETTLE_MS) {
      clearInterval(check);
      finish();
    }
  }, 50);
}

function finish() {
  done = true;
  const unacked = [];
  for (let n = 0; n < emitted; n++) if (!acked.has(n)) unacked.push(n);
  const report = {
    emitted, acked: acked.size, unacked, servers, sid, sid_after: manager.engine.id,
    transport: manager.engine.transport ? manager.engine.transport.name : null,
    connected: sockets.every((s) => s.connected),
    sids: Object.fromEntries(NAMESPACES.map((ns, i) => [ns, [sids[i], sockets[i].id]])),
  };
  say("DONE " + JSON.stringify(report));
  sockets.forEach((s) => s.disconnect());
  setTimeout(() => process.exit(0), 100);
}

function start() {
  sid = manager.engine.id;
  sids = sockets.map((s) => s.id);
  const started = Date.now();
  const timer = setInterval(() => {
    const seq = emitted++;
    sockets[seq % 2].emit("tick", seq, (server) => ackedBy(seq, server));
    const late = Date.now() - started > (RUN_MS || DEADLINE_MS - LATE_ACKS_MS - 3000);
    if (late || (movedAt !== null && Date.now() - movedAt > AFTER_MOVE_MS)) {
      clearInterval(timer);
      finishWhenSettled();
    }
  }, 100);
}

let connected = 0;
sockets.forEach((socket) => socket.once("connect", () => { if (++connected === sockets.length) start(); }));

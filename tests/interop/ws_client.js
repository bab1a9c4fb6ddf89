#!/usr/bin/env node
// A WebSocket interop client built on Node's `ws` library, driven by tests/test_ws_interop.py.
//
// Usage: node ws_client.js ws://HOST:PORT/PATH [ping-close | CODE:REASON]
//
// With "ping-close", it only sends a ping ("keepalive") and at once a close (4001 "done"), and
// reports the pongs that came back before the close did (RFC 6455 5.5.2: the ping must be answered).
//
// Sends the four messages every interop client sends (see EXPECTED in the test),
// all at once, checks each echo byte for byte and in order, then closes with
// 4001 "done" (or CODE and REASON) and waits for the close handshake and the TCP close. Prints one
// JSON result line on stdout and exits 0 when everything checked out, else 1.
// The close code that came back is reported, not judged: the test compares it.
"use strict";

const crypto = require("crypto");
const path = require("path");
const WebSocket = require(path.join(__dirname, "node_modules", "ws"));

const url = process.argv[2];
const pingClose = process.argv[3] === "ping-close";
const closeWith = process.argv[3] && !pingClose ? process.argv[3] : "4001:done";
const closeCode = Number(closeWith.split(":")[0]);
const closeReason = closeWith.slice(closeWith.indexOf(":") + 1);
const GUARD_MS = 20000;

function bigBinary() {
  const data = Buffer.alloc(100000);
  for (let i = 0; i < data.length; i++) data[i] = (i * 31 + 7) & 0xff;
  return data;
}

const messages = [
  { binary: false, data: "hello, proxy" },
  { binary: false, data: "gr\u00fc\u00dfe \u2603 \u65e5\u672c\u8a9e \u{1F680} \u00e9t\u00e9" },
  { binary: true, data: Buffer.from(Array.from({ length: 256 }, (_, i) => i)) },
  { binary: true, data: bigBinary() },
];

const result = { client: "node-ws " + require(path.join(__dirname, "node_modules", "ws", "package.json")).version,
                 ok: false, echoes: [], errors: [], close: null, pongs: [] };

function asBytes(message) {
  return message.binary ? message.data : Buffer.from(message.data, "utf8");
}

function finish() {
  clearTimeout(guard);
  result.ok = result.errors.length === 0;
  process.stdout.write(JSON.stringify(result) + "\n", () => process.exit(result.ok ? 0 : 1));
}

const guard = setTimeout(() => {
  result.errors.push("timed out after " + GUARD_MS + " ms");
  finish();
}, GUARD_MS);

const ws = new WebSocket(url);
let received = 0;

ws.on("open", () => {
  if (pingClose) {
    ws.ping("keepalive");
    ws.close(4001, "done");
    return;
  }
  for (const message of messages) ws.send(message.data, { binary: message.binary });
});

ws.on("pong", (data) => {
  result.pongs.push(data.toString("utf8"));
});

ws.on("message", (data, isBinary) => {
  const expected = messages[received];
  received += 1;
  const bytes = Buffer.isBuffer(data) ? data : Buffer.concat(data);
  result.echoes.push({ binary: isBinary, length: bytes.length,
                       sha256: crypto.createHash("sha256").update(bytes).digest("hex") });
  if (!expected) {
    result.errors.push("unexpected extra message " + received);
  } else if (isBinary !== expected.binary) {
    result.errors.push("echo " + received + ": binary=" + isBinary + ", sent binary=" + expected.binary);
  } else if (!bytes.equals(asBytes(expected))) {
    result.errors.push("echo " + received + " differs from what was sent");
  } else if (!isBinary && bytes.toString("utf8") !== expected.data) {
    result.errors.push("echo " + received + " does not decode to the sent text");
  }
  if (received === messages.length) ws.close(closeCode, closeReason);
});

ws.on("close", (code, reason) => {
  // `ws` emits "close" once the TCP connection is gone; 1006 means no close frame came back.
  result.close = { code: code, reason: reason.toString("utf8"), clean: code !== 1006 };
  if (pingClose) {
    if (result.pongs.length !== 1 || result.pongs[0] !== "keepalive") {
      result.errors.push("the ping sent before the close got pongs " + JSON.stringify(result.pongs));
    }
  } else if (received !== messages.length) {
    result.errors.push("closed after " + received + " echoes");
  }
  if (code === 1006) result.errors.push("no close frame came back (1006)");
  finish();
});

ws.on("error", (error) => {
  result.errors.push("error: " + error.message);
});

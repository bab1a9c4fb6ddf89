#!/usr/bin/env node
// A Node `ws` client that waits for the proxy to close it, driven by tests/test_ws_clean_close.py.
//
// Usage: node ws_closed.js ws://HOST:PORT/PATH [TRIGGER]
//
// Opens the WebSocket, sends TRIGGER as a text message if given (an echo backend's command, such as "drop"), then
// waits for the 'close' event and prints one JSON result line: its code and reason, and every error seen, the
// WebSocket's and its socket's (ws keeps a socket's ECONNRESET after the closing handshake to itself). The verdict
// is the test's; it exits 1 only when it could not finish.
"use strict";

const path = require("path");
const WebSocket = require(path.join(__dirname, "node_modules", "ws"));

const url = process.argv[2];
const trigger = process.argv[3] || "";
const result = { client: "node-ws", errors: [], resets: [], close: null };

const guard = setTimeout(() => {
  result.errors.push("timed out");
  process.stdout.write(JSON.stringify(result) + "\n", () => process.exit(1));
}, 20000);

const ws = new WebSocket(url);
ws.on("open", () => {
  ws._socket.on("error", (error) => result.resets.push("socket: " + (error.code || String(error))));
  if (trigger) ws.send(trigger);
});
ws.on("error", (error) => result.resets.push("websocket: " + (error.code || String(error))));
ws.on("close", (code, reason) => {
  result.close = { code, reason: reason.toString() };
  // A reset that comes with the TCP close is reported on the socket just after: wait for it a moment.
  setTimeout(() => {
    clearTimeout(guard);
    process.stdout.write(JSON.stringify(result) + "\n", () => process.exit(0));
  }, 100);
});

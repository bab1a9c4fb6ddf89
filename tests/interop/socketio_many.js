#!/usr/bin/env node
// Many Socket.IO JavaScript clients (npm socket.io-client) at once, driven by tests/test_workers.py.
//
// Usage: node socketio_many.js http://HOST:PORT COUNT
//
// Starts COUNT clients with the default transports (long polling first, then the WebSocket upgrade). Each asks
// "whoami" (tests/eio/server.py answers with its name through the ack) once on connect, over long polling, and
// once after its upgrade, over the WebSocket. Prints one JSON line, a list with one object per client:
// {"polling": NAME, "websocket": NAME, "transport": "websocket"|"polling", "error": null|TEXT}.
"use strict";

const path = require("path");
const { io } = require(path.join(__dirname, "node_modules", "socket.io-client"));

const url = process.argv[2];
const count = parseInt(process.argv[3], 10);
const DEADLINE_MS = 20000;
const results = [];
let left = count;

function finish() {
  process.stdout.write(JSON.stringify(results) + "\n");
  process.exit(0);
}

setTimeout(() => {
  results.forEach((r) => { if (r.error === null && r.websocket === null) r.error = "timed out"; });
  finish();
}, DEADLINE_MS).unref();

function done(socket) {
  socket.close();
  left -= 1;
  if (left === 0) finish();
}

for (let i = 0; i < count; i++) {
  const result = { polling: null, websocket: null, transport: "polling", error: null };
  results.push(result);
  const socket = io(url, { reconnection: false, forceNew: true });
  socket.on("connect_error", (err) => { result.error = `connect_error ${err.message}`; done(socket); });
  socket.on("disconnect", (reason) => { if (result.websocket === null) { result.error = `disconnect ${reason}`; done(socket); } });
  socket.on("connect", () => {
    socket.timeout(5000).emit("whoami", (err, name) => {
      if (err) { result.error = "no answer over polling"; done(socket); return; }
      result.polling = name;
      const ask = () => {
        result.transport = socket.io.engine.transport.name;
        socket.timeout(5000).emit("whoami", (err2, name2) => {
          if (err2) result.error = "no answer over the WebSocket";
          else result.websocket = name2;
          done(socket);
        });
      };
      if (socket.io.engine.transport.name === "websocket") ask();
      else socket.io.engine.once("upgrade", ask);
    });
  });
}

'use strict';
// WebSocket echo backend for bench/ws_bench.py: echoes every message as it came
// (binary as binary, text as text), no compression, native bufferutil masking; the
// echoes of the messages one read delivers leave in one write.
//
//   node echo.js PORT [NAME]
//
// Listens on 127.0.0.1:PORT and prints one JSON line once it is listening. With a NAME, the text
// message "?" is answered with NAME instead of echoed (bench/mass_resume.py asks which backend a client is on).

const { WebSocketServer } = require('ws');
const { batchedSender, requireNativeBufferutil } = require('./common');

function main() {
  const port = Number(process.argv[2]);
  if (!Number.isInteger(port) || port <= 0 || port > 65535) {
    console.error('usage: node echo.js PORT [NAME]');
    process.exit(2);
  }
  const name = process.argv[3];
  requireNativeBufferutil();
  const server = new WebSocketServer({
    host: '127.0.0.1',
    port,
    backlog: 4096,
    perMessageDeflate: false,
    clientTracking: false,
    maxPayload: 64 * 1024 * 1024,
  });
  server.on('connection', (socket) => {
    const send = batchedSender(socket);
    socket.on('message', (data, isBinary) => {
      if (name !== undefined && !isBinary && data.length === 1 && data[0] === 63) send(name, { binary: false });
      else send(data, { binary: isBinary });
    });
    socket.on('error', () => socket.terminate());
  });
  server.on('listening', () => console.log(JSON.stringify({ event: 'listening', port })));
  server.on('error', (error) => {
    console.error(`echo: ${error.message}`);
    process.exit(1);
  });
  for (const signal of ['SIGTERM', 'SIGINT']) process.on(signal, () => process.exit(0));
}

main();

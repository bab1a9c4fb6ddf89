'use strict';
// Helpers shared by echo.js, loadgen.js and the resume and upgrade clients.

const path = require('path');

/** Exit unless bufferutil's native addon loads (ws would silently fall back to JavaScript masking). */
function requireNativeBufferutil() {
  try {
    require('node-gyp-build')(path.dirname(require.resolve('bufferutil')));
  } catch (error) {
    console.error(`bufferutil native addon unavailable: ${error.message}`);
    process.exit(2);
  }
}

/**
 * A send function for an open WebSocket that corks its TCP socket until the end of the
 * current tick, so the sends prompted by all the messages of one read leave in one
 * write (one syscall) rather than one write each.
 */
function batchedSender(socket) {
  const raw = socket._socket;
  let corked = false;
  const uncork = () => {
    corked = false;
    if (!raw.destroyed) raw.uncork();
  };
  return (data, options) => {
    if (!corked) {
      corked = true;
      raw.cork();
      process.nextTick(uncork);
    }
    socket.send(data, options);
  };
}

/** Open one WebSocket with ws's ``WebSocket`` class, no compression, its handshake within ``timeoutMs``; resolves with
 * ``{ socket }`` or ``{ error }`` (a code, a message, or the HTTP status of a refusal). */
function openOne(WebSocket, url, timeoutMs) {
  return new Promise((resolve) => {
    const socket = new WebSocket(url, { perMessageDeflate: false, handshakeTimeout: timeoutMs });
    let done = false;
    const settle = (error) => {
      if (done) return;
      done = true;
      if (error) socket.terminate();
      resolve(error ? { error } : { socket });
    };
    socket.once('open', () => settle(null));
    socket.once('error', (error) => settle(error.code || error.message));
    socket.once('unexpected-response', (request, response) => settle(`HTTP ${response.statusCode}`));
  });
}

module.exports = { batchedSender, openOne, requireNativeBufferutil };

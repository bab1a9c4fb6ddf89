'use strict';
// Helpers shared by echo.js and loadgen.js.

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

module.exports = { batchedSender, requireNativeBufferutil };

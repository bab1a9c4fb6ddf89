// The demo page: one WebSocket through the proxy, kept for the life of the page, and a button that stops
// the origin serving it. window.demo holds what the page shows (the tests read it).
"use strict";

const SEND_EVERY = 500; // ms between two messages from the page
const LOG_LINES = 14;

const demo = window.demo = {
  socket: null, opened: null, closes: 0, closeInfo: null,
  serving: null, origins: [], moves: [], sent: 0, echoed: 0, ticks: 0,
  lastFrom: null, lastAt: null, pendingStop: null, restartDelay: 5,
};

const $ = (id) => document.getElementById(id);

function originTag(name) {
  const b = document.createElement("b");
  b.className = "origin-" + name;
  b.textContent = name;
  return b;
}

function log(text, origin, gap) {
  const li = document.createElement("li");
  if (gap) li.className = "gap";
  li.textContent = new Date().toISOString().slice(11, 23) + " ";
  if (origin) li.append(originTag(origin), " ");
  li.append(text);
  const list = $("log");
  list.prepend(li);
  while (list.children.length > LOG_LINES) list.lastChild.remove();
}

function render() {
  const state = $("socket-state");
  if (demo.socket && demo.socket.readyState === WebSocket.OPEN) {
    state.textContent = "open";
    state.className = "big open";
    const seconds = ((Date.now() - demo.opened) / 1000).toFixed(0);
    $("socket-note").textContent = `open for ${seconds} s, never closed` +
      (demo.moves.length ? `, across ${demo.moves.length} move${demo.moves.length > 1 ? "s" : ""}` : "");
  } else if (demo.closes) {
    state.textContent = "closed";
    state.className = "big closed";
    const info = demo.closeInfo;
    $("socket-note").textContent = `closed with code ${info.code} ${info.reason}; reload the page`;
  }
  const serving = $("serving");
  serving.textContent = demo.serving || "?";
  serving.className = "big" + (demo.serving ? " origin-" + demo.serving : "");
  $("sent").textContent = demo.sent;
  $("echoed").textContent = demo.echoed;
  $("ticks").textContent = demo.ticks;
  const missing = demo.sent - demo.echoed;
  $("unanswered").textContent = missing > 1 ?
    `${missing} not echoed (in flight, or lost in a crash: the proxy resends nothing by default)` : "";
  const button = $("stop");
  if (!demo.pendingStop) {
    button.disabled = !demo.serving || !demo.socket || demo.socket.readyState !== WebSocket.OPEN;
    button.textContent = demo.serving ? `Stop origin ${demo.serving} (serving this WebSocket)` :
      "Stop the origin serving this WebSocket";
  }
}

function received(event) {
  let message;
  try { message = JSON.parse(event.data); } catch (e) { return; }
  const now = Date.now();
  const from = message.origin;
  if (demo.serving && from !== demo.serving) {
    const gap = demo.lastAt === null ? null : now - demo.lastAt;
    const move = { from: demo.serving, to: from, gap: gap, at: now, resume: message.resume };
    demo.moves.push(move);
    showMove(move);
    log(`session moved from ${move.from} to ${move.to}: ${gap} ms without a message`, null, true);
  }
  demo.serving = from;
  if (!demo.origins.includes(from)) demo.origins.push(from);
  demo.lastAt = now;
  if (message.kind === "echo") {
    demo.echoed += 1;
    let sentAt = null;
    try { sentAt = JSON.parse(message.text).at; } catch (e) { /* not one of ours */ }
    log(`echo ${message.text.length < 60 ? message.text : "…"}` + (sentAt ? ` (${now - sentAt} ms)` : ""), from);
  } else if (message.kind === "tick") {
    demo.ticks += 1;
    log(`tick ${message.n}`, from);
  } else if (message.kind === "hello") {
    log(`hello (proxy session ${message.session || "none"}, resume #${message.resume ?? "?"})`, from);
  }
  $("session").textContent = message.session ?
    `proxy session ${message.session.slice(0, 12)}…, resume #${message.resume}` : "";
  render();
}

function showMove(move) {
  $("no-moves").hidden = true;
  const li = document.createElement("li");
  li.append("from ", originTag(move.from), " to ", originTag(move.to), ` at ${new Date(move.at).toISOString().slice(11, 19)}: `,
    `${move.gap} ms between the last message from ${move.from} and the first from ${move.to}; `,
    "the browser's WebSocket did not close.");
  $("moves").append(li);
}

function connect() {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const socket = demo.socket = new WebSocket(`${scheme}//${location.host}/ws`);
  socket.onopen = () => {
    demo.opened = Date.now();
    log("WebSocket open");
    setInterval(() => {
      if (socket.readyState !== WebSocket.OPEN) return;
      demo.sent += 1;
      socket.send(JSON.stringify({ n: demo.sent, at: Date.now() }));
      render();
    }, SEND_EVERY);
    render();
  };
  socket.onmessage = received;
  socket.onclose = (event) => {
    demo.closes += 1;
    demo.closeInfo = { code: event.code, reason: event.reason, clean: event.wasClean };
    log(`WebSocket closed: ${event.code} ${event.reason}`, null, true);
    render();
  };
}

async function stopServing() {
  const target = demo.serving;
  const button = $("stop");
  button.disabled = true;
  demo.pendingStop = target;
  $("stop-state").textContent = `asking origin ${target} to stop…`;
  // The request is balanced like any other: an origin that is not the target refuses (409), so ask again.
  let answer = null;
  for (let attempt = 0; attempt < 8 && !answer; attempt++) {
    try {
      const response = await fetch("/api/stop", {
        method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ origin: target }),
      });
      if (response.status === 202) answer = await response.json();
      else if (response.status !== 409) throw new Error(`${response.status} ${await response.text()}`);
    } catch (error) {
      $("stop-state").textContent = `could not stop origin ${target}: ${error}`;
      break;
    }
  }
  if (!answer) {
    demo.pendingStop = null;
    render();
    return;
  }
  log(`origin ${target} stopped (restarts in ${answer.restart_in} s)`, null, true);
  $("stop-state").textContent = `origin ${target} stopped; it restarts in ${answer.restart_in} s. ` +
    "Watch the WebSocket stay open while its session moves.";
  const back = Date.now() + answer.restart_in * 1000;
  const countdown = setInterval(() => {
    const left = Math.max(0, Math.ceil((back - Date.now()) / 1000));
    button.textContent = left ? `Origin ${target} is down (back in ${left} s)` : `Origin ${target} is coming back`;
  }, 250);
  setTimeout(() => {
    clearInterval(countdown);
    demo.pendingStop = null;
    $("stop-state").textContent = `origin ${target} is back: press again to stop the one serving now.`;
    render();
  }, (answer.restart_in + 1) * 1000);
  render();
}

async function info() {
  try {
    const answer = await (await fetch("/api/info")).json();
    if (answer.stats) $("stats").href = answer.stats;
    else $("stats-item").textContent = "No stats page: the admin listener could not be opened (see the log).";
  } catch (error) { /* the links stay as they are */ }
}

$("stop").onclick = stopServing;
$("curl-echo").textContent = `curl -d @file ${location.origin}/echo`;
setInterval(render, 1000);
connect();
info();

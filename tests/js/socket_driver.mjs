// A long-lived driver of stock socket.io-client sockets for tests/integration/realtime.rs.
// Reads one JSON command per line on stdin, prints one JSON line per thing that happened:
//   {"cmd":"connect","name":"a","auth":{...},"opts":{...}}
//       -> {"ev":"connect","name":"a"} | {"ev":"connect_error","name":"a","message":"code"}
//   {"cmd":"emit","name":"a","event":"join_conversation","data":{...},"id":1}
//       -> {"ev":"ack","name":"a","id":1,"data":{...}}       (with "id": asks for an ack)
//   {"cmd":"close","name":"a"}              the client disconnects (no automatic reconnect)
//   {"cmd":"exit"}
// Every server event: {"ev":"event","name":"a","event":"new_message","data":{...}}
// Disconnects: {"ev":"disconnect","name":"a","reason":"..."}
import { io } from "socket.io-client";
import readline from "node:readline";

const base = process.argv[2];
const sockets = new Map();
const out = (o) => process.stdout.write(JSON.stringify(o) + "\n");

function connect({ name, auth, opts }) {
  const s = io(base, {
    auth: auth ?? {},
    reconnection: false,
    forceNew: true,
    transports: opts?.transports ?? ["websocket"],
    extraHeaders: opts?.headers ?? {},
    ...(opts?.ackTimeout ? { ackTimeout: opts.ackTimeout } : {}),
  });
  sockets.set(name, s);
  s.on("connect", () => out({ ev: "connect", name }));
  s.on("connect_error", (err) =>
    out({ ev: "connect_error", name, message: err.message, data: err.data ?? null }),
  );
  s.on("disconnect", (reason) => out({ ev: "disconnect", name, reason }));
  s.onAny((event, data) => out({ ev: "event", name, event, data: data ?? null }));
}

const rl = readline.createInterface({ input: process.stdin });
rl.on("line", (line) => {
  if (!line.trim()) return;
  const c = JSON.parse(line);
  switch (c.cmd) {
    case "connect":
      connect(c);
      break;
    case "emit": {
      const s = sockets.get(c.name);
      if (!s) return out({ ev: "error", message: `no socket ${c.name}` });
      if (c.id === undefined || c.id === null) {
        s.emit(c.event, c.data);
      } else {
        s.timeout(c.timeoutMs ?? 10000).emit(c.event, c.data, (err, data) =>
          out({ ev: "ack", name: c.name, id: c.id, data: err ? { timeout: true } : data }),
        );
      }
      break;
    }
    case "close":
      sockets.get(c.name)?.disconnect();
      break;
    case "exit":
      for (const s of sockets.values()) s.disconnect();
      process.exit(0);
  }
});
rl.on("close", () => {
  for (const s of sockets.values()) s.disconnect();
  process.exit(0);
});

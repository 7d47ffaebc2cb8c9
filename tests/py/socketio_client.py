"""A stock python-socketio client against the server (used by tests/integration/realtime_python.rs).

Connects with a staff access token in the handshake's auth payload, joins a conversation (ack),
sends a message twice with the same clientId (acks), waits for the live new_message, then checks
that a bad token is refused with the REST error code. Prints one JSON object with what it saw.
"""

import json
import sys
import threading

import socketio

base, token, conversation_id = sys.argv[1], sys.argv[2], sys.argv[3]
out = {}
got_message = threading.Event()

sio = socketio.Client(reconnection=False)


@sio.on("new_message")
def on_new_message(msg):
    out.setdefault("newMessages", []).append(msg)
    got_message.set()


sio.connect(base, auth={"token": token}, transports=["websocket"], wait_timeout=10)
out["connected"] = sio.connected
out["join"] = sio.call("join_conversation", {"conversationId": conversation_id}, timeout=10)
send = {"conversationId": conversation_id, "content": "Hello from python-socketio", "clientId": "py-1"}
out["send"] = sio.call("send_message", send, timeout=10)
out["resend"] = sio.call("send_message", send, timeout=10)
out["gotLive"] = got_message.wait(10)
sio.disconnect()

bad = socketio.Client(reconnection=False)


@bad.on("connect_error")
def on_connect_error(data):
    # The refusal's payload: socketioxide sends the REST error code as the message.
    out["badError"] = data


try:
    bad.connect(base, auth={"token": "not-a-token"}, transports=["websocket"], wait_timeout=10)
    out["badRefused"] = None
    bad.disconnect()
except socketio.exceptions.ConnectionError as e:
    out["badRefused"] = str(e)

print(json.dumps(out))

#!/usr/bin/env python3
"""A logging stand-in for the providers, for capturing what Claude Code sends.

It answers the Anthropic Messages API (first-party and gateway mode), Bedrock
(invoke / invoke-with-response-stream, as AWS event-stream) and Vertex AI
(rawPredict / streamRawPredict), and writes every request it receives, in
arrival order, to OUT_DIR as one JSON file in the fixture format of
tests/data/claude-code (ts, method, path, ordered headers as sent, body,
what was answered). It shares no code with tollgate on purpose: a capture
must show what the client does, not what tollgate expects.

With --subagent, a main agent's first turn is answered with a tool_use of
Claude Code's `Agent` tool, so the client starts a subagent and its requests
(with their agent IDs) are captured too.

Usage: claude_code_capture.py --port PORT --out OUT_DIR [--subagent]
"""

import argparse
import base64
import binascii
import json
import os
import re
import struct
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOCK = threading.Lock()
COUNTER = [0]
# Sessions whose first turn was answered with the Agent tool already.
SUBAGENT_SESSIONS = set()
MODELS = ["claude-opus-4-7", "claude-sonnet-4-6", "claude-haiku-4-5"]


def sse(events):
    """The text of an SSE stream of (type, data) events."""
    return "".join(
        f"event: {kind}\ndata: {json.dumps(dict(data, type=kind))}\n\n"
        for kind, data in events
    ).encode()


def answer_events(model, tool_use):
    """The Messages API stream of one answer: text, or one Agent tool_use."""
    usage = {
        "input_tokens": 120,
        "output_tokens": 1,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }
    events = [(
        "message_start",
        {"message": {
            "id": "msg_capture_" + uuid.uuid4().hex[:20],
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": usage,
        }},
    )]
    if tool_use:
        agent_input = {
            "description": "Say hello",
            "prompt": "Reply with the single word hello.",
            "subagent_type": "general-purpose",
        }
        events += [
            ("content_block_start", {"index": 0, "content_block": {
                "type": "tool_use", "id": "toolu_capture_" + uuid.uuid4().hex[:16],
                "name": "Agent", "input": {}}}),
            ("content_block_delta", {"index": 0, "delta": {
                "type": "input_json_delta", "partial_json": json.dumps(agent_input)}}),
            ("content_block_stop", {"index": 0}),
        ]
        stop = "tool_use"
    else:
        events += [
            ("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}),
            ("content_block_delta", {"index": 0, "delta": {
                "type": "text_delta", "text": "Hello from the capture server."}}),
            ("content_block_stop", {"index": 0}),
        ]
        stop = "end_turn"
    events += [
        ("message_delta", {"delta": {"stop_reason": stop, "stop_sequence": None},
                           "usage": {"output_tokens": 12}}),
        ("message_stop", {}),
    ]
    return events


def whole_message(events):
    """The non-streaming answer equivalent to `events`."""
    message = dict(events[0][1]["message"])
    content = []
    for kind, data in events:
        if kind == "content_block_start":
            content.append(dict(data["content_block"]))
        elif kind == "content_block_delta":
            delta = data["delta"]
            if delta["type"] == "text_delta":
                content[-1]["text"] += delta["text"]
            else:
                content[-1]["input"] = json.loads(delta["partial_json"])
        elif kind == "message_delta":
            message["stop_reason"] = data["delta"]["stop_reason"]
            message["usage"] = dict(message["usage"], output_tokens=12)
    message["content"] = content
    return message


def eventstream_frame(payload):
    """One AWS event-stream message carrying a Bedrock `chunk` event."""
    headers = b""
    for name, value in ((":event-type", "chunk"), (":content-type", "application/json"),
                        (":message-type", "event")):
        headers += bytes([len(name)]) + name.encode() + b"\x07" + struct.pack(">H", len(value)) + value.encode()
    total = 12 + len(headers) + len(payload) + 4
    prelude = struct.pack(">II", total, len(headers))
    prelude += struct.pack(">I", binascii.crc32(prelude) & 0xFFFFFFFF)
    body = prelude + headers + payload
    return body + struct.pack(">I", binascii.crc32(body) & 0xFFFFFFFF)


def bedrock_stream(events):
    """Bedrock's invoke-with-response-stream answer: each event base64'd in a chunk."""
    out = b""
    for kind, data in events:
        event = json.dumps(dict(data, type=kind)).encode()
        out += eventstream_frame(json.dumps({"bytes": base64.b64encode(event).decode()}).encode())
    return out


class Capture(BaseHTTPRequestHandler):
    """Records each request, then answers it as the provider it is addressed to."""

    protocol_version = "HTTP/1.1"
    out_dir = "."
    subagent = False

    def log_message(self, *args):
        pass

    def do_HEAD(self):
        self.handle_any()

    def do_GET(self):
        self.handle_any()

    def do_POST(self):
        self.handle_any()

    def handle_any(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        status, content_type, payload, note = self.route(body)
        self.save(body, {"status": status, **note})
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("request-id", "req_capture_" + uuid.uuid4().hex[:16])
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def route(self, body):
        """(status, content type, payload, what to note) for this request."""
        path = self.path.split("?")[0]
        if self.command == "HEAD":
            return 200, "text/plain", b"", {}
        if path == "/v1/models":
            data = [{"type": "model", "id": m, "display_name": m, "created_at": "2026-01-01T00:00:00Z"}
                    for m in MODELS]
            page = {"data": data, "has_more": False, "first_id": MODELS[0], "last_id": MODELS[-1]}
            return 200, "application/json", json.dumps(page).encode(), {"mode": "models"}
        if path.endswith("/count_tokens"):
            return 200, "application/json", b'{"input_tokens": 120}', {"mode": "count_tokens"}
        mode = self.mode(path)
        if mode is None or not isinstance(body, dict):
            error = {"type": "error", "error": {"type": "not_found_error",
                                                "message": f"capture server: nothing at {self.command} {path}"}}
            return 404, "application/json", json.dumps(error).encode(), {"mode": "unknown"}
        tool_use = self.subagent and self.is_main_first_turn(body)
        model = body.get("model") or re.sub(r".*/models?/([^/:]+).*", r"\1", path)
        events = answer_events(model, tool_use)
        stream = mode in ("bedrock-stream", "vertex-stream") or body.get("stream") is True
        note = {"mode": mode, "stream": stream, "blocks": ["tool_use" if tool_use else "text"]}
        if not stream:
            return 200, "application/json", json.dumps(whole_message(events)).encode(), note
        if mode == "bedrock-stream":
            return 200, "application/vnd.amazon.eventstream", bedrock_stream(events), note
        return 200, "text/event-stream", sse(events), note

    @staticmethod
    def mode(path):
        """Which API a path belongs to, or None."""
        if path == "/v1/messages":
            return "anthropic"
        if path.startswith("/model/") and path.endswith("/invoke-with-response-stream"):
            return "bedrock-stream"
        if path.startswith("/model/") and path.endswith("/invoke"):
            return "bedrock"
        if path.endswith(":streamRawPredict"):
            return "vertex-stream"
        if path.endswith(":rawPredict"):
            return "vertex"
        return None

    def is_main_first_turn(self, body):
        """A session's first main-agent request (one message, no agent ID):
        answered with the Agent tool once per session, so the subagent's own
        requests and the main agent's later turns get text."""
        if self.headers.get("x-claude-code-agent-id"):
            return False
        if len(body.get("messages") or []) != 1:
            return False
        session = self.headers.get("x-claude-code-session-id", "")
        with LOCK:
            if session in SUBAGENT_SESSIONS:
                return False
            SUBAGENT_SESSIONS.add(session)
        return True

    def save(self, body, response):
        with LOCK:
            COUNTER[0] += 1
            n = COUNTER[0]
        slug = re.sub(r"[^a-zA-Z0-9]+", "_", self.path.split("?")[0]).strip("_")[:60] or "root"
        record = {
            "ts": time.time(),
            "method": self.command,
            "path": self.path,
            "headers": [[k, v] for k, v in self.headers.items()],
            "body": body,
            "response": response,
        }
        name = os.path.join(self.out_dir, f"{n:03d}_{self.command}_{slug}.json")
        with open(name, "w") as f:
            json.dump(record, f, indent=1)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--subagent", action="store_true")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    Capture.out_dir = args.out
    Capture.subagent = args.subagent
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Capture)
    print(f"capture server on http://127.0.0.1:{args.port}, writing to {args.out}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()

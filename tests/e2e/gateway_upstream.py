#!/usr/bin/env python3
"""An HTTP/1.1 origin for the gateway's end-to-end tests (Python's own
http.server, keep-alive on). Prints "port N" once listening on 127.0.0.1.

  GET  /echo...        200, JSON: method, path, headers as received, this
                       server's name and the connection's request count
  POST /echo...        the same plus the body's length and SHA-256
  GET  /big?bytes=N    N bytes (Content-Length)
  GET  /chunked?n=K    K chunks of "chunk i\n" (Transfer-Encoding: chunked)
  GET  /slow?ms=N      waits N ms, then 200 "slow"
  GET  /cut            starts a 1 MB response, sends 1000 bytes, closes
  GET  /status?code=N  answers status N
  GET  /flaky          503 from an origin named "sick*", else 200 (its name)
  GET  /stall          200 (its name), 10 s late from an origin named "sick*"
  GET  /health         200 "ok"
  GET  /ws             a WebSocket (RFC 6455) echo: each text frame back,
                       prefixed with this server's name
  GET  /zeros?bytes=N  N bytes of "z" (Content-Length), cheap to make
  GET  /evil?kind=K    a response with bad or ambiguous framing (raw bytes,
                       connection kept open), most carrying a second,
                       injected response "INJECTED" for a proxy that pools
                       the connection: extra, clte, dupcl, badchunk, cl_plus
  GET  /drip?bytes=N   a head with Content-Length N, 1000 bytes, then waits
                       (for tests that kill the origin mid-response)
  GET  /__requests     the request lines this process has parsed so far
                       (every connection, every method; /__ paths left
                       out), a JSON list
  GET  /__reset        forgets them

Any request's body (Content-Length or chunked) is read before answering, so
the origin's framing is the standard's: bytes after a body are the next
request, never part of this one.
"""
import base64
import hashlib
import json
import struct
import socket
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

NAME = sys.argv[1] if len(sys.argv) > 1 else "origin"
SEEN = []
SEEN_LOCK = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def setup(self):
        super().setup()
        self.count = 0

    def parse_request(self):
        ok = super().parse_request()
        if ok and not self.path.startswith("/__"):
            with SEEN_LOCK:
                SEEN.append(self.requestline)
        return ok

    def _send(self, status, body, content_type="text/plain", extra=None):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _read_body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = b""
            while True:
                size = int(self.rfile.readline().strip().split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return data
                data += self.rfile.read(size)
                self.rfile.readline()
        n = int(self.headers.get("Content-Length", "0"))
        return self.rfile.read(n) if n else b""

    def _echo(self, body=None):
        self.count += 1
        info = {
            "server": NAME,
            "method": self.command,
            "path": self.path,
            "headers": [[k.lower(), v] for k, v in self.headers.items()],
            "connection_requests": self.count,
        }
        if body is not None:
            info["body_length"] = len(body)
            info["body_sha256"] = hashlib.sha256(body).hexdigest()
        self._send(200, json.dumps(info).encode(), "application/json")

    def _websocket(self):
        key = self.headers.get("Sec-WebSocket-Key", "")
        accept = base64.b64encode(
            hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode()
        self.send_response(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept)
        self.end_headers()
        self.wfile.flush()
        while True:
            head = self.rfile.read(2)
            if len(head) < 2:
                return
            opcode, length = head[0] & 0x0F, head[1] & 0x7F
            if length == 126:
                length = struct.unpack(">H", self.rfile.read(2))[0]
            elif length == 127:
                length = struct.unpack(">Q", self.rfile.read(8))[0]
            mask = self.rfile.read(4) if head[1] & 0x80 else b"\0\0\0\0"
            data = bytes(b ^ mask[i % 4] for i, b in enumerate(self.rfile.read(length)))
            if opcode == 8:  # close
                self.wfile.write(b"\x88\x00")
                return
            reply = (NAME + ":").encode() + data
            frame = bytes([0x81]) + (bytes([len(reply)]) if len(reply) < 126
                                     else bytes([126]) + struct.pack(">H", len(reply)))
            self.wfile.write(frame + reply)
            self.wfile.flush()

    def do_GET(self):
        url = urllib.parse.urlparse(self.path)
        if url.path == "/ws" and self.headers.get("Upgrade", "").lower() == "websocket":
            self.close_connection = True
            return self._websocket()
        q = dict(urllib.parse.parse_qsl(url.query))
        if self.command != "HEAD":
            self._read_body()
        if url.path == "/__requests":
            with SEEN_LOCK:
                return self._send(200, json.dumps(SEEN).encode(), "application/json")
        if url.path == "/__reset":
            with SEEN_LOCK:
                SEEN.clear()
            return self._send(200, b"reset\n")
        if url.path.startswith("/echo") or url.path == "/" or url.path.startswith("/api"):
            return self._echo()
        if url.path == "/stall":
            # 10 s late from an origin named "sick*", at once from the others.
            if NAME.startswith("sick"):
                time.sleep(10)
            return self._send(200, NAME.encode())
        if url.path == "/flaky":
            # 503 from an origin named "sick*", 200 from the others.
            return self._send(503 if NAME.startswith("sick") else 200, NAME.encode())
        if url.path == "/health":
            # An origin named "sick*" fails its health checks but serves.
            return self._send(503 if NAME.startswith("sick") else 200, b"ok")
        if url.path == "/big":
            n = int(q.get("bytes", "1024"))
            return self._send(200, bytes((i * 7) % 251 for i in range(n)), "application/octet-stream")
        if url.path == "/chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for i in range(int(q.get("n", "3"))):
                piece = f"chunk {i}\n".encode()
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            self.wfile.write(b"0\r\n\r\n")
            return
        if url.path == "/slow":
            time.sleep(int(q.get("ms", "1000")) / 1000)
            return self._send(200, b"slow")
        if url.path == "/cut":
            self.send_response(200)
            self.send_header("Content-Length", "1000000")
            self.end_headers()
            self.wfile.write(b"x" * 1000)
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return
        if url.path == "/zeros":
            return self._send(200, b"z" * int(q.get("bytes", "1024")), "application/octet-stream")
        if url.path == "/evil":
            injected = b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nINJECTED"
            raw = {
                "extra": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok" + injected,
                "clte": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n"
                        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + injected,
                "dupcl": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n"
                         b"Content-Length: 47\r\n\r\nok" + injected,
                "badchunk": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                            b"2\r\nok\r\nzz\r\n" + injected,
                "cl_plus": b"HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\nok" + injected,
            }[q.get("kind", "extra")]
            self.wfile.write(raw)
            self.wfile.flush()
            return
        if url.path == "/drip":
            self.send_response(200)
            self.send_header("Content-Length", q.get("bytes", "1000000"))
            self.end_headers()
            self.wfile.write(b"d" * 1000)
            self.wfile.flush()
            time.sleep(60)
            return
        if url.path == "/status":
            return self._send(int(q.get("code", "200")), b"status\n")
        return self._send(404, b"origin has no such path\n")

    do_HEAD = do_GET
    do_DELETE = do_GET

    def do_POST(self):
        self._echo(self._read_body())

    do_PUT = do_POST


def main():
    ThreadingHTTPServer.request_queue_size = 1024  # the default 5 drops bursts
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    print("port", server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()

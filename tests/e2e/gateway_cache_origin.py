#!/usr/bin/env python3
"""An origin for the HTTP cache's black-box tests (gateway_cache_test.cc).

Every response is shaped by the request's query: cc= (Cache-Control; the
request field X-Origin-CC overrides it), cdn= (CDN-Cache-Control),
etag=, lm= (Last-Modified, seconds before now), vary=, tag= (Surrogate-Key),
delay= (seconds before answering, for coalescing), status=, size= (body
bytes), fail_after= (503 after that many fetches). It answers If-None-Match with 304 when the ETag matches. The body
names the path and how many times it was fetched ("/a #3"), so a test can
tell a cached answer from a new one; /__count?p=PATH answers the fetch
count of PATH (all queries), /__304?p=PATH the 304s sent for it.
With an argument NAME, responses carry X-Origin: NAME. Prints "port N"
once listening on 127.0.0.1.
"""
import collections
import email.utils
import http.server
import sys
import threading
import time
import urllib.parse

fetches = collections.Counter()
not_modified = collections.Counter()
lock = threading.Lock()
ORIGIN_NAME = sys.argv[1] if len(sys.argv) > 1 else ""


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def reply(self, status, headers, body=b""):
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        if status != 304:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD" and status != 304:
            self.wfile.write(body)

    def handle_any(self):
        url = urllib.parse.urlsplit(self.path)
        q = dict(urllib.parse.parse_qsl(url.query))
        if url.path in ("/__count", "/__304"):
            table = fetches if url.path == "/__count" else not_modified
            with lock:
                n = table[q.get("p", "")]
            return self.reply(200, [("Cache-Control", "no-store")], str(n).encode())
        length = int(self.headers.get("Content-Length", "0"))
        if length:
            self.rfile.read(length)
        if "delay" in q:
            time.sleep(float(q["delay"]))
        headers = []
        if "cc" in q:
            # X-Origin-CC (a request field, so that a HEAD and a GET of one URL
            # can be answered differently) overrides cc=.
            headers.append(("Cache-Control", self.headers.get("X-Origin-CC", q["cc"])))
        if "cdn" in q:
            headers.append(("CDN-Cache-Control", q["cdn"]))
        if "etag" in q:
            headers.append(("ETag", '"%s"' % q["etag"]))
        if "lm" in q:
            headers.append(("Last-Modified",
                            email.utils.formatdate(time.time() - float(q["lm"]), usegmt=True)))
        if "vary" in q:
            headers.append(("Vary", q["vary"]))
        if "tag" in q:
            headers.append(("Surrogate-Key", q["tag"]))
        if "etag" in q and self.headers.get("If-None-Match") == '"%s"' % q["etag"]:
            with lock:
                not_modified[url.path] += 1
            return self.reply(304, headers)
        with lock:
            fetches[url.path] += 1
            n = fetches[url.path]
        if "fail_after" in q and n > int(q["fail_after"]):
            return self.reply(503, [("Cache-Control", "no-store")], b"down")
        body = ("%s #%d %s" % (url.path, n, self.headers.get(q.get("vary", "x-none"), ""))).encode()
        if "size" in q:
            body = (body * (int(q["size"]) // max(1, len(body)) + 1))[: int(q["size"])]
        headers.append(("Content-Type", "text/plain"))
        if ORIGIN_NAME:
            headers.append(("X-Origin", ORIGIN_NAME))
        self.reply(int(q.get("status", "200")), headers, body)

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = handle_any


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True


def main():
    server = Server(("127.0.0.1", 0), Handler)
    print("port %d" % server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())

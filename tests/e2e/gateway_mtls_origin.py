#!/usr/bin/env python3
"""An HTTPS origin that requires a client certificate (mTLS), for the
gateway's upstream mTLS test. Prints "port N" once listening on 127.0.0.1;
answers every GET with 200 and "client cn=<CN>", the subject CN of the
certificate the client presented (verified against CA). A client without a
certificate from CA fails the handshake.

  gateway_mtls_origin.py CERT KEY CA
"""
import ssl
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

CERT, KEY, CA = sys.argv[1:4]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def do_GET(self):
        subject = dict(item for rdn in self.connection.getpeercert()["subject"] for item in rdn)
        body = f"client cn={subject.get('commonName', '')}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class Server(HTTPServer):
    def handle_error(self, request, client_address):
        # A client refused during the handshake: expected, not worth a trace.
        print("refused", sys.exc_info()[1], flush=True)


def main():
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(CERT, KEY)
    context.load_verify_locations(CA)
    context.verify_mode = ssl.CERT_REQUIRED
    context.set_alpn_protocols(["http/1.1"])
    server = Server(("127.0.0.1", 0), Handler)
    server.socket = context.wrap_socket(server.socket, server_side=True,
                                        do_handshake_on_connect=False)
    print("port", server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()

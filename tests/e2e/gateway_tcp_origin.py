#!/usr/bin/env python3
"""A TCP origin for the gateway's L4 tests (gateway_l4_test.cc).

usage: gateway_tcp_origin.py NAME [--shut-first]

Binds 127.0.0.1 on a port of the kernel's choosing and prints "port N".
Each connection first gets the line "ORIGIN NAME\n", then:
  - default: everything received is echoed back; at the client's end of
    sending (EOF) the origin sends "EOF NAME\n" and closes;
  - --shut-first: the origin shuts its own sending side right after the
    greeting, then reads until EOF and prints "received N bytes" (so a test
    sees the client's bytes still arrive after the upstream's half-close).
"""
import socket
import sys
import threading


def serve(conn, name, shut_first):
    with conn:
        try:
            conn.sendall(f"ORIGIN {name}\n".encode())
            if shut_first:
                conn.shutdown(socket.SHUT_WR)
                total = 0
                while True:
                    data = conn.recv(65536)
                    if not data:
                        break
                    total += len(data)
                print(f"received {total} bytes", flush=True)
                return
            while True:
                data = conn.recv(65536)
                if not data:
                    break
                conn.sendall(data)
            conn.sendall(f"EOF {name}\n".encode())
        except OSError:
            pass


def main():
    name = sys.argv[1]
    shut_first = "--shut-first" in sys.argv[2:]
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", 0))
    server.listen(512)
    print(f"port {server.getsockname()[1]}", flush=True)
    while True:
        conn, _ = server.accept()
        threading.Thread(target=serve, args=(conn, name, shut_first), daemon=True).start()


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Calls a Capstan RPC server that serves TLS and requires client
certificates (examples/echo's `echo_example serve --tls-...`) with Python's
grpcio over TLS (ALPN h2), as any gRPC user with mTLS would: unary with the
server reporting the verified client CN, server streaming, bidirectional
streaming, health; a client without a certificate and a client that does not
trust the server's CA are refused. Run by tests/e2e/rpc_tls_test.cc.

  rpc_grpc_tls_client.py PORT CA CERT KEY OTHER_CA SERVER_NAME SOURCE_DIR WORK_DIR

Prints one line per check; exits 0 when every check passed.
"""
import os
import shutil
import subprocess
import sys

import grpc

PORT, CA, CERT, KEY, OTHER_CA, SERVER_NAME, SOURCE_DIR, WORK_DIR = sys.argv[1:9]

shutil.copy(os.path.join(SOURCE_DIR, "examples/echo/echo_example.proto"), WORK_DIR)
shutil.copy(os.path.join(SOURCE_DIR, "src/rpc/proto/grpc/health/v1/health.proto"),
            os.path.join(WORK_DIR, "py_health.proto"))
subprocess.run(["protoc", "-I", WORK_DIR, "--python_out", WORK_DIR, "echo_example.proto",
                "py_health.proto"], check=True)
sys.path.insert(0, WORK_DIR)
import echo_example_pb2 as pb  # noqa: E402
import py_health_pb2 as health_pb  # noqa: E402


def read(path):
    with open(path, "rb") as f:
        return f.read()


def tls_channel(root, with_certificate):
    credentials = grpc.ssl_channel_credentials(
        root_certificates=read(root),
        private_key=read(KEY) if with_certificate else None,
        certificate_chain=read(CERT) if with_certificate else None)
    # The certificate names SERVER_NAME; the address is 127.0.0.1.
    return grpc.secure_channel(f"127.0.0.1:{PORT}", credentials,
                               options=(("grpc.ssl_target_name_override", SERVER_NAME),))


channel = tls_channel(CA, with_certificate=True)
grpc.channel_ready_future(channel).result(timeout=10)


def method(ch, kind, path, response_class):
    return getattr(ch, kind)(path, request_serializer=lambda m: m.SerializeToString(),
                             response_deserializer=response_class.FromString)


echo = method(channel, "unary_unary", "/capstan.examples.Echo/Echo", pb.EchoReply)
count = method(channel, "unary_stream", "/capstan.examples.Echo/Count", pb.EchoReply)
chat = method(channel, "stream_stream", "/capstan.examples.Echo/Chat", pb.EchoReply)
check = method(channel, "unary_unary", "/grpc.health.v1.Health/Check",
               health_pb.HealthCheckResponse)


def refused(ch):
    call = method(ch, "unary_unary", "/capstan.examples.Echo/Echo", pb.EchoReply)
    try:
        call(pb.EchoRequest(message="x"), timeout=5)
        return "answered"
    except grpc.RpcError as e:
        return e.code()
    finally:
        ch.close()


def test_unary_sees_the_client_certificate():
    reply = echo(pb.EchoRequest(message="over tls"), timeout=5)
    assert reply.message == "over tls", reply
    assert reply.peer == "alice", reply  # the handler saw the verified CN


def test_server_streaming():
    replies = [r.message for r in count(pb.CountRequest(message="n", count=5), timeout=5)]
    assert replies == [f"n {i}" for i in range(5)], replies


def test_bidi():
    messages = [pb.EchoRequest(message=f"m{i}") for i in range(10)]
    answers = [r.message for r in chat(iter(messages), timeout=10)]
    assert answers == [f"m{i}" for i in range(10)], answers


def test_health():
    reply = check(health_pb.HealthCheckRequest(service=""), timeout=5)
    assert reply.status == health_pb.HealthCheckResponse.SERVING, reply


def test_refused_without_client_certificate():
    code = refused(tls_channel(CA, with_certificate=False))
    assert code == grpc.StatusCode.UNAVAILABLE, code


def test_refused_when_the_server_is_not_trusted():
    code = refused(tls_channel(OTHER_CA, with_certificate=True))
    assert code == grpc.StatusCode.UNAVAILABLE, code


def test_clear_text_refused():
    code = refused(grpc.insecure_channel(f"127.0.0.1:{PORT}"))
    assert code == grpc.StatusCode.UNAVAILABLE, code


failed = 0
for name, fn in list(globals().items()):
    if name.startswith("test_") and callable(fn):
        try:
            fn()
            print(f"ok {name}", flush=True)
        except Exception as e:  # noqa: BLE001 - every failure is reported
            failed += 1
            print(f"FAIL {name}: {type(e).__name__}: {e}", flush=True)
channel.close()
sys.exit(1 if failed else 0)

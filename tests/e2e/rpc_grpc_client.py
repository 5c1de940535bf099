#!/usr/bin/env python3
"""Calls a Capstan RPC server (examples/echo's `echo_example serve`) with
Python's grpcio, as any gRPC user would: unary, the three streaming shapes,
deadlines, cancellation, status codes, an unknown method, the health service
and server reflection. Run by tests/e2e/rpc_grpc_test.cc.

  rpc_grpc_client.py PORT ADMIN_PORT SOURCE_DIR WORK_DIR

Message classes are generated at run time with the system protoc (grpcio
needs no generated stubs: calls are made by method path). Exits 0 when every
check passed; prints one line per check.
"""
import os
import queue
import re
import shutil
import subprocess
import sys
import time
import urllib.request

import grpc

PORT, ADMIN_PORT, SOURCE_DIR, WORK_DIR = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]

# The health and reflection protos live under grpc/..., which as a Python
# package path would shadow grpcio's own `grpc`: they are compiled under
# other file names (the messages are the same).
shutil.copy(os.path.join(SOURCE_DIR, "examples/echo/echo_example.proto"), WORK_DIR)
shutil.copy(os.path.join(SOURCE_DIR, "src/rpc/proto/grpc/health/v1/health.proto"),
            os.path.join(WORK_DIR, "py_health.proto"))
shutil.copy(os.path.join(SOURCE_DIR, "src/rpc/proto/grpc/reflection/v1alpha/reflection.proto"),
            os.path.join(WORK_DIR, "py_reflection.proto"))
subprocess.run(["protoc", "-I", WORK_DIR, "--python_out", WORK_DIR, "echo_example.proto",
                "py_health.proto", "py_reflection.proto"], check=True)
sys.path.insert(0, WORK_DIR)
import echo_example_pb2 as pb  # noqa: E402
import py_health_pb2 as health_pb  # noqa: E402
import py_reflection_pb2 as reflection_pb  # noqa: E402
from google.protobuf import descriptor_pb2  # noqa: E402

channel = grpc.insecure_channel(f"127.0.0.1:{PORT}")
grpc.channel_ready_future(channel).result(timeout=10)


def unary(path, response_class):
    return channel.unary_unary(path, request_serializer=lambda m: m.SerializeToString(),
                               response_deserializer=response_class.FromString)


def unary_stream(path, response_class):
    return channel.unary_stream(path, request_serializer=lambda m: m.SerializeToString(),
                                response_deserializer=response_class.FromString)


def stream_unary(path, response_class):
    return channel.stream_unary(path, request_serializer=lambda m: m.SerializeToString(),
                                response_deserializer=response_class.FromString)


def stream_stream(path, response_class):
    return channel.stream_stream(path, request_serializer=lambda m: m.SerializeToString(),
                                 response_deserializer=response_class.FromString)


echo = unary("/capstan.examples.Echo/Echo", pb.EchoReply)
count = unary_stream("/capstan.examples.Echo/Count", pb.EchoReply)
collect = stream_unary("/capstan.examples.Echo/Collect", pb.EchoReply)
chat = stream_stream("/capstan.examples.Echo/Chat", pb.EchoReply)
check = unary("/grpc.health.v1.Health/Check", health_pb.HealthCheckResponse)
watch = unary_stream("/grpc.health.v1.Health/Watch", health_pb.HealthCheckResponse)
reflect = stream_stream("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
                        reflection_pb.ServerReflectionResponse)


def metric(name, labels):
    text = urllib.request.urlopen(f"http://127.0.0.1:{ADMIN_PORT}/metrics", timeout=5).read().decode()
    m = re.search(re.escape(name + "{" + labels + "}") + r" (\S+)", text)
    return float(m.group(1)) if m else None


def eventually(cond, timeout=5.0):
    give_up = time.monotonic() + timeout
    while time.monotonic() < give_up:
        if cond():
            return True
        time.sleep(0.01)
    return cond()


def test_unary_with_metadata_and_deadline():
    reply, call = echo.with_call(pb.EchoRequest(message="hi"), timeout=5,
                                 metadata=(("caller", "python"),))
    assert reply.message == "hi", reply
    assert reply.instance == "a", reply
    # grpc-timeout became the handler's deadline (clients round the timeout
    # they send up to a coarser unit, so it may exceed 5 s a little)
    assert 0 < reply.deadline_left_ms <= 6000, reply
    assert call.code() == grpc.StatusCode.OK
    assert echo(pb.EchoRequest(message="x")).deadline_left_ms == -1


def test_server_streaming():
    replies = [r.message for r in count(pb.CountRequest(message="n", count=5), timeout=5)]
    assert replies == [f"n {i}" for i in range(5)], replies


def test_client_streaming():
    reply = collect(iter([pb.EchoRequest(message=m) for m in ("a", "b", "c")]), timeout=5)
    assert reply.message == "a b c", reply


def test_bidi_interleaved():
    # Each message is sent only after the previous answer came back.
    outbox = queue.Queue()

    def requests():
        while True:
            item = outbox.get()
            if item is None:
                return
            yield item

    responses = chat(requests(), timeout=10)
    for i in range(10):
        outbox.put(pb.EchoRequest(message=f"m{i}"))
        assert next(responses).message == f"m{i}"
    outbox.put(None)
    assert list(responses) == []
    assert responses.code() == grpc.StatusCode.OK


def test_deadline_exceeded():
    try:
        echo(pb.EchoRequest(message="slow", sleep_ms=3000), timeout=0.2)
        raise AssertionError("the call did not time out")
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.DEADLINE_EXCEEDED, e


def test_error_codes():
    for code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
                 grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAVAILABLE):
        number = code.value[0]
        try:
            echo(pb.EchoRequest(fail_code=number), timeout=5)
            raise AssertionError(f"no error for {code}")
        except grpc.RpcError as e:
            assert e.code() == code, (e.code(), code)
            assert e.details() == f"asked to fail with code {number}", e.details()


def test_unknown_method():
    nope = unary("/capstan.examples.Echo/Nope", pb.EchoReply)
    try:
        nope(pb.EchoRequest(), timeout=5)
        raise AssertionError("an unknown method answered")
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.UNIMPLEMENTED, e


def test_cancellation_reaches_the_handler():
    labels = 'method="capstan.examples.Echo/Count",code="CANCELLED"'
    before = metric("capstan_rpc_server_handled_total", labels) or 0
    stream = count(pb.CountRequest(message="c", count=100000, interval_ms=20), timeout=30)
    assert next(stream).message == "c 0"
    assert next(stream).message == "c 1"
    stream.cancel()
    assert stream.code() == grpc.StatusCode.CANCELLED
    # The handler's next Write failed and it ended CANCELLED; nothing in flight.
    assert eventually(lambda: metric("capstan_rpc_server_handled_total", labels) == before + 1), \
        metric("capstan_rpc_server_handled_total", labels)
    assert eventually(lambda: metric("capstan_rpc_server_in_flight",
                                     'method="capstan.examples.Echo/Count"') == 0)
    # A unary call cancelled while the handler sleeps.
    future = echo.future(pb.EchoRequest(message="z", sleep_ms=5000), timeout=30)
    future.cancel()
    assert future.cancelled()


def test_health():
    for service in ("", "capstan.examples.Echo"):
        reply = check(health_pb.HealthCheckRequest(service=service), timeout=5)
        assert reply.status == health_pb.HealthCheckResponse.SERVING, (service, reply)
    try:
        check(health_pb.HealthCheckRequest(service="no.Such"), timeout=5)
        raise AssertionError("an unknown service was healthy")
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.NOT_FOUND, e
    updates = watch(health_pb.HealthCheckRequest(service=""), timeout=10)
    assert next(updates).status == health_pb.HealthCheckResponse.SERVING
    updates.cancel()


def test_reflection():
    req = reflection_pb.ServerReflectionRequest
    answers = list(reflect(iter([
        req(list_services=""),
        req(file_containing_symbol="capstan.examples.Echo"),
        req(file_containing_symbol="no.Such"),
    ]), timeout=5))
    assert len(answers) == 3, answers
    names = {s.name for s in answers[0].list_services_response.service}
    for expected in ("capstan.examples.Echo", "grpc.health.v1.Health",
                     "grpc.reflection.v1alpha.ServerReflection"):
        assert expected in names, names
    files = answers[1].file_descriptor_response.file_descriptor_proto
    assert len(files) >= 1
    fd = descriptor_pb2.FileDescriptorProto.FromString(files[0])
    assert fd.name == "echo_example.proto", fd.name
    service = [s for s in fd.service if s.name == "Echo"][0]
    shapes = {m.name: (m.client_streaming, m.server_streaming) for m in service.method}
    assert shapes == {"Echo": (False, False), "Count": (False, True),
                      "Collect": (True, False), "Chat": (True, True)}, shapes
    assert answers[2].error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]


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

#!/usr/bin/env python3
"""Latency probes for bench/experiments.sh; each prints one JSON line.

  experiments_probe.py results PORT EXPERIMENT N [ROW_NAME]
      Event to result: N times, post a batch (an exposure of a new unit and a
      value event of a new metric for it) to /v1/events, then poll
      GET /v1/experiments/EXPERIMENT/results until that metric is there.
      Latency = POST start to the first results answer showing it.

  experiments_probe.py propagate WRITER_PORT EXPERIMENT LAYER N PORT...
      Config propagation: N times, PUT the experiment with a larger coverage
      through WRITER_PORT, then poll POST /v1/evaluate on every PORT (one
      thread each) until it answers with a generation past the one it answered
      with before the PUT (each instance counts its own snapshots, and nothing
      else writes meanwhile).
      Latency = PUT start to the last instance answering on it.
"""
import http.client
import json
import sys
import threading
import time
import uuid


def pct(values, p):
    s = sorted(values)
    return s[min(len(s) - 1, max(0, int(round(p / 100.0 * len(s) + 0.5)) - 1))]


def summary(ms):
    return {"n": len(ms), "p50_ms": pct(ms, 50), "p90_ms": pct(ms, 90), "p99_ms": pct(ms, 99),
            "max_ms": max(ms), "mean_ms": sum(ms) / len(ms)}


# The last response's Retry-After (seconds), for the 429 retries below.
conn_retry_after = {}


def request(conn, method, path, body=None):
    conn.request(method, path, body=body, headers={"Content-Type": "application/json"})
    r = conn.getresponse()
    data = r.read()
    conn_retry_after["value"] = r.getheader("Retry-After") or 1
    return r.status, data


def results(port, experiment, n, label="event_to_result"):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    run = uuid.uuid4().hex[:8]
    lat, polls = [], []
    refused = 0
    for i in range(n):
        unit, metric = f"probe-{run}-{i}", f"probe-{run}-{i}"
        body = "\n".join([
            json.dumps({"type": "exposure", "key": f"pe-{run}-{i}", "experiment": experiment,
                        "unit": unit, "variant": "control", "ts": 1700000000000}),
            json.dumps({"type": "value", "key": f"pv-{run}-{i}", "experiment": experiment,
                        "unit": unit, "metric": metric, "value": 1.5 + i, "ts": 1700000001000}),
        ])
        # Under ingestion load the service may answer 429 (back-pressure:
        # aggregation is behind); a client waits Retry-After and sends again.
        # The latency counts from the POST that was acknowledged.
        deadline = time.perf_counter() + 60
        while True:
            t0 = time.perf_counter()
            status, data = request(conn, "POST", "/v1/events", body)
            if status != 429 or t0 > deadline:
                break
            refused += 1
            time.sleep(float(conn_retry_after.get("value", 1)))
        if status != 200:
            raise SystemExit(f"events: {status} {data[:200]!r}")
        count = 0
        while True:
            count += 1
            status, data = request(conn, "GET", f"/v1/experiments/{experiment}/results")
            if status == 200 and any(m.get("metric") == metric
                                     for m in json.loads(data).get("metrics", [])):
                break
            if time.perf_counter() - t0 > 30:
                raise SystemExit(f"results: metric {metric} not there after 30 s")
            time.sleep(0.0005)
        lat.append((time.perf_counter() - t0) * 1000)
        polls.append(count)
    out = summary(lat)
    out.update({"row": label, "polls_max": max(polls), "refused_429": refused})
    print(json.dumps(out))


def propagate(writer, experiment, layer, n, ports):
    conn = http.client.HTTPConnection("127.0.0.1", writer, timeout=10)
    status, data = request(conn, "GET", f"/v1/experiments/{experiment}")
    if status != 200:
        raise SystemExit(f"get experiment: {status} {data[:200]!r}")
    doc = json.loads(data)
    revision = doc.get("revision")
    spec = doc.get("spec", doc)
    coverage = float(spec.get("coverage", 0.05))
    step = (1.0 - coverage) / (n + 1)
    target = [0] * len(ports)
    probe_body = json.dumps({"attributes": {"id": "probe-unit"}, "exposures": False})
    base_conns = [http.client.HTTPConnection("127.0.0.1", p, timeout=10) for p in ports]
    t0 = [0.0]
    go = [threading.Event() for _ in ports]
    done = [threading.Event() for _ in ports]
    seen = [0.0] * len(ports)
    last = [None] * len(ports)
    stop = False

    def poller(k, port):
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        body = probe_body
        while True:
            go[k].wait()
            go[k].clear()
            if stop:
                return
            while True:
                status, data = request(c, "POST", "/v1/evaluate", body)
                last[k] = (status, data[:300])
                if status == 200 and json.loads(data)["generation"] > target[k]:
                    seen[k] = time.perf_counter()
                    break
                time.sleep(0.0002)
            done[k].set()

    threads = [threading.Thread(target=poller, args=(k, p), daemon=True) for k, p in enumerate(ports)]
    for t in threads:
        t.start()
    lat, put_ms = [], []
    for i in range(n):
        coverage = min(1.0, coverage + step)
        body = json.dumps({"layer": layer, "state": "running", "coverage": round(coverage, 6),
                           "variants": [{"id": "control"},
                                        {"id": "treatment", "parameters": {"size": "l"}}]})
        for k, c in enumerate(base_conns):
            status, data = request(c, "POST", "/v1/evaluate", probe_body)
            if status != 200:
                raise SystemExit(f"evaluate on {ports[k]}: {status} {data[:200]!r}")
            target[k] = json.loads(data)["generation"]
        t0[0] = time.perf_counter()
        status, data = request(conn, "PUT", f"/v1/experiments/{experiment}?revision={revision}", body)
        t_put = time.perf_counter()
        if status not in (200, 201):
            raise SystemExit(f"put experiment: {status} {data[:300]!r}")
        revision = json.loads(data)["revision"]
        for e in go:
            e.set()
        for e in done:
            if not e.wait(30):
                raise SystemExit(f"propagate: not all instances answered past generations {target} "
                                 f"in 30 s; last answers: {last}")
            e.clear()
        lat.append((max(seen) - t0[0]) * 1000)
        put_ms.append((t_put - t0[0]) * 1000)
        time.sleep(0.02)
    stop = True
    for e in go:
        e.set()
    out = summary(lat)
    out.update({"row": "propagation", "instances": len(ports), "put_p50_ms": pct(put_ms, 50),
                "put_p99_ms": pct(put_ms, 99)})
    print(json.dumps(out))


if __name__ == "__main__":
    if sys.argv[1] == "results":
        results(int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), *sys.argv[5:6])
    elif sys.argv[1] == "propagate":
        propagate(int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5]),
                  [int(p) for p in sys.argv[6:]])
    else:
        raise SystemExit(__doc__)

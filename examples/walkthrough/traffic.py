#!/usr/bin/env python3
"""Traffic for the walkthrough (README.md, "Walkthrough"): users visit the
example service through the gateway, which assigns each to a variant of the
experiment it splits by; a share of them then "purchase", and the purchases
are sent to the experiments service as conversion events. Version v2
converts `--lift` better, so the results show a real effect forming.

  python3 examples/walkthrough/traffic.py --users 2000

Only the standard library. Each run's event keys are new (a run id), so
running it again adds data rather than being deduplicated.
"""
import argparse
import concurrent.futures
import json
import random
import re
import sys
import time
import urllib.request
import uuid


def visit(gateway, user):
    req = urllib.request.Request(gateway, headers={"X-User-Id": user})
    with urllib.request.urlopen(req, timeout=10) as r:
        body = r.read().decode()
    version = re.search(r"service (v\d)", body)
    assigned = re.search(r"experiment ([^=\s;]+)=(\S*)", body)
    return (version.group(1) if version else "?",
            assigned.group(2) if assigned else "")


def post_events(url, lines):
    body = ("\n".join(lines) + "\n").encode()
    req = urllib.request.Request(url, data=body, method="POST",
                                 headers={"Content-Type": "application/x-ndjson"})
    for attempt in range(20):
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as e:
            if e.code != 429:
                raise
            time.sleep(float(e.headers.get("Retry-After", "1")))  # back-pressure: wait as told
    raise RuntimeError("the experiments service stayed busy")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--gateway", default="http://127.0.0.1:8080/")
    p.add_argument("--experiments", default="http://127.0.0.1:8090")
    p.add_argument("--experiment", default="hello-v2")
    p.add_argument("--users", type=int, default=1000)
    p.add_argument("--visits", type=int, default=2, help="requests per user")
    p.add_argument("--base-rate", type=float, default=0.10, help="v1's purchase rate")
    p.add_argument("--lift", type=float, default=0.30, help="v2's relative lift")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--workers", type=int, default=8)
    args = p.parse_args()

    rng = random.Random(args.seed)
    run = uuid.uuid4().hex[:12]
    users = [f"user-{run}-{i}" for i in range(args.users)]
    seen = {}

    def one(user):
        out = None
        for _ in range(args.visits):
            out = visit(args.gateway, user)
        return user, out

    with concurrent.futures.ThreadPoolExecutor(args.workers) as pool:
        for user, (version, variant) in pool.map(one, users):
            seen[user] = (version, variant)

    events, per_version, purchases = [], {}, {}
    now = int(time.time() * 1000)
    for user, (version, variant) in seen.items():
        per_version[version] = per_version.get(version, 0) + 1
        if not variant:
            continue  # not in the experiment: nothing to attribute
        rate = args.base_rate * (1 + args.lift if version == "v2" else 1)
        if rng.random() < rate:
            purchases[version] = purchases.get(version, 0) + 1
            events.append(json.dumps({
                "type": "conversion", "key": f"walk-{run}-{user}", "experiment": args.experiment,
                "unit": user, "metric": "purchase", "ts": now}))
    url = args.experiments.rstrip("/") + "/v1/events"
    accepted = 0
    for i in range(0, len(events), 1000):
        accepted += post_events(url, events[i:i + 1000])["accepted"]
    print(json.dumps({"users": len(seen), "requests": len(seen) * args.visits,
                      "users_per_version": per_version, "purchases": purchases,
                      "events_accepted": accepted}, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())

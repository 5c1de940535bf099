#!/usr/bin/python3
"""Checks deploy/ against the capstan binary it deploys.

- Every flag a manifest or unit passes to `capstan SUB` is one that
  `capstan SUB --help` lists (a renamed or misspelt flag fails here, not at
  3 a.m. on a cluster).
- The gateway's ConfigMap passes `capstan gateway --validate`.
- The store's StatefulSet's --initial-cluster names every replica by the
  headless Service's DNS names, and its probes use the ports it declares.
- The systemd units pass `systemd-analyze verify` where systemd is present.

Usage: check_deploy.py CAPSTAN_BINARY DEPLOY_DIR
"""
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile

import yaml

failures = []


def fail(msg):
    failures.append(msg)
    print("FAIL:", msg)


def help_flags(capstan, sub):
    out = subprocess.run([capstan, *sub, "--help"], capture_output=True, text=True, timeout=30)
    if out.returncode != 0:
        fail(f"capstan {' '.join(sub)} --help exited {out.returncode}: {out.stderr}")
        return set()
    return set(re.findall(r"(--[a-z][a-z0-9-]*)", out.stdout))


def check_args(capstan, where, args):
    # The subcommand is the leading words before the first flag.
    sub = []
    for a in args:
        if a.startswith("-"):
            break
        sub.append(a)
    known = help_flags(capstan, sub)
    for a in args[len(sub):]:
        if not a.startswith("--"):
            continue
        flag = a.split("=", 1)[0]
        if flag not in known:
            fail(f"{where}: capstan {' '.join(sub)} has no flag {flag}")


def check_kubernetes(capstan, path):
    with open(path) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    for d in docs:
        kind, name = d.get("kind"), d.get("metadata", {}).get("name")
        if kind == "ConfigMap" and "gateway.yaml" in d.get("data", {}):
            with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as t:
                t.write(d["data"]["gateway.yaml"])
            r = subprocess.run([capstan, "gateway", "--config", t.name, "--validate"],
                               capture_output=True, text=True, timeout=30)
            os.unlink(t.name)
            if r.returncode != 0:
                fail(f"{path}: ConfigMap {name}: gateway --validate: {r.stdout}{r.stderr}")
        if kind not in ("Deployment", "StatefulSet"):
            continue
        spec = d["spec"]["template"]["spec"]
        for c in spec["containers"]:
            where = f"{os.path.basename(path)}: {kind} {name}, container {c['name']}"
            args = c.get("args", [])
            check_args(capstan, where, args)
            ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
            for probe in ("readinessProbe", "livenessProbe"):
                port = c.get(probe, {}).get("httpGet", {}).get("port")
                if port is not None and isinstance(port, str) and port not in ports:
                    fail(f"{where}: {probe} uses port {port!r}, not a declared port")
            if kind == "StatefulSet" and args[:1] == ["store"]:
                flags = dict(a[2:].split("=", 1) for a in args if a.startswith("--") and "=" in a)
                replicas = d["spec"]["replicas"]
                service = d["spec"]["serviceName"]
                members = dict(m.split("=", 1) for m in flags["initial-cluster"].split(","))
                want = {f"{name}-{i}": f"http://{name}-{i}.{service}:2380" for i in range(replicas)}
                if members != want:
                    fail(f"{where}: --initial-cluster {members} is not the {replicas} replicas {want}")
                if not flags.get("initial-advertise-peer-urls", "").startswith(
                        f"http://$(POD_NAME).{service}:"):
                    fail(f"{where}: peers advertise {flags.get('initial-advertise-peer-urls')}, "
                         f"not the headless Service's name")


def check_systemd(capstan, path):
    exec_lines = []
    with open(path) as f:
        text = f.read().replace("\\\n", " ")
    for line in text.splitlines():
        m = re.match(r"^(ExecStart|ExecStartPre)=(.*)$", line)
        if m:
            exec_lines.append(m.group(2))
    if not exec_lines:
        fail(f"{path}: no ExecStart")
    for line in exec_lines:
        argv = shlex.split(line)
        if not argv[0].endswith("/capstan"):
            continue
        check_args(capstan, os.path.basename(path), argv[1:])
    if shutil.which("systemd-analyze") and os.path.isdir("/run/systemd/system"):
        r = subprocess.run(["systemd-analyze", "verify", path], capture_output=True, text=True)
        # verify also complains that /usr/local/bin/capstan is missing here;
        # only syntax errors count.
        bad = [l for l in r.stderr.splitlines()
               if "Unknown key" in l or "Invalid" in l or "Failed to parse" in l]
        if bad:
            fail(f"{path}: systemd-analyze verify: {bad}")


def main():
    capstan, deploy = sys.argv[1], sys.argv[2]
    checked = 0
    for root, _, files in os.walk(deploy):
        for f in sorted(files):
            p = os.path.join(root, f)
            if f.endswith(".yaml"):
                check_kubernetes(capstan, p)
                checked += 1
            elif f.endswith(".service"):
                check_systemd(capstan, p)
                checked += 1
    if checked == 0:
        fail(f"no manifests under {deploy}")
    print(f"checked {checked} files, {len(failures)} failures")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()

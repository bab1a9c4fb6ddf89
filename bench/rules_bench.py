"""What HTTP rules cost: rubrisproxy with a handful of header rules (docs/rules.md) against none, in one run.

Both proxies run under twistd from a configuration file, the access log off, pinned to one core; wrk
drives each with keep-alive connections from the other core against the minimal origin of
``accesslog_bench.py``. The rules are ``micro_exchange.py``'s: a unique-id header, three request and two
response header rules. Rounds are interleaved and medians reported with their ratios: the machine may be
shared, so only ratios compare.

    python bench/rules_bench.py [--duration 10] [--rounds 3] [--connections 50]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from accesslog_bench import Sample  # noqa: E402
from harness import Processes, cpu_times, free_port, middle, python_path_env, twistd_command  # noqa: E402
from http_bench import LOAD_CORE, PROXY_CORE, ROOT, run_wrk, wait_port  # noqa: E402

CONFIG = """
[backends.app]
servers = ["127.0.0.1:{origin}"]
health = {{ check = "none" }}

[frontends.web]
listen = "tcp:{port}:interface=127.0.0.1:backlog=1024"
backend = "app"
{rules}
[access-log]
enabled = false
"""
RULES = """unique-id-header = "X-Request-ID"
http-request = [
  { action = "set-header", name = "X-Client-IP", value = "%[src]" },
  { action = "add-header", name = "X-Frontend", value = "%[fe_name]" },
  { action = "del-header", name = "X-Debug" },
]
http-response = [
  { action = "set-header", name = "X-Request-ID", value = "%[unique-id]" },
  { action = "del-header", name = "Server" },
]
"""
VARIANTS = {"no rules": "", "a handful of rules": RULES}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians are reported")
    parser.add_argument("--connections", type=int, default=50)
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed: apt-get install -y wrk")
    samples: dict[str, list[Sample]] = {label: [] for label in VARIANTS}
    processes = Processes()
    with tempfile.TemporaryDirectory() as tmp:
        try:
            origin_port = free_port()
            origin_process = processes.start(["taskset", "-c", LOAD_CORE, sys.executable,
                                              os.path.join(HERE, "accesslog_bench.py"), "--origin", str(origin_port)])
            wait_port(origin_port, origin_process)
            proxies = {}
            for label, rules in VARIANTS.items():
                port = free_port()
                path = os.path.join(tmp, f"{len(proxies)}.toml")
                with open(path, "w") as f:
                    f.write(CONFIG.format(origin=origin_port, port=port, rules=rules))
                command = ["taskset", "-c", PROXY_CORE, *twistd_command(), "-n", "--pidfile=", "--logfile",
                           os.path.join(tmp, f"{len(proxies)}.log"), "rubrisproxy", "--config", path]
                process = processes.start(command, env=python_path_env(ROOT), cwd=tmp)
                wait_port(port, process)
                proxies[label] = (process, port)
            print(f"proxies pinned to core {PROXY_CORE}, wrk and origin on core {LOAD_CORE}; {args.connections} "
                  f"keep-alive connections, {args.duration}s per run, {args.rounds} interleaved rounds")
            for _, port in proxies.values():
                run_wrk(port, "/", 10, 1)  # warm up
            for round_number in range(args.rounds):
                for label, (process, port) in proxies.items():
                    user, system = cpu_times(process.pid)
                    rps, _, total = run_wrk(port, "/", args.connections, args.duration)
                    user_after, system_after = cpu_times(process.pid)
                    sample = Sample(rps, (user_after - user + system_after - system) * 1e6 / max(total, 1))
                    samples[label].append(sample)
                    print(f"  round {round_number + 1} {label:20} {rps:9.0f} req/s {sample.cpu_us:7.1f} CPU us/req",
                          flush=True)
        finally:
            processes.stop_all()
    medians = {label: Sample(middle([s.rps for s in runs]), middle([s.cpu_us for s in runs]))
               for label, runs in samples.items()}
    print("\nmedians")
    for label, sample in medians.items():
        print(f"  {label:20} {sample.rps:9.0f} req/s {sample.cpu_us:7.1f} CPU us/req")
    on, off = medians["a handful of rules"], medians["no rules"]
    print(f"\nratio, rules / none (same run): {on.rps / off.rps:5.2f}x req/s, {on.cpu_us / off.cpu_us:5.2f}x CPU/req")


if __name__ == "__main__":
    main()

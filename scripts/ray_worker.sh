#!/usr/bin/env bash
# Start a worker node and join it to a qeu-tune Ray cluster (run on every worker machine).
#
#   QEU_RAY_HEAD_ADDRESS=HEAD_IP:6379 scripts/ray_worker.sh [extra `ray start` flags, e.g. --block]
#
# Settings (environment variables):
#   QEU_RAY_HEAD_ADDRESS   the head's GCS address, HEAD_IP:PORT (required; see scripts/ray_head.sh)
#   QEU_RAY_WORKER_CPUS    CPUs this node offers to trials (default: all cores). A trial takes
#                      1 CPU + 1 per remote env runner (algo.num_env_runners).
#   QEU_RAY_WORKER_IP      this node's address as the others reach it (default: Ray picks one)
#   QEU_RAY_WORKER_RESOURCES  custom resources as JSON, e.g. '{"big_memory": 1}'
# The worker needs the same Python environment as the head (same venv, qeu-tune installed);
# code that is not installed reaches it through a runtime_env (README: Run on a cluster).
#
# Several nodes on one machine (tests, trying it out): give each `--temp-dir DIR` of its own
# and free ports (--node-manager-port, --dashboard-agent-listen-port, ...); see
# tests/support/ray_cluster.py.
#
# Stop it with `ray stop` on this machine, or with Ctrl-C when started with --block.
set -euo pipefail
: "${QEU_RAY_HEAD_ADDRESS:?set QEU_RAY_HEAD_ADDRESS=HEAD_IP:PORT (GCS address of the head)}"
args=(--address="$QEU_RAY_HEAD_ADDRESS" --disable-usage-stats)
if [[ -n "${QEU_RAY_WORKER_CPUS:-}" ]]; then args+=(--num-cpus="$QEU_RAY_WORKER_CPUS"); fi
if [[ -n "${QEU_RAY_WORKER_IP:-}" ]]; then args+=(--node-ip-address="$QEU_RAY_WORKER_IP"); fi
if [[ -n "${QEU_RAY_WORKER_RESOURCES:-}" ]]; then args+=(--resources="$QEU_RAY_WORKER_RESOURCES"); fi
exec ray start "${args[@]}" "$@"

#!/usr/bin/env bash
# Start the head node of a Ray cluster for qeu-tune sweeps.
#
#   scripts/ray_head.sh [extra `ray start` flags, e.g. --block]
#
# The head runs the GCS, the dashboard (needed by `ray job submit`) and the sweep's driver;
# with --num-cpus 0 (the default here) no trial is scheduled on it, so trials run only on
# the workers (scripts/ray_worker.sh) and the driver keeps its CPU for Tune and MLflow.
#
# Settings (environment variables; Ray's defaults otherwise):
#   QEU_RAY_HEAD_IP          address the workers reach the head on   (default: Ray picks one)
#   QEU_RAY_HEAD_PORT        GCS port: workers join HEAD_IP:PORT     (default 6379)
#   QEU_RAY_HEAD_CPUS        CPUs for trials on the head             (default 0)
#   QEU_RAY_DASHBOARD_HOST   dashboard/job API bind address          (default 127.0.0.1: reach it
#                        from your machine with `ssh -L 8265:127.0.0.1:8265 head`)
#   QEU_RAY_DASHBOARD_PORT   dashboard and `ray job submit` port     (default 8265)
#   QEU_RAY_CLIENT_PORT      Ray Client server (ray://HEAD:PORT)     (default 10001)
# Open the GCS port, the node/object manager ports and the worker port range
# (10002-19999 by default) between the nodes only; never expose them to the internet.
#
# Stop it with `ray stop` on the head (stops every Ray process of this machine), or with
# Ctrl-C when started with --block.
set -euo pipefail
args=(--head
      --port="${QEU_RAY_HEAD_PORT:-6379}"
      --num-cpus="${QEU_RAY_HEAD_CPUS:-0}"
      --include-dashboard=true
      --dashboard-host="${QEU_RAY_DASHBOARD_HOST:-127.0.0.1}"
      --dashboard-port="${QEU_RAY_DASHBOARD_PORT:-8265}"
      --ray-client-server-port="${QEU_RAY_CLIENT_PORT:-10001}"
      --disable-usage-stats)
if [[ -n "${QEU_RAY_HEAD_IP:-}" ]]; then args+=(--node-ip-address="$QEU_RAY_HEAD_IP"); fi
exec ray start "${args[@]}" "$@"

#!/usr/bin/env bash
# `ray job submit` recipe: run evolve as a Ray job on a running cluster (launcher, KubeRay or
# hand-started) from your machine. The driver runs on the head; so do the store and results.
#
#   HEAD=localhost configs/cluster/submit.sh [extra evolve args, e.g. --set budget.max_hours=4]
#
# HEAD is where the head's dashboard (the job server, port 8265) answers from here. Ray binds
# it to the head's 127.0.0.1 unless started with --dashboard-host, so forward it first:
#   cluster launcher:  ray dashboard configs/cluster/ray-cluster.yaml &
#   KubeRay:           kubectl port-forward svc/<raycluster>-head-svc 8265:8265 &
# and use HEAD=localhost. (HEAD=<head ip> works only where the head was started with
# --dashboard-host=0.0.0.0 and port 8265 is reachable: the job API runs any code, so keep it
# behind the token and a firewall.)
#
# Needs on the cluster: Ray 2.52+ with token auth on every node, evolve's dependencies on
# every node (pip install -e . in the image), the API key in a file on the head only
# (KEY_FILE, default /home/ray/.anthropic_key, mode 600), persistent storage for results on
# the head (RESULTS, default /home/ray/results; the launcher's user is ubuntu: set both to
# /home/ubuntu/...). Experiments run under RESULTS/<run>/work on the GPU nodes: that path
# must be creatable there too (a home directory is).
# Needs here: `pip install "ray[default]>=2.52"` (the job CLI) and the cluster's token
# (RAY_AUTH_TOKEN_PATH, or ~/.ray/auth_token: `ray get-auth-token` on the head prints it).
set -euo pipefail
: "${HEAD:?set HEAD to where the head dashboard answers, e.g. localhost after port-forwarding}"
KEY_FILE=${KEY_FILE:-/home/ray/.anthropic_key}
RESULTS=${RESULTS:-/home/ray/results}
PORT=${PORT:-8265}
export RAY_AUTH_MODE=token
cd "$(dirname "$0")/../.."

# Extra evolve args, each quoted for the head's shell (values may hold spaces).
extra=""
if (($#)); then
  extra=$(printf ' %q' "$@")
fi

# --working-dir ships this checkout (engine + train_template) with the job: every node
# unpacks it at the same path, and workers check the template's hash against the driver's.
# The key is read from the head's file inside the entrypoint: never runtime_env env_vars,
# which every worker would inherit.
ray job submit --address "http://${HEAD}:${PORT}" --working-dir . \
  --runtime-env-json '{"excludes": [".venv", "results", ".git", "*.pdf", "*.png"]}' \
  -- bash -c "ANTHROPIC_API_KEY=\"\$(cat ${KEY_FILE})\" python -m evolve.run.cli run \
configs/cluster/run.yaml --address auto --set output.results_dir=${RESULTS}${extra}"

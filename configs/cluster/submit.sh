#!/usr/bin/env bash
# `ray job submit` recipe: run evolve as a Ray job on a running cluster (launcher, KubeRay or
# hand-started) from your machine. The driver runs on the head; so do the store and results.
#
#   HEAD=10.0.0.5 configs/cluster/submit.sh [extra evolve args, e.g. --set budget.max_hours=4]
#
# Needs on the cluster: evolve's dependencies installed on every node (pip install -e . in the
# image), the API key in a file on the head only (default /home/ray/.anthropic_key, mode 600),
# persistent storage for results on the head (default /home/ray/results).
# Needs here: the cluster's token (RAY_AUTH_TOKEN_PATH, or ~/.ray/auth_token: copy it from the
# head with `ray get-auth-token` run there).
set -euo pipefail
: "${HEAD:?set HEAD to the head node address}"
KEY_FILE=${KEY_FILE:-/home/ray/.anthropic_key}
RESULTS=${RESULTS:-/home/ray/results}
export RAY_AUTH_MODE=token
cd "$(dirname "$0")/../.."

# --working-dir ships this checkout (engine + train_template) with the job: every node
# unpacks it at the same path, and workers check the template's hash against the driver's.
# The key is read from the head's file inside the entrypoint: never runtime_env env_vars,
# which every worker would inherit.
ray job submit --address "http://${HEAD}:8265" --working-dir . \
  --runtime-env-json '{"excludes": [".venv", "results", ".git", "*.pdf", "*.png"]}' \
  -- bash -c "ANTHROPIC_API_KEY=\"\$(cat ${KEY_FILE})\" python -m evolve.cli run \
configs/cluster/run.yaml --address auto --set output.results_dir=${RESULTS} $*"

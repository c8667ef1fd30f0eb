#!/usr/bin/env bash
# One command from a fresh clone to the running demo: set up (tools/setup.sh),
# then start a local 4-replica cluster and drive traffic through it.
# Arguments go to the demo, e.g.: bash tools/demo.sh --replicas 7 --duration 10
set -uo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh || exit 1
exec node bin/nexres-rpc.mjs demo "$@"

#!/usr/bin/env bash
# Run the whole gateway on this machine: services, migrations, first platform key, every role.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bootstrap-env.sh
mailgw migrate
mailgw bootstrap   # prints the first platform key once; later runs say one exists
exec mailgw all

#!/usr/bin/env bash
# labs/locks/reset.sh: removes what the locks lab wrote (the lock's keys go
# by themselves when their leases expire).
. "$(dirname "$0")/../lib.sh"
require_cluster
ectl del /labs/locks/ --prefix

#!/usr/bin/env bash
# labs/consistency/reset.sh: removes what the consistency lab wrote.
. "$(dirname "$0")/../lib.sh"
require_cluster
ectl del /labs/consistency/ --prefix

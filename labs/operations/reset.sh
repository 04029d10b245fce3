#!/usr/bin/env bash
# labs/operations/reset.sh: removes the keys the operations lab wrote (a
# compaction cannot be undone, and the backup file is left where it is).
. "$(dirname "$0")/../lib.sh"
require_cluster
ectl del /labs/operations/ --prefix

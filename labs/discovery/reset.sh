#!/usr/bin/env bash
# labs/discovery/reset.sh: removes what the service-discovery lab created
# (the gateway's configuration under /apisix/, the registrations under
# /discovery/, the lab's marker keys) and revokes the lab's two leases, so the
# lab can be done again. A compaction cannot be undone, and need not be.
. "$(dirname "$0")/../lib.sh"
require_cluster
for marker in /lab/discovery/lease-a /lab/discovery/lease-b; do
    id=$(ectl get "$marker" --print-value-only 2>/dev/null)
    [ -n "$id" ] && ectl lease revoke "$id" >/dev/null 2>&1
done
ectl del --prefix /apisix/ >/dev/null
ectl del --prefix /discovery/ >/dev/null
ectl del --prefix /lab/discovery/ >/dev/null
echo "discovery lab reset: leases revoked; /apisix/, /discovery/ and /lab/discovery/ deleted"

#!/usr/bin/env bash
# labs/k8s/reset.sh: removes what the Kubernetes lab created (the pod
# objects under /registry/pods/ and the lab's marker keys), so the lab can be
# done again. Run it only against a lab cluster: on a real Kubernetes etcd,
# /registry/pods/ holds the cluster's pods.
. "$(dirname "$0")/../lib.sh"
require_cluster
ectl del --prefix /registry/pods/ >/dev/null
ectl del --prefix /lab/k8s/ >/dev/null
ectl del /registry/configmaps/default/huge >/dev/null
echo "k8s lab reset: /registry/pods/, /registry/configmaps/default/huge and /lab/k8s/ deleted"

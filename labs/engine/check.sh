#!/usr/bin/env bash
# labs/engine/check.sh: proves the engine lab's grader can fail and can pass.
# The skeleton in engines/src/student.rs (as committed) must fail grade.sh;
# a copy of the repository with labs/engine/solution.rs in its place must
# pass it. The copy shares the cargo target dir, so only the engines crate
# and its two test binaries are built again.
set -uo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# A fixed place, so cargo's fingerprints (and test binaries) are reused and
# replaced from one check to the next instead of piling up.
work=/tmp/metcd-engine-lab
rm -rf "$work/skeleton" "$work/solved"
mkdir -p "$work/skeleton" "$work/solved"
# The skeleton as committed (never the reader's work in progress).
git -C "$repo" archive HEAD | tar -x -C "$work/skeleton"
git -C "$repo" archive HEAD | tar -x -C "$work/solved"
cp "$repo/labs/engine/solution.rs" "$work/solved/engines/src/student.rs"
failed=0
if bash "$repo/labs/engine/grade.sh" "$work/skeleton" >"$work/skeleton.out" 2>&1; then
    echo "FAIL  engine: grade.sh passed the skeleton: it cannot fail"
    failed=1
fi
if ! bash "$repo/labs/engine/grade.sh" "$work/solved" >"$work/solved.out" 2>&1; then
    echo "FAIL  engine: grade.sh failed the reference solution:"
    grep FAIL "$work/solved.out" | head -n 5
    failed=1
fi
if [ $failed -eq 0 ]; then
    echo "ok    engine (the skeleton fails $(grep -c '^FAIL' "$work/skeleton.out") checks; the solution passes $(grep -c '^ok' "$work/solved.out"))"
fi
exit $failed

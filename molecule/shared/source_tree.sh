#!/bin/bash
# Prints the git tree id of the project's working tree as it is now: committed, staged, modified
# and untracked files alike (ignored ones excluded), so any edit gives another id. Molecule's
# converge records it on the hosts to know what they were converged from. Outside a git checkout
# it prints a value that never repeats, so the hosts are always converged.
set -euo pipefail
cd "$(dirname "$0")/../.."
if ! git rev-parse --git-dir >/dev/null 2>&1; then
    echo "not-a-git-checkout-$(date +%s%N)"
    exit 0
fi
index=$(mktemp)
trap 'rm -f "$index"' EXIT
cp "$(git rev-parse --git-path index)" "$index" 2>/dev/null || true
GIT_INDEX_FILE="$index" git add -A
GIT_INDEX_FILE="$index" git write-tree

#!/usr/bin/env bash
# Every C++ file of the repository as the repository's .clang-format writes it.
# Exits non-zero listing the files that are not (fix: clang-format -i FILE).
set -euo pipefail
cd "$(dirname "$0")/.."
files=()
while IFS= read -r f; do [[ -f "$f" ]] && files+=("$f"); done < <(git ls-files -co --exclude-standard '*.cpp' '*.h' '*.cu')
if ! clang-format --dry-run --Werror "${files[@]}" 2>/tmp/kinora-format.$$; then
  grep -oE '^[^:]+\.(cpp|h|cu):[0-9]+:[0-9]+: error' /tmp/kinora-format.$$ | cut -d: -f1 | sort -u |
    sed 's/^/not formatted: /' >&2
  rm -f /tmp/kinora-format.$$
  exit 1
fi
rm -f /tmp/kinora-format.$$
echo "check-format: ${#files[@]} files formatted"

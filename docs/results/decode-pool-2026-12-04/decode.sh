#!/bin/bash
# Side by side: before (/tmp/bin/ahr32c, dd8e086: the decode step called from the main thread) and
# after (/tmp/bin/ahr32d: bench decode's loop on a worker of the decode pool), seven rounds
# interleaved, 25 steps each, nothing else running. Then: scripts/decode-summary.py docs/results/decode-pool-2026-12-04
here=$(cd "$(dirname "$0")" && pwd)
"$here/../../../scripts/decode-side-by-side.sh" /tmp/bin/ahr32c /tmp/bin/ahr32d "$here"

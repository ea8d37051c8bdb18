#!/bin/bash
# Real-data resume check (issue 7): embed all real MoviePosters, kill -9 after ~1,500 rows, rerun, and
# compare the finished cache with an uninterrupted one (REF, e.g. the cache `make demo` built).
# Usage (repo root):  bash bench/killtest_real.sh cache/movieposters/mobilenetv2_100.h5 [WORKDIR]
set -u
REF=$(realpath "$1"); W=${2:-/tmp/killtest}; ROOT=$(pwd)
M=$ROOT/.venv/bin/mlhead; SHARED=${SHARED:-$ROOT/../shared}
rm -rf "$W"; mkdir -p "$W"; cd "$W"
ARGS="embed --dataset movieposters --data-dir $SHARED/data/movieposters --weights $SHARED/weights/mobilenetv2_100 --cache-dir $W/cache"
$M $ARGS > first.log 2>&1 &
PID=$!
P=$W/cache/movieposters/mobilenetv2_100.h5.partial/progress.json
c=0
while [ "$c" -lt 1500 ]; do
  sleep 2
  c=$(python3 -c "import json;print(sum(json.load(open('$P'))['consumed'].values()))" 2>/dev/null || echo 0)
done
sleep 0.7; kill -9 $PID; wait $PID 2>/dev/null
echo "killed at consumed=$c"
$M $ARGS > second.log 2>&1; echo "resume exit $?"; grep -o "resumed from .*" second.log
$ROOT/.venv/bin/python - "$W/cache/movieposters/mobilenetv2_100.h5" "$REF" <<'PY'
import sys, h5py, numpy as np
a, b = h5py.File(sys.argv[1]), h5py.File(sys.argv[2])
for s in ("train", "val", "test"):
    for k in ("embeddings", "labels", "ids"):
        print(s, k, "identical" if np.array_equal(a[s][k][...], b[s][k][...]) else "DIFFERENT")
print("fingerprint", "same" if a.attrs["fingerprint"] == b.attrs["fingerprint"] else "different")
PY

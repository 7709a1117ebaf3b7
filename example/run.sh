#!/usr/bin/env bash
# Run crop-cluster on the offline example (needs only `bash install.sh`; no network, no GPU).
#
#   bash example/run.sh            generate example/crops (first time only), cluster them into example/out
#   bash example/run.sh ARGS...    the same, with extra cluster.py options appended (e.g. -th 0.8)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

python=.venv/bin/python
if [ ! -x "$python" ]; then
    echo "example/run.sh: $python not found; run 'bash install.sh' in $(pwd) first" >&2
    exit 2
fi

if [ ! -d example/crops ] || [ ! -f example/labels.csv ]; then
    "$python" example/make_example.py --out example/crops --labels example/labels.csv
fi

"$python" cluster.py -i example/crops -o example/out -e lite0 --labels example/labels.csv -gs "$@"

echo
echo "example/run.sh: outputs in $(pwd)/example/out"
echo "  clusters.csv   one row per readable crop: cluster, individual, similarity to the cluster centre"
echo "  skipped.csv    the corrupt example/crops/broken.jpg and why it was skipped"
echo "  metrics.json   agreement with example/labels.csv (adjusted Rand index, pairwise precision/recall)"
echo "  run.json       parameters (threshold chosen for lite0), versions, counts, timings"
echo "  clusters/      one folder of copies per cluster, plus not-clustered/"

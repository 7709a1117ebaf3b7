#!/usr/bin/env python3
"""crop-cluster's command line from a checkout: `python cluster.py -i CROPS -o OUT [options]`.

The same as the installed console script `crop-cluster`: the parser, the options and `main` live in
crop_cluster/cli.py (the package is importable once `bash install.sh` has run); the run itself is
crop_cluster/pipeline.py.
"""
import sys

try:
    from crop_cluster.cli import main
except ImportError as error:  # not installed: say how, instead of a traceback
    sys.exit(f"cluster.py: cannot import crop_cluster ({error}); run 'bash install.sh' in this folder, then "
             f"'.venv/bin/python cluster.py ...' (or '.venv/bin/crop-cluster ...')")

if __name__ == "__main__":
    sys.exit(main())

import sys

from sim.cli import main

raise SystemExit(main(sys.argv[1:]))

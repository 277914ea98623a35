import sys

from gateway.sim.cli import main

raise SystemExit(main(sys.argv[1:]))

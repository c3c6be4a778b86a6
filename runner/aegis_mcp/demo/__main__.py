"""Entry point: ``python -m aegis_mcp.demo``."""

import sys

from aegis_mcp.demo.app import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

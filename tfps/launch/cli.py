"""The `tfps-launch` command line (placeholder until the launcher lands)."""

import sys


def main(argv=None) -> int:
    print("usage: tfps-launch [options] SCRIPT [SCRIPT_ARGS...] (launcher not built yet)",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())

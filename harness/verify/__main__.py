"""``python -m harness.verify --input cases.jsonl --output out.jsonl`` (see :func:`harness.verify.cli_main`)."""

import sys

from harness.verify.cli import cli_main

if __name__ == "__main__":
    sys.exit(cli_main(sys.argv[1:]))

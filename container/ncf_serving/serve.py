"""The ``serve`` console script (SageMaker runs ``docker run IMAGE serve``), also ``python -m ncf_serving.serve``.

Same flags as ``python -m ncf_serving serve``: ``--model-dir``, ``--port``, ``--host``.
"""

import sys

from ncf_serving.cli import main as cli_main


def main(argv: list[str] | None = None) -> int:
    return cli_main(["serve", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())

"""``python -m ncf_serving serve|disable-dlr-phone-home`` (see :mod:`ncf_serving.cli`)."""

import sys

from ncf_serving.cli import main

sys.exit(main())

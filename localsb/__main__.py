"""``python -m localsb``: the same as the ``localsb`` command."""
import sys

from localsb.cli.main import main

sys.exit(main())

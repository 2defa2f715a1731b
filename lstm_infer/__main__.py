"""``python -m lstm_infer ...`` is the ``lstm-infer`` command."""
import sys

from .cli import main

sys.exit(main())

"""``python -m chatlane``: the command line."""

from chatlane.cli import main

raise SystemExit(main())

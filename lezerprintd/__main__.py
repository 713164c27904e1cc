"""`python -m lezerprintd` is the same as the `lezerprintd` command."""

from lezerprintd.cli import main

raise SystemExit(main())

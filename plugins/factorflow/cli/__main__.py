"""``python -m factorflow.cli``: the ``factorflow`` command."""

from factorflow.cli.main import main

raise SystemExit(main())

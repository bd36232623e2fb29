"""``python -m rmsprop`` is the ``rmsprop`` command."""

from rmsprop.cli.main import main

raise SystemExit(main())

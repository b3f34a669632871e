"""`python -m unetkit` is the `unetkit` command (torchrun needs the module form)."""

from unetkit.cli import main

raise SystemExit(main())

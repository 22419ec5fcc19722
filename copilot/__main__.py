"""`python -m copilot`: the same entry point as the `copilot` console script."""

from copilot.cli import main

raise SystemExit(main())

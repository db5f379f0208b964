"""Allow ``python -m signaling`` as an alias of the ``switchboard`` console script."""

from signaling.cli import main

raise SystemExit(main())

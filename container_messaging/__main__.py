"""``python -m container_messaging`` runs the command line (see :mod:`container_messaging.cli`)."""

from container_messaging.cli import main

raise SystemExit(main())

"""``python -m fakemeta``: serve the fake Graph API configured by ``FAKEMETA_*`` variables."""

from fakemeta.server import main

raise SystemExit(main())

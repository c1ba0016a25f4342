import sys

from pixelrelay.cli import main

sys.exit(main())

import sys

from ksmith.cli import main

sys.exit(main())

import sys

from prngd.cli import main

sys.exit(main())

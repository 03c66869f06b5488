import sys

from drillui.cli import main

sys.exit(main())

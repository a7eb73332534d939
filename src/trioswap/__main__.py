import sys

from trioswap.cli import main

sys.exit(main())

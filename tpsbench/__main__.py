import sys

from tpsbench.cli import main

sys.exit(main())

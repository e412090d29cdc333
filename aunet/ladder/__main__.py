import sys

from aunet.ladder.cli import main

sys.exit(main())

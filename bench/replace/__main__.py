import sys

from bench.replace.main import main

sys.exit(main())

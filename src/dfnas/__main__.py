"""`python -m dfnas ...` (and `torchrun ... -m dfnas ...`): the same CLI as `dfnas`."""

import sys

from dfnas.cli import main

sys.exit(main())

import sys

from hdh_migration.cli import main

sys.exit(main())

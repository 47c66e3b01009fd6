import sys

from hdh_migration.cli import main

if __name__ == "__main__":
    sys.exit(main())

import sys

from tunisian_lung.cli import main

sys.exit(main())

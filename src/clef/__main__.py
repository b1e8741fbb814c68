from clef.cli import main

raise SystemExit(main())

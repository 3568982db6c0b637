from medlite.cli import main

raise SystemExit(main())

from conferprint.cli import main

raise SystemExit(main())

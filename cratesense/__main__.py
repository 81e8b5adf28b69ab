from cratesense.cli import main

raise SystemExit(main())

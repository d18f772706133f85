from upsell_triggers.cli import main

raise SystemExit(main())

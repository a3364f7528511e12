from phonemfa.cli import main

raise SystemExit(main())

"""One module per command; each ``main()`` returns an exit code."""

"""One module per CLI command: the only layer that parses argv and talks to the user."""

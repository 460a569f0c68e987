"""The `coyo-db` command line: thin typer commands over the library."""

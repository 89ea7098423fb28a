"""Not a package to install: makes `python -m docs.scripts.<name>` work from the repository root."""

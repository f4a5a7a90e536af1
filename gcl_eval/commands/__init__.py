"""CLI commands, one module per command group; each parses options and calls one library function."""

"""`bench` subcommands, one file each; ``cli.py`` at the repository root assembles them."""

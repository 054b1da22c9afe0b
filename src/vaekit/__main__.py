from vaekit.cli import entry

entry()

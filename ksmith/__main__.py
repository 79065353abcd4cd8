from ksmith.cli import run

run()

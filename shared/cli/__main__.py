from shared.cli.main import run

run()

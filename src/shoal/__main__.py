from shoal.cli.main import app

app(prog_name="shoal")

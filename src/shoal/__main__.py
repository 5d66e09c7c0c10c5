import faulthandler
import signal

from shoal.cli.main import app

# `kill -USR1 <pid>` prints every thread's stack to stderr: a cheap way to see what a busy server is doing.
faulthandler.register(signal.SIGUSR1)
app(prog_name="shoal")

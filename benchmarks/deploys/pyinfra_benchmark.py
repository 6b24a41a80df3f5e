"""The four operations of pyinfra's own published benchmark (charted on pyinfra's Performance
page; github.com/Fizzadar/pyinfra-performance): a user, a file it owns, an upload and a shell
command. benchmarks/fleet.py runs it on its hosts to check its model against pyinfra's 100-host
figure."""

from io import StringIO

from pyinfra.operations import files, server

server.user(name="A user", user="pyinfra", home="/home/pyinfra", shell="/bin/bash")
files.file(name="A file the user owns", path="/var/log/pyinfra.log", user="pyinfra", mode="777")
files.put(
    name="An upload",
    src=StringIO("pyinfra's benchmark\n"),
    dest="/home/pyinfra/test_file.txt",
    user="pyinfra",
)
server.shell(name="A shell command", commands=["echo hi"])

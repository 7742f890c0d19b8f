"""`ratelimitd simulate`: replay traffic against a config to see what its limits do before
deploying it.

`traffic` reads the requests (a traffic file or synthetic patterns), `replay` decides them on
a virtual clock into a Report, `report` prints it as a table or JSON, `plot` draws it (with
the time bins of `bins`; needs matplotlib), and `command` is the command line over them.
"""

from ratelimitd.tools.simulate.command import add_arguments, run

__all__ = ["add_arguments", "run"]

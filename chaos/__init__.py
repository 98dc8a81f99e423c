"""The chaos suite: reliability scenarios against real servers and real `taskq worker` and
`taskq beat` processes, run with `python -m chaos` (`make chaos`).

Each scenario starts what it needs (tests/servers.py's throwaway Redis and RabbitMQ on
loopback, worker and beat subprocesses), does something unkind to it (SIGKILL, a server
restart, garbage in the broker's own storage), then accounts for every task it submitted and
prints a table of figures. docs/reliability.md has the guarantees and the latest figures.
"""

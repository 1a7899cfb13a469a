"""The local stack behind tools/devstack.py (the entry point): one module per thing it runs.

    common     the stop flag, logging, bootstrap steps' subprocesses, secret files
    bootstrap  the state folder and secret key, then whatever else the environment leaves unset
    postgres   the project-local PostgreSQL cluster (Unix socket only)
    hsm        the SoftHSM2 token, or the software key provider when there is none
    processes  web + worker + beat as child process groups

Standard library only, like the entry point: it runs before (and without) the virtualenv's
packages.
"""

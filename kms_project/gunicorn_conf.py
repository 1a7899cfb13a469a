"""gunicorn settings for KCM's web processes; every launcher uses them (`make run`, docker, the
end-to-end tests and benchmarks): ``gunicorn -c python:kms_project.gunicorn_conf``.

Threaded workers (gthread). A cryptographic request waits for PostgreSQL to make its audit
event durable (one WAL flush) before it answers; with threads, the process serves other
requests meanwhile, and PostgreSQL flushes the concurrent commits together. What KCM keeps per
process is safe under threads: the key cache and kill switch take a lock, every HSM call goes
through the provider's process-wide lock, each thread has its own database connection, and the
audit context is a context variable. Threads also keep HTTP connections alive between requests.

    KCM_WEB_WORKERS   processes (default 2)
    KCM_WEB_THREADS   threads per process (default 4)
"""

from kms_project.env import env_int

wsgi_app = "kms_project.wsgi:application"
workers = env_int("KCM_WEB_WORKERS", 2, minimum=1)
worker_class = "gthread"
threads = env_int("KCM_WEB_THREADS", 4, minimum=1)
# Never preload: PKCS#11 must be initialised in each worker, after the fork (HSM-NOTES).
preload_app = False
accesslog = "-"
# gunicorn's default control socket path is one per user, shared by every server running.
control_socket_disable = True

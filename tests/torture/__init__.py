"""Crash-safety torture: crash-point enumeration and SIGKILL trials.

Modules
-------
crashpoint_job
    The jobs (an append, a checkpoint commit, a compaction, a retention pass),
    the counter that ends a child process at its k-th mutating store call, the
    fork server that runs those children, and the enumeration driver.
kill
    SIGKILL trials at random moments across real appender processes and real
    ``streamkit run`` processes, each compared with an uninterrupted run.
__main__
    ``python -m tests.torture --kill-trials 200 --backends local,s3 --seed 1``
    (and ``--wire-trials N --rates 0.1,0.3``, delegated to ``tests.wire.torture``):
    what ``make torture`` runs.
test_crashpoints
    The default-suite share: every crash point of the small jobs on a local
    disk, a sample on S3, and a handful of SIGKILL trials.
"""

# Names vulture cannot see used: what doit, pytest, jinja, the standard
# library or a generic reader reaches by name or by value.  scripts/lint
# passes this file to vulture next to the code.

# doit: DOIT_CONFIG and the task_* creators are found by name (task_* is in
# scripts/lint's --ignore-names); a reporter's class attribute.
_.DOIT_CONFIG
_.desc

# StrEnum members looked up by value from config.toml (Kind("redis")), never
# spelled in code; run.Exit.OK is the documented exit status 0.
_.REDIS
_.WEBDAV
_.RSA4096
_.CUDNN
_.NCCL
_.CUTLASS
_.MEMORY
_.COMPILER
_.CACHE
_.OK

# Record fields, written and read by the generic record schema
# (dataclasses.fields / asdict), never by attribute.
_.cargo_fresh
_.duration_s
_.payload_compressor
_.payload_flags
_.checked_at
_.driver_from_host
_.schema

# Attributes the standard library and other libraries read.
_.uname  # tarfile.TarInfo
_.gname  # tarfile.TarInfo
_.close_connection  # http.server.BaseHTTPRequestHandler
_.trust_env  # requests.Session

# pytest: a hook's arguments are matched by name (pytest_runtest_makereport's call).
call
_.longrepr  # a test report's, read by pytest

# Task actions named by string in buildlib/tasks (context.lazy imports them
# when the action runs; tests/test_architecture.py imports every one).
_.write_matrix
_.gate_flavour
_.clean_cache
_.__qualname__

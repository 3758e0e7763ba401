"""mistralrs-rpm: the pipeline, in order.  `doit list` describes every task.

The work lives in buildlib/; each stage's task creators are in
buildlib/tasks/.  MRPM_CONFIG selects the configuration (default
config.toml), MRPM_REF overrides the ref to build.
"""

from buildlib.tasks import context
from buildlib.tasks.build import task_build, task_doctor, task_fetch, task_verify  # noqa: F401
from buildlib.tasks.licenses import task_licenses  # noqa: F401
from buildlib.tasks.package import task_rebuild_check, task_rpm, task_spec  # noqa: F401
from buildlib.tasks.publish import task_publish  # noqa: F401
from buildlib.tasks.gate import task_gate, task_promote  # noqa: F401
from buildlib.tasks.poll import task_matrix, task_poll  # noqa: F401
from buildlib.tasks.cache import task_clean_cache  # noqa: F401
from buildlib.tasks.setup import task_release_package, task_setup  # noqa: F401
from buildlib.tasks.workflows import task_workflows  # noqa: F401

DOIT_CONFIG = {
    # `doit` alone builds every flavour's RPM; publish, poll and setup are asked for by name
    "default_tasks": ["fetch", "build", "verify", "licenses", "spec", "rpm"],
    **context.doit_config(),
}

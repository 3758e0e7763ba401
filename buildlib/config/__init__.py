"""config.toml -> frozen dataclasses, with every check in one place.

Nothing else in the project reads the raw TOML.  Each setting is declared
once (:mod:`.model`, :mod:`.host`, :mod:`.bundled`): key, type, default,
form and help; :mod:`.schema` reads, checks and documents them all alike,
:mod:`.loader` reads the file and checks what spans keys, and
:mod:`.readme` renders the README's configuration table.  Every error names
the key, the value found and the form expected, and an unknown key names
the nearest known one.
"""

from pathlib import PurePosixPath  # noqa: F401  (tests build targets with it)

from ..run import UserError  # noqa: F401
from .bundled import BundledComponent, BundledConfig, CrateLicense, Evidence, parse_bundled  # noqa: F401
from .host import DEFAULT_UPLOAD_USER, TOKEN_ENV, Host  # noqa: F401
from .loader import (CONFIG_ENV, MAX_CONFIG_BYTES, REF_ENV, REQUIRED_CHANNELS, STABLE, UNSTABLE,  # noqa: F401
                     Config, default_path, load, parse, read_config_text)
from .kinds import CacheBackend, ChannelName, DoctorCheck, Gate, KeyType, RebuildCheck, Smoke  # noqa: F401
from .model import (Build, BuildCache, Channel, Doctor, Flavour, Package, Paths, Poll, Program, Publish,  # noqa: F401
                    Upstream, package_name)
from .targets import LocalTarget, SshTarget, Target, format_duration, parse_duration, parse_target  # noqa: F401
from .patterns import (COMPONENT_COMMIT, COMPONENT_NAME, COMPONENT_URL, COMPONENT_VERSION, CRATE_NAME,  # noqa: F401
                       FEATURE_NAME, FLAVOUR_NAME, PACKAGE_NAME, PAYLOAD, PLAIN_PATH, SEMVER, URL)
from .schema import ConfigError  # noqa: F401

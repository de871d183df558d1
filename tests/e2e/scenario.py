"""The shared plugin configurations and tokens live in `harness.scenario` (the soak test uses
them too); test modules keep reading them as `import scenario`."""
from harness.scenario import *  # noqa: F401,F403
